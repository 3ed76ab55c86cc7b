"""Age groups and standard populations."""

from __future__ import annotations

import numpy as np
import pytest

from ccdp.model import load_model
from ccdp.terminology import populations


def test_age_groups_use_the_data_model_labels():
    allowed = load_model().table("population").field("age_group").allowed
    assert list(populations.age_group_labels()) == [str(a) for a in allowed]


def test_age_group_boundaries_and_out_of_range():
    ages = [0, 0.99, 1, 4.99, 5, 9, 10, 14.5, 15, 19.99, 20, -0.5, None, float("nan"), "12"]
    assert populations.age_group(ages).tolist() == [
        "0",
        "0",
        "1-4",
        "1-4",
        "5-9",
        "5-9",
        "10-14",
        "10-14",
        "15-19",
        "15-19",
        None,
        None,
        None,
        None,
        "10-14",
    ]


def test_age_group_is_vectorised_over_large_arrays():
    ages = np.random.default_rng(3).uniform(0, 20, 200_000)
    groups = populations.age_group(ages)
    expected = np.select(
        [ages < 1, ages < 5, ages < 10, ages < 15], ["0", "1-4", "5-9", "10-14"], "15-19"
    )
    assert (groups == expected).all()


def test_segi_world_weights_match_the_published_standard():
    # Segi 1960 / Doll et al. 1966, per 100,000: 2400, 9600, 10000, 9000, 9000
    w14 = populations.standard_weights("segi_world", "0-14")
    assert w14.to_dict() == pytest.approx(
        {"0": 2400 / 31000, "1-4": 9600 / 31000, "5-9": 10000 / 31000, "10-14": 9000 / 31000}
    )
    w19 = populations.standard_weights("segi_world", "0-19")
    assert list(w19.index) == ["0", "1-4", "5-9", "10-14", "15-19"]
    assert w19.sum() == pytest.approx(1.0)
    assert w19["15-19"] == pytest.approx(9000 / 40000)


def test_unknown_standard_or_range_is_a_clear_error():
    with pytest.raises(populations.PopulationError, match="standard population 'who'"):
        populations.standard_weights("who")
    with pytest.raises(populations.PopulationError, match="age range '0-24'"):
        populations.standard_weights(ages="0-24")
