"""The KM median where the curve reaches exactly 0.5 (issue 26): the median is the first time the
curve is at or below one half (`first_below_half` in ccdp.analyses.km), which small groups hit
often. Ten children at integer days, min_cell 1 (nothing grouped), deterministic; the reference
is lifelines' `median_survival_time_` on the same data. A rule of "strictly below 0.5" fails
both tests: the first curve never goes below 0.5, the second does so only a death later."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from tests.analyses.federate import federate

DEATHS = [30.0, 60.0, 90.0, 120.0, 150.0]

CASES = {
    # five deaths, then the five others alive at their last contact after the last death:
    # nobody censored before the fifth death, so the curve steps 0.9 … 0.5 and stays at 0.5
    "five_deaths_five_alive": (DEATHS + [400.0] * 5, [1] * 5 + [0] * 5),
    # no censoring at all: ten deaths, the fifth takes the curve to exactly 0.5
    "ten_deaths_no_censoring": ([*DEATHS, 180.0, 210.0, 240.0, 270.0, 300.0], [1] * 10),
}


def frame(times: list[float], events: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"os_time": np.array(times, dtype=float), "os_event": events})


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("nodes", [1, 2])
def test_the_median_is_the_time_the_curve_reaches_one_half(case: str, nodes: int) -> None:
    times, events = CASES[case]
    df = frame(times, events)
    frames = [df.iloc[i::nodes].reset_index(drop=True) for i in range(nodes)]
    (group,) = federate("km", {}, frames, min_cell=1).groups
    assert (group.n, group.events) == (10, sum(events))

    # the data reach one half exactly, at the fifth death (guards the premise of the test)
    at_fifth = next(row for row in group.table if row.time == DEATHS[-1])
    assert at_fifth.survival == pytest.approx(0.5, abs=1e-12)
    assert all(row.survival > 0.5 + 1e-12 for row in group.table if row.time < DEATHS[-1])

    reference = KaplanMeierFitter().fit(times, events).median_survival_time_
    assert reference == DEATHS[-1]
    assert group.median == reference


def test_one_death_short_of_half_has_no_median() -> None:
    """Four deaths and six alive: the curve stops at 0.6, so there is no median (the boundary
    from the other side: `<= 0.5` does not round 0.6 down)."""
    times, events = DEATHS[:4] + [400.0] * 6, [1] * 4 + [0] * 6
    (group,) = federate("km", {}, [frame(times, events)], min_cell=1).groups
    assert group.median is None
    assert KaplanMeierFitter().fit(times, events).median_survival_time_ == np.inf
