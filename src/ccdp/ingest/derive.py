"""Derived fields computed at ingest: the ICCC-3 classification of each tumour.

Classification runs once per distinct (morphology, topography, behaviour) combination, never per
row, and the answers are joined back in SQL. Until ccdp.terminology.iccc is available the derived
columns stay empty.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import duckdb

from ccdp.ingest.typed import q

ICCC_FIELDS = ("iccc_group", "iccc_subgroup", "iccc_extended", "iccc_recode")
ICCC_TABLE = "iccc_lookup"


def _classifier() -> Callable[..., Any] | None:
    try:
        module = importlib.import_module("ccdp.terminology.iccc")
    except ImportError:
        return None
    fn = getattr(module, "classify", None)
    return fn if callable(fn) else None


def _answer(result: Any, name: str) -> str | None:
    """Read one ICCC field from a classification result (object or mapping)."""
    short = name.removeprefix("iccc_")
    for key in (name, short):
        value = result.get(key) if isinstance(result, dict) else getattr(result, key, None)
        if value is not None:
            return str(value)
    return None


def build_iccc_lookup(con: duckdb.DuckDBPyConnection, work: str) -> bool:
    """Create temp table `iccc_lookup` for the tumours of `work`; False if no classifier yet."""
    classify = _classifier()
    if classify is None:
        return False
    combos = con.execute(
        f"SELECT DISTINCT morphology, topography, behaviour FROM {q(work)} "
        "WHERE morphology IS NOT NULL AND topography IS NOT NULL AND behaviour IS NOT NULL"
    ).fetchall()
    rows = []
    for morphology, topography, behaviour in combos:
        try:
            result = classify(morphology, topography, behaviour)
        except Exception:  # an unclassifiable code is reported by the code edits, not here
            continue
        rows.append((morphology, topography, behaviour, *(_answer(result, f) for f in ICCC_FIELDS)))
    cols = ", ".join(f"{f} VARCHAR" for f in ICCC_FIELDS)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {ICCC_TABLE} (morphology VARCHAR, topography VARCHAR, "
        f"behaviour INTEGER, {cols})"
    )
    if rows:
        con.executemany(f"INSERT INTO {ICCC_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return True
