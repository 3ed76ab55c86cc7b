"""Grouped-time KM, log-rank and Cox against references whose grouping is done here, not by ccdp.

The other survival tests fit lifelines/statsmodels on `tests.analyses.federate.grouped`, which
calls ccdp's own `group_intervals`: a bug in the grouping would be in the reference too. Here the
grouping is the documented rule (docs/disclosure.md section 4, ccdp.disclosure.event_times),
rewritten as a plain loop: within a node and a group, walk the sorted distinct times and close an
interval as soon as it holds at least `min_cell` subjects (events plus censorings); a tail short
of `min_cell` joins the interval before; a group of fewer than `min_cell` keeps its times. Each
subject's time becomes its interval's last time (events at the interval's end).

Two hand-made cases fix what the rule must give, whatever the code: every distinct time already
holding `min_cell` subjects (the grouping is the identity, so the patient-level lifelines fits
are the reference), and a case where two deaths and a censoring tail must merge. Then random
cohorts over several nodes: ccdp's grouping equals the loop's, and the federated results equal
lifelines on the loop's grouped data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from ccdp.analyses.km import KMResult
from tests.analyses.data import cohort
from tests.analyses.federate import federate, grouped, split
from tests.analyses.references import assert_matches, lifelines_cox

MIN_CELL = 5  # the default policy's, which `federate(..., min_cell=None)` uses


def rule(times: list[float], min_cell: int) -> dict[float, tuple[float, float]]:
    """The documented rule for one node's group: distinct time -> (start, end]."""
    distinct = sorted(set(times))
    if len(times) < min_cell:
        return {t: (t, t) for t in distinct}
    intervals: list[list[float]] = []
    current: list[float] = []
    held = 0
    for t in distinct:
        current.append(t)
        held += times.count(t)
        if held >= min_cell:
            intervals.append(current)
            current, held = [], 0
    if current:  # the tail short of min_cell joins the interval before
        intervals[-1].extend(current)
    out = {}
    start = 0.0
    for block in intervals:
        end = block[-1]
        for t in block:
            out[t] = (t, t) if len(block) == 1 else (start, end)
        start = end
    return out


def group_here(frames: list[pd.DataFrame], by: list[str]) -> pd.DataFrame:
    """Pooled rows with each node's times grouped by `rule` within its `by` groups; `grouped_row`
    marks rows whose interval spans more than one time."""
    out = []
    for i, frame in enumerate(frames):
        rows = frame.dropna(subset=["os_time", "os_event", *by]).copy()
        keys = rows[by].astype(str).agg(", ".join, axis=1) if by else pd.Series("", rows.index)
        start = pd.Series(0.0, index=rows.index)
        end = pd.Series(0.0, index=rows.index)
        for _, block in rows.groupby(keys, sort=False):
            mapping = rule(block["os_time"].tolist(), MIN_CELL)
            start[block.index] = [mapping[t][0] for t in block["os_time"]]
            end[block.index] = [mapping[t][1] for t in block["os_time"]]
        rows["os_time"] = end
        rows["grouped_row"] = start < end
        rows["node_index"] = i
        out.append(rows)
    return pd.concat(out, ignore_index=True)


def frame(spec: dict[str, list[tuple[float, int, int]]]) -> pd.DataFrame:
    """Rows from {arm: [(time, deaths, censored), ...]}."""
    rows = []
    for arm, entries in spec.items():
        for t, d, c in entries:
            rows += [(t, 1, arm)] * d + [(t, 0, arm)] * c
    return pd.DataFrame(rows, columns=["os_time", "os_event", "arm"])


# every distinct time holds at least 5 children: nothing may be grouped
ON_GRID = frame(
    {
        "A": [(30.0, 3, 2), (90.0, 2, 4), (180.0, 1, 4)],
        "B": [(30.0, 1, 4), (90.0, 3, 2), (180.0, 4, 3)],
    }
)
# A: deaths at 10 and 20 and 3 censored at 25 make (0, 25]; 100 x 5 would close (25, 100] but
#    the tail 200 (1 death, 1 censored), 300 (1 censored) is short, so the interval is (25, 300].
# B: 15 x 5 stays exact; 40, 60, 80 hold 4, so (15, 150] takes 150 x 5 too.
MERGE = frame(
    {
        "A": [
            (10.0, 1, 0),
            (20.0, 1, 0),
            (25.0, 0, 3),
            (100.0, 2, 3),
            (200.0, 1, 1),
            (300.0, 0, 1),
        ],
        "B": [(15.0, 2, 3), (40.0, 1, 0), (60.0, 1, 0), (80.0, 0, 2), (150.0, 1, 4)],
    }
)
MERGE_EXPECTED = {
    "A": {10.0: 25.0, 20.0: 25.0, 25.0: 25.0, 100.0: 300.0, 200.0: 300.0, 300.0: 300.0},
    "B": {15.0: 15.0, 40.0: 150.0, 60.0: 150.0, 80.0: 150.0, 150.0: 150.0},
}


