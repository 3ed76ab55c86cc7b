"""Rules of the KM estimate that the federated tests left unchecked, found by the mutation run
(docs/testing.md): the landmarks reported (1, 3 and 5 years, against lifelines), the
life-table interpolation of a landmark inside a grouped interval, at its boundary, and the
limit of three grouping variables. Pure
functions on small arrays, so they are fast and deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from pydantic import ValidationError

from ccdp.analyses.event_data import YEAR_DAYS
from ccdp.analyses.km import KMParams, km_curve, landmarks

# ten children followed up to eight years, deaths spread over the first six
TIMES = np.array([200.0, 500.0, 700.0, 1000.0, 1300.0, 1600.0, 2000.0, 2200.0, 2900.0, 2950.0])
EVENTS = np.array([1, 1, 0, 1, 1, 0, 1, 1, 0, 0])


def curve() -> dict[str, np.ndarray]:
    return km_curve(TIMES, EVENTS, 1 - EVENTS)


def test_landmarks_are_one_three_and_five_years_and_match_lifelines() -> None:
    marks = landmarks(TIMES, curve())
    assert [m.years for m in marks] == [1, 3, 5]
    kmf = KaplanMeierFitter().fit(TIMES, EVENTS)
    for m in marks:
        expected = float(kmf.survival_function_at_times(m.years * YEAR_DAYS).iloc[0])
        assert m.survival == pytest.approx(expected, abs=1e-12)


def test_a_landmark_inside_a_grouped_interval_is_interpolated_linearly() -> None:
    """Cutler & Ederer: a one-year landmark strictly inside the grouped interval (200, 500]
    lies on the straight line between the curve at 200 and at 500 days."""
    c = curve()
    (one, *_) = landmarks(TIMES, c, np.array([[200.0, 500.0]]))
    w = (YEAR_DAYS - 200.0) / 300.0
    expected = c["survival"][0] + w * (c["survival"][1] - c["survival"][0])
    assert one.survival == pytest.approx(expected, abs=1e-12)
    assert c["survival"][1] < one.survival < c["survival"][0]


def test_a_landmark_at_a_grouped_interval_end_is_the_curve_there() -> None:
    """The boundary: a landmark exactly at an interval's end is not inside it (the interval's
    deaths all happened by then), so the curve's own value is reported, not a line to the
    next time."""
    times = np.array([200.0, YEAR_DAYS, 900.0])
    events, censored = np.array([1, 1, 1]), np.array([0, 0, 1])
    c = km_curve(times, events, censored)
    (one, *_) = landmarks(times, c, np.array([[200.0, YEAR_DAYS]]))
    assert one.survival == pytest.approx(float(c["survival"][1]), abs=1e-12)


def test_curves_are_split_by_at_most_three_variables() -> None:
    """Three grouping variables are accepted; a fourth is refused before any node is asked
    (each split multiplies the groups, and so the small ones)."""
    three = ["sex", "age_group", "iccc_group"]
    assert KMParams(by=three).by == three
    with pytest.raises(ValidationError, match="at most 3"):
        KMParams(by=[*three, "country"])
