"""ICD-O-3 code lists and normalisers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ccdp.terminology import icdo3


def test_topography_spellings_normalise_and_bad_ones_become_nan():
    raw = pd.Series(
        ["C42.1", "C421", "c42.1", " C42.1 ", "C4", "", None, "X42.1", "C42.10"],
        index=list("abcdefghi"),
    )
    out = icdo3.normalise_topography(raw)
    assert list(out.index) == list("abcdefghi")
    assert out.iloc[:4].tolist() == ["C42.1"] * 4
    assert out.iloc[4:].isna().all()


def test_morphology_spellings_give_code_and_behaviour():
    raw = pd.Series(["9836/3", "98363", "9836", "M-9836/3", "M98363", "m9836/1", "98", None, 9836])
    out = icdo3.normalise_morphology(raw)
    assert list(out.columns) == ["morphology", "behaviour"]
    assert str(out["behaviour"].dtype) == "Int64"
    assert out["morphology"].tolist()[:6] == ["9836"] * 6
    assert out["behaviour"].tolist()[:6] == [3, 3, pd.NA, 3, 3, 1]
    assert pd.isna(out["morphology"].iloc[6]) and pd.isna(out["morphology"].iloc[7])
    assert out["morphology"].iloc[8] == "9836" and pd.isna(out["behaviour"].iloc[8])


def test_validity_checks_the_code_lists():
    np.testing.assert_array_equal(
        icdo3.valid_topography(["C42.1", "C80.9", "C43.9", "C78.0", "C4", None]),
        [True, True, False, False, False, False],
    )
    np.testing.assert_array_equal(
        icdo3.valid_morphology(["9836/3", "9811", "9385/3", "1234", "9836/7", "9999", None]),
        [True, True, True, False, False, False, False],
    )


def test_code_lists_cover_the_classification_and_icdo31_additions():
    topo = icdo3.topography_codes()
    assert topo["code"].str.match(r"^C\d\d\.\d$").all() and topo["code"].is_unique
    assert topo["code"].min() == "C00.0" and topo["code"].max() == "C80.9"
    assert {"C42.1", "C69.2", "C71.6", "C74.9", "C64.9"} <= set(topo["code"])
    morph = icdo3.morphology_codes()
    assert morph["code"].is_unique and morph["code"].str.match(r"^\d{4}$").all()
    # ICD-O-3.1 additions used by ICCC-3 (B-lymphoblastic subtypes, mixed phenotype, pilomyxoid)
    new = set(morph.loc[morph["revision"] == "3.1", "code"])
    assert {"9811", "9818", "9806", "9425", "9431", "9597", "9971"} <= new
    assert morph.set_index("code").loc["9510", "label"] == "Retinoblastoma, NOS"


def test_labels_and_problems():
    assert icdo3.topography_label(["c421"]).tolist() == ["Bone marrow"]
    assert icdo3.morphology_label(["9836/3"]).tolist() == [
        "Precursor B-cell lymphoblastic leukemia"
    ]
    assert (
        icdo3.topography_problem("C4")
        == "topography 'C4': not ICD-O-3 (expected Cnn.n, e.g. C42.1)"
    )
    assert icdo3.behaviour_problem(7) == "behaviour 7: not in 0,1,2,3,6,9"
    assert icdo3.behaviour_problem("3") is None
    assert icdo3.morphology_problem("9836/3") is None
