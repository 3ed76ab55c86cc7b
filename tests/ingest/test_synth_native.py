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


def test_an_export_with_identifiers_is_pseudonymised_and_names_never_stored(
    tmp_path: Path,
) -> None:
    import pandas as pd

    from ccdp.ingest.native import read_native_folder
    from ccdp.ingest.pipeline import ingest_frames
    from ccdp.ingest.pseudonym import pseudonym
    from ccdp.store.config import pseudonym_key

    result = generate(tmp_path / "synth", "FR", patients=400, seed=3, with_identifiers=True)
    folder = tmp_path / "synth" / "FR"
    identifiers = pd.read_csv(folder / "identifiers.csv", dtype=str)
    store = tmp_path / "node.duckdb"
    report = ingest_native(store, folder, progress=False)
    assert report.pseudonymised and report.quarantined == 0
    key = pseudonym_key(store, create=False)
    with NodeStore(store, read_only=True) as s:
        patient_ids = set(s.read("patient")["patient_id"])
        assert patient_ids == {pseudonym(key, p) for p in identifiers["patient_id"]}
        assert set(s.read("tumour")["patient_id"]) <= patient_ids
        text = " ".join(
            s.read(t).astype(str).to_csv(index=False) for t in s.tables() if t != "ingest_log"
        )
    for column in ("family_name", "national_id"):
        assert not any(v in text for v in identifiers[column].head(50))
    assert "FR-P0" not in text
    # the frame path (identifiers joined as _identifier_* columns) gives the same pseudonyms
    frames = read_native_folder(folder)
    assert "_identifier_family_name" in frames["patient"].columns
    other = tmp_path / "other.duckdb"
    (tmp_path / "other.node.yaml").write_text(f"pseudonym_key: {key.hex()}\n", encoding="utf-8")
    again = ingest_frames(other, frames, "FR", progress=False)
    assert again.tables == report.tables
    with NodeStore(other, read_only=True) as s:
        assert set(s.read("patient")["patient_id"]) == patient_ids
    assert result.rows["FR"]["patient"] == len(patient_ids)