def test_the_rule_by_hand() -> None:
    mine = group_here([MERGE], ["arm"])
    for arm, mapping in MERGE_EXPECTED.items():
        got = dict(
            zip(
                MERGE.loc[MERGE["arm"] == arm, "os_time"],
                mine.loc[mine["arm"] == arm, "os_time"],
                strict=True,
            )
        )
        assert got == mapping
    assert (group_here([ON_GRID], ["arm"])["os_time"] == ON_GRID["os_time"]).all()


def life_table_survival(block: pd.DataFrame) -> pd.Series:
    """Actuarial estimate on grouped rows (Cutler & Ederer 1958): at each interval end t,
    S(t) = S(t-) (1 - d / (n - c/2)), c the censorings of a grouped (multi-time) interval,
    which are taken to leave half-way through it; exact rows have the KM step (c not halved)."""
    out = {}
    s = 1.0
    for t in sorted(block["os_time"].unique()):
        at = block[block["os_time"] == t]
        n = int((block["os_time"] >= t).sum())
        d = int(at["os_event"].sum())
        c = int(((at["os_event"] == 0) & at["grouped_row"]).sum())
        s *= 1.0 - d / (n - c / 2.0)
        out[t] = s
    return pd.Series(out)


def check_km(data: pd.DataFrame, frames: list[pd.DataFrame]) -> None:
    result = federate("km", {"by": ["arm"]}, frames)
    assert isinstance(result, KMResult)
    for g in result.groups:
        block = data[data["arm"] == g.group]
        times = [r.time for r in g.table]
        assert times == sorted(block["os_time"].unique().tolist())
        want = life_table_survival(block)
        got = pd.Series([r.survival for r in g.table], index=times)
        np.testing.assert_allclose(got.to_numpy(), want.loc[times].to_numpy(), rtol=0, atol=1e-12)
        kmf = KaplanMeierFitter().fit(block["os_time"], block["os_event"])
        et = kmf.event_table.loc[times]
        assert [r.at_risk for r in g.table] == et["at_risk"].tolist()
        assert [r.events for r in g.table] == et["observed"].tolist()


def check_logrank(data: pd.DataFrame, frames: list[pd.DataFrame], by: str) -> None:
    rank = federate("logrank", {"by": [by]}, frames)
    ref = multivariate_logrank_test(data["os_time"], data[by], data["os_event"])
    assert rank.chi2 == pytest.approx(ref.test_statistic, rel=1e-10)


def check_cox(data: pd.DataFrame, frames: list[pd.DataFrame], covariate: str) -> None:
    result = federate("cox", {"covariates": [covariate], "strata": "none"}, frames)
    cph = lifelines_cox(data, [covariate])
    assert_matches(
        result,
        cph.params_.to_numpy(),
        cph.standard_errors_.to_numpy(),
        cph.log_likelihood_,
        list(cph.params_.index),
    )


def test_on_the_grid_nothing_moves_and_patient_level_lifelines_is_the_reference() -> None:
    frames = [ON_GRID]
    check_km(group_here(frames, ["arm"]), frames)
    # the exact KM too: no row is grouped, so the life table is lifelines' product-limit curve
    km = federate("km", {"by": ["arm"]}, frames)
    assert isinstance(km, KMResult)
    for g in km.groups:
        block = ON_GRID[ON_GRID["arm"] == g.group]
        kmf = KaplanMeierFitter().fit(block["os_time"], block["os_event"])
        sf = kmf.survival_function_.iloc[:, 0].loc[[r.time for r in g.table]].to_numpy()
        np.testing.assert_allclose([r.survival for r in g.table], sf, rtol=0, atol=1e-12)
    check_logrank(ON_GRID, frames, "arm")
    # Cox (one group per node when unstratified): 33 children in one group, every time >= 5
    check_cox(ON_GRID, frames, "arm")


def test_two_deaths_and_a_short_tail_merge_as_the_rule_says() -> None:
    frames = [MERGE]
    data = group_here(frames, ["arm"])
    check_km(data, frames)
    km = federate("km", {"by": ["arm"]}, frames)
    assert isinstance(km, KMResult)
    a = next(g for g in km.groups if g.group == "A")
    assert [r.time for r in a.table] == [25.0, 300.0]  # the deaths at 10 and 20 are released at 25
    assert a.table[0].events == 2
    check_logrank(data, frames, "arm")
    # unstratified Cox groups all of a node's rows together: the loop on the pooled rows
    check_cox(group_here(frames, []), frames, "arm")


@pytest.mark.parametrize("seed", range(3))
def test_random_cohorts_ccdp_grouping_equals_the_rule_and_fits_equal_lifelines(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    df = cohort(300, seed).rename(columns={"risk_group": "arm"})
    frames = split(df, int(rng.integers(1, 5)), rng)
    for by in (["arm"], []):
        mine = group_here(frames, by)
        theirs = grouped(frames, by)
        assert mine["os_time"].tolist() == theirs["os_time"].tolist()
        assert mine["grouped_row"].tolist() == theirs["grouped_row"].tolist()
    check_logrank(group_here(frames, ["arm"]), frames, "arm")
    check_cox(group_here(frames, []), frames, "arm")
    one = [df.iloc[:150].reset_index(drop=True)]
    check_km(group_here(one, ["arm"]), one)
