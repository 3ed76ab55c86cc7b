"""Native output: loads into the data model without a single violation, and is reproducible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from ccdp.model import load_model
from ccdp.synth import generate
from ccdp.synth.params import SynthError
from tests.synth.model_check import check_folder

COUNTRIES = ["FR", "DE", "IT", "PL", "BR", "KE"]


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("native")
    generate(out, countries=COUNTRIES, patients=12000, seed=7)
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("country", COUNTRIES)
def test_every_native_row_satisfies_the_model(native: Path, country: str) -> None:
    assert check_folder(native / country) == []


def test_layout_and_columns_follow_the_model(native: Path) -> None:
    model = load_model()
    for country in COUNTRIES:
        names = {p.stem for p in (native / country).glob("*.csv")}
        assert names == set(model.table_names)
        header = (native / country / "tumour.csv").read_text().splitlines()[0].split(",")
        assert header == [f.name for f in model.table("tumour").input_fields]
    assert (native / "truth.json").exists()


def test_ids_are_unique_across_countries(native: Path) -> None:
    for table, key in (("patient", "patient_id"), ("tumour", "tumour_id"), ("event", "event_id")):
        ids = pd.concat(
            pd.read_csv(native / c / f"{table}.csv", dtype=str, usecols=[key])[key]
            for c in COUNTRIES
        )
        assert ids.is_unique
        assert ids.str.match(r"^[A-Z]{2}-[A-Z]\d{6,}$").all()


def test_cases_are_consistent_with_population(native: Path) -> None:
    truth = json.loads((native / "truth.json").read_text())
    total = sum(v["patients"] for v in truth["countries"].values())
    copies = len(truth["cross_border_copy_ids"])
    # --patients 12000 gives exactly 12000 patient rows, cross-border copies included
    assert total == 12000 and 0 < copies < total
    pop = pd.read_csv(native / "KE" / "population.csv")
    assert list(pop.columns) == ["country", "year", "sex", "age_group", "population"]
    share = pop.groupby("age_group").population.sum() / pop.population.sum()
    fr = pd.read_csv(native / "FR" / "population.csv")
    fr_share = fr.groupby("age_group").population.sum() / fr.population.sum()
    assert share["1-4"] > fr_share["1-4"] and share["15-19"] < fr_share["15-19"]


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", countries="FR,KE", patients=1500, seed=3)
    b = generate(tmp_path / "b", countries="FR,KE", patients=1500, seed=3)
    c = generate(tmp_path / "c", countries="FR,KE", patients=1500, seed=4)
    assert _digest(a.out_dir) == _digest(b.out_dir)
    assert _digest(a.out_dir) != _digest(c.out_dir)


def test_cli_writes_native_folders_and_truth(ccdp, tmp_path: Path) -> None:
    proc = ccdp(
        "synth", tmp_path / "out", "--countries", "FR,DE,KE", "--seed", "1", "--patients", "2000"
    )
    assert "patients in" in proc.stdout
    for c in ("FR", "DE", "KE"):
        assert check_folder(tmp_path / "out" / c) == []
    truth = json.loads((tmp_path / "out" / "truth.json").read_text())
    assert set(truth["countries"]) == {"FR", "DE", "KE"}
    assert truth["survival"]["income_level_by_country"] == {"FR": "HIC", "DE": "HIC", "KE": "LMIC"}


def test_bad_requests_name_the_problem(ccdp, tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="unknown country 'XX'"):
        generate(tmp_path, countries="FR,XX")
    proc = ccdp("synth", tmp_path / "o", "--years", "2019-2005", check=False)
    assert proc.returncode == 2 and "first year is after the last" in proc.stderr


def test_a_new_draw_replaces_the_earlier_one_and_nothing_else(tmp_path: Path) -> None:
    """Stale country folders or files of the other format would be ingested as if current."""
    out = tmp_path / "out"
    generate(out, countries="FR,DE", patients=400, seed=1)
    generate(out, countries="FR", patients=300, seed=1, format="messy")
    assert sorted(p.name for p in out.iterdir()) == ["FR", "truth.json"]
    assert not (out / "FR" / "patient.csv").exists() and (out / "FR" / "patients.csv").exists()
    assert list(json.loads((out / "truth.json").read_text())["countries"]) == ["FR"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match="not empty and holds no earlier ccdp synth output"):
        generate(other, countries="FR", patients=100, seed=1)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
