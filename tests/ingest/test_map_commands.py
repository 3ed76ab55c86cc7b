"""`ccdp map suggest` / `ccdp map check` as a user runs them."""

from __future__ import annotations

from pathlib import Path

from tests.ingest.test_suggest import PATIENTS, TUMOURS


def test_suggest_then_check(tmp_path: Path, ccdp) -> None:
    site = tmp_path / "FR"
    site.mkdir()
    (site / "patients.csv").write_bytes(PATIENTS.encode("latin-1"))
    (site / "tumeurs.csv").write_text(TUMOURS)
    out = tmp_path / "map.yaml"
    proc = ccdp("map", "suggest", site, "--output", out)
    assert "wrote" in proc.stdout and out.exists()
    proc = ccdp("map", "check", out, site)
    assert "patient: 4 rows" in proc.stdout and "tumour: 3 rows" in proc.stdout


def test_bad_mapping_is_one_clear_error(tmp_path: Path, ccdp) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nsources: {}\ntables:\n  patient:\n    sorce: x\n")
    proc = ccdp("map", "check", bad, check=False)
    assert proc.returncode == 2
    assert "line 5" in proc.stderr and "did you mean 'source'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_compare_counts_fields_fed_from_the_same_place(tmp_path: Path, ccdp) -> None:
    site = tmp_path / "FR"
    site.mkdir()
    (site / "patients.csv").write_bytes(PATIENTS.encode("latin-1"))
    (site / "tumeurs.csv").write_text(TUMOURS)
    draft = tmp_path / "draft.yaml"
    ccdp("map", "suggest", site, "--output", draft)
    reference = tmp_path / "ref.yaml"
    text = draft.read_text().replace("birth_date: date_naissance", "birth_date: nir")
    reference.write_text(text)
    proc = ccdp("map", "compare", draft, reference)
    assert "patient: 5/6" in proc.stdout and "tumour: 5/5" in proc.stdout
    assert "total: 10/11 = 90.9%" in proc.stdout
