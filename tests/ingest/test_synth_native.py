"""Synthetic native exports (ccdp synth) ingest whole: no quarantined row, no lost row."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccdp.ingest.pipeline import ingest_native
from ccdp.store import NodeStore
from ccdp.synth.generate import generate


@pytest.mark.parametrize("seed", [1, 7])
def test_synthetic_native_exports_ingest_with_zero_quarantined(tmp_path: Path, seed: int) -> None:
    result = generate(tmp_path / "synth", "FR,DE", patients=3000, seed=seed)
    store = tmp_path / "node.duckdb"
    for code in result.countries:
        report = ingest_native(store, tmp_path / "synth" / code, progress=False)
        problems = {k: v for k, v in report.edits.items() if k != "tumour.age_histology"}
        assert report.quarantined == 0, problems
        for table, counts in report.tables.items():
            assert counts.rows_read == result.rows[code][table]
    with NodeStore(store, read_only=True) as s:
        for table in result.rows[result.countries[0]]:
            assert s.count(table) == sum(result.rows[c][table] for c in result.countries)
        assert s.count("quarantine") == 0
        # every tumour classified by ICCC-3 at ingest
        unclassified = s.con.execute(
            "SELECT count(*) FROM tumour WHERE iccc_group IS NULL"
        ).fetchall()[0][0]
        assert unclassified == 0
