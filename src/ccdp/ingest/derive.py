"""Derived fields computed at ingest: the ICCC-3 classification of each tumour.

Classification runs once per distinct (morphology, topography, behaviour) combination, never per
row (ccdp.terminology.iccc is vectorised), and the answers are joined back in SQL. Invalid codes
get no classification here: the code edits quarantine those rows.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from ccdp.store.typed import q
from ccdp.terminology.iccc import classify

ICCC_FIELDS = ("iccc_group", "iccc_subgroup", "iccc_extended", "iccc_recode")
ICCC_TABLE = "iccc_lookup"


def build_iccc_lookup(con: duckdb.DuckDBPyConnection, work: str) -> bool:
    """Create temp table `iccc_lookup` classifying every distinct code triple of `work`."""
    combos = con.execute(
        f"SELECT DISTINCT morphology, topography, behaviour FROM {q(work)} "
        "WHERE morphology IS NOT NULL AND topography IS NOT NULL AND behaviour IS NOT NULL"
    ).df()
    result = classify(combos["morphology"], combos["topography"], combos["behaviour"])
    lookup = pd.concat(
        [combos.reset_index(drop=True), result[list(ICCC_FIELDS)].reset_index(drop=True)], axis=1
    )
    lookup["behaviour"] = lookup["behaviour"].astype("int32")
    con.register("iccc_answers", lookup)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ICCC_TABLE} AS SELECT * FROM iccc_answers")
    finally:
        con.unregister("iccc_answers")
    return True
