"""--with-identifiers: plausible names, national ids with valid check digits, and cross-border
copies whose listed differences are exactly how the two records differ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccdp.synth import generate
from ccdp.synth.identifiers import cf_check, kvnr, name_lists
from tests.synth.model_check import check_folder

COUNTRIES = ["FR", "DE", "IT", "PL", "BR", "KE"]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ids")
    generate(folder, countries=COUNTRIES, patients=30000, seed=21, with_identifiers=True)
    return folder


def _ids(out: Path, code: str) -> pd.DataFrame:
    return pd.read_csv(out / code / "identifiers.csv", dtype=str, keep_default_na=False)


def _digits(s: pd.Series, n: int) -> np.ndarray:
    return np.array([[int(c) for c in x] for x in s]).reshape(len(s), n)


def test_identifiers_file_matches_patients_and_the_model_still_holds(out: Path) -> None:
    for code in COUNTRIES:
        ids = _ids(out, code)
        pat = pd.read_csv(out / code / "patient.csv", dtype=str, keep_default_na=False)
        assert list(ids.columns) == ["patient_id", "given_name", "family_name", "birth_date",
                                     "sex", "national_id", "national_id_type"]  # fmt: skip
        assert ids.patient_id.tolist() == pat.patient_id.tolist()
        assert ids.birth_date.tolist() == pat.birth_date.tolist()
        assert (ids.given_name != "").all() and (ids.family_name != "").all()
        assert check_folder(out / code) == []


def test_given_names_follow_sex_and_locale(out: Path) -> None:
    ids = _ids(out, "PL")
    girls = set(name_lists("pl_PL")["given_female"][0])
    assert ids[ids.sex == "female"].given_name.isin(girls).mean() > 0.99
    fam = ids[ids.sex == "female"].family_name
    assert not fam.str.endswith("ski").any()  # Polish surnames agree with sex


def test_national_ids_carry_valid_check_digits(out: Path) -> None:
    pl = _ids(out, "PL")
    pl = pl[pl.national_id != ""]
    d = _digits(pl.national_id, 11)
    w = np.array([1, 3, 7, 9, 1, 3, 7, 9, 1, 3])
    assert ((10 - (d[:, :10] * w).sum(axis=1) % 10) % 10 == d[:, 10]).all()
    assert (pl.national_id.str[9].astype(int) % 2 == (pl.sex == "male").astype(int)).all()
    br = _ids(out, "BR")
    br = br[br.national_id != ""]
    assert br.national_id.str.fullmatch(r"\d{3}\.\d{3}\.\d{3}-\d{2}").all()
    d = _digits(br.national_id.str.replace(r"\D", "", regex=True), 11)
    d10 = (d[:, :9] * np.arange(10, 1, -1)).sum(axis=1) * 10 % 11 % 10
    d11 = (d[:, :10] * np.arange(11, 1, -1)).sum(axis=1) * 10 % 11 % 10
    assert (d10 == d[:, 9]).all() and (d11 == d[:, 10]).all()
    fr = _ids(out, "FR")
    fr = fr[fr.national_id != ""]
    body = fr.national_id.str[:13].astype(np.int64)
    assert (97 - body % 97 == fr.national_id.str[13:].astype(int)).all()
    assert (fr.national_id.str[0] == fr.sex.map({"male": "1", "female": "2"})).all()
    assert (fr.national_id.str[1:3] == fr.birth_date.str[2:4]).all()
    # published examples: codice fiscale of Mario Rossi, 1 Jan 1980, Rome; KVNR A123456780
    assert cf_check(np.array(["RSSMRA80A01H501"]))[0] == "U"
    it = _ids(out, "IT")
    it = it[it.national_id != ""]
    assert (cf_check(it.national_id.str[:15].to_numpy()) == it.national_id.str[15].to_numpy()).all()
    for k in ["A123456780", *kvnr(np.random.default_rng(0), 200)]:
        assert len(k) == 10 and k[0].isalpha() and k[1:].isdigit()
        letter = ord(k[0]) - 64
        digits = [letter // 10, letter % 10, *map(int, k[1:9])]
        prod = [x * (1 if i % 2 == 0 else 2) for i, x in enumerate(digits)]
        assert sum(p // 10 + p % 10 for p in prod) % 10 == int(k[9]), k


def test_cross_border_copies_differ_only_as_listed(out: Path) -> None:
    import json

    truth = json.loads((out / "truth.json").read_text())
    pairs = truth["cross_border_duplicates"]
    assert len(pairs) > 20
    ids = pd.concat(_ids(out, c) for c in COUNTRIES).set_index("patient_id")
    kinds = set()
    for p in pairs:
        a, b = (ids.loc[i] for i in p["patient_ids"])
        diffs = " ".join(p["differences"])
        for field in ("given_name", "family_name", "birth_date"):
            assert (a[field] != b[field]) == (f"{field}:" in diffs), (p, field)
            if a[field] != b[field]:
                kinds |= {
                    w for w in ("typo", "transliterated", "swapped", "one day off") if w in diffs
                }
        assert a.sex == b.sex and b.national_id == ""
    assert {"typo", "transliterated"} <= kinds
