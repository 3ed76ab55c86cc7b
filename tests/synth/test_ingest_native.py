"""Native synthetic output ingests into a real node store with nothing quarantined or flagged."""

from __future__ import annotations

from pathlib import Path

import duckdb

from ccdp.ingest.pipeline import ingest_native
from ccdp.synth import generate


def test_native_output_ingests_with_zero_quarantined_rows(tmp_path: Path) -> None:
    result = generate(tmp_path / "out", countries="FR,DE,IT,PL,BR,KE", patients=6000, seed=5)
    for country in result.countries:
        store = tmp_path / f"{country}.duckdb"
        report = ingest_native(store, tmp_path / "out" / country, progress=False)
        assert report.quarantined == 0, report.summary()
        assert report.flagged == 0, report.summary()
        assert report.accepted == sum(result.rows[country].values())
        with duckdb.connect(str(store), read_only=True) as con:
            n = con.execute("select count(*) from patient").fetchall()[0][0]
            groups = con.execute("select count(distinct iccc_group) from tumour").fetchall()[0][0]
        assert n == result.rows[country]["patient"]
        assert groups == 12
