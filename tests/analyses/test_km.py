"""Kaplan–Meier over 1–10 nodes equals lifelines' KaplanMeierFitter on the pooled data, with each
node's event times grouped as the node groups them before release (`tests.analyses.federate.
grouped`); with min_cell = 1 nothing is grouped and the published Freireich table is matched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times

from ccdp.analyses.km import KMGroup, KMResult
from tests.analyses.data import cohort, freireich
from tests.analyses.federate import federate, grouped, split

TOL = 1e-9


def first_half(times: np.ndarray, values: np.ndarray) -> float | None:
    """lifelines' median rule (first time at or below 0.5) on its own curve; a curve exactly at
    0.5 up to rounding counts as reached (lifelines' exp(Σ log) can land either side of 0.5)."""
    hit = np.flatnonzero(values <= 0.5 + 1e-12)
    return None if hit.size == 0 else float(times[hit[0]])


def life_table(
    kmf: KaplanMeierFitter, block: pd.DataFrame, outcome: str = "os"
) -> KaplanMeierFitter:
    """The actuarial life table (Cutler & Ederer 1958) by its published formula on lifelines'
    counts: censorings of a grouped interval count half in the number at risk for its deaths,
    n' = n − c/2, S = Π(1 − d/n'), Greenwood's variance with n', log(−log) bounds. Returned as
    a copy of `kmf` whose curves are the life table's (exact rows have c = 0 here: unchanged)."""
    import copy

    from scipy.special import ndtri

    et = kmf.event_table
    ev, tm = f"{outcome}_event", f"{outcome}_time"
    grouped = block.loc[block["grouped_row"] & (block[ev] == 0), tm]
    half = grouped.value_counts().reindex(et.index, fill_value=0).to_numpy() / 2.0
    n = et["at_risk"].to_numpy() - half
    d = et["observed"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.cumprod(1.0 - d / n)
        var = np.cumsum(np.where(n > d, d / (n * (n - d)), 0.0))
        spread = ndtri(0.975) * np.sqrt(var) / np.log(s)
        low = np.exp(-np.exp(np.log(-np.log(s)) - spread))
        high = np.exp(-np.exp(np.log(-np.log(s)) + spread))
    low, high = np.where(s == 1.0, 1.0, low), np.where(s == 1.0, 1.0, high)
    low, high = np.where(s == 0.0, 0.0, low), np.where(s == 0.0, 0.0, high)
    out = copy.copy(kmf)
    out.survival_function_ = pd.DataFrame({"s": s}, index=et.index)
    out.confidence_interval_ = pd.DataFrame({"lo": low, "hi": high}, index=et.index)
    return out


def check_spread(g: KMGroup, kmf: KaplanMeierFitter, block: pd.DataFrame) -> None:
    """Several nodes grouped differently: the released counts are lifelines' on the interval
    ends; the curve (each node's intervals spread over the pooled times inside them, see
    km.spread_counts) is a survival curve; there is no exact reference on grouped data from
    several nodes, so its closeness to lifelines' patient-level KM is tested on a simulated
    registry in test_grouped_times."""
    times = np.array([r.time for r in g.table])
    et = kmf.event_table.loc[times]
    assert [r.at_risk for r in g.table] == et["at_risk"].tolist()
    assert [r.events for r in g.table] == et["observed"].tolist()
    surv = np.array([r.survival for r in g.table])
    assert np.all(np.diff(surv) <= 1e-12) and np.all((surv >= 0) & (surv <= 1))


def check_against_lifelines(result: KMResult, pooled: pd.DataFrame, by: str | None) -> None:
    groups = [("all", pooled)] if by is None else list(pooled.groupby(by))
    assert [g.group for g in result.groups] == [str(k) for k, _ in groups]
    for g, (_, block) in zip(result.groups, groups, strict=True):
        kmf = KaplanMeierFitter().fit(block["os_time"], block["os_event"])
        times = np.array([r.time for r in g.table])
        np.testing.assert_array_equal(times, np.unique(block["os_time"]))
        if "grouped_row" in block and block["grouped_row"].any():
            if block["node_index"].nunique() > 1:
                check_spread(g, kmf, block)
                continue
            kmf = life_table(kmf, block)
        sf = kmf.survival_function_.iloc[:, 0].loc[times].to_numpy()
        ci = kmf.confidence_interval_.loc[times].to_numpy()
        np.testing.assert_allclose([r.survival for r in g.table], sf, rtol=0, atol=TOL)
        np.testing.assert_allclose([r.ci_low for r in g.table], ci[:, 0], rtol=0, atol=TOL)
        np.testing.assert_allclose([r.ci_high for r in g.table], ci[:, 1], rtol=0, atol=TOL)
        et = kmf.event_table.loc[times]
        assert [r.at_risk for r in g.table] == et["at_risk"].tolist()
        assert [r.events for r in g.table] == et["observed"].tolist()
        assert (g.n, g.events) == (len(block), int(block["os_event"].sum()))
        got = [g.median, g.median_ci_low, g.median_ci_high]
        line = kmf.timeline
        curves = [kmf.survival_function_.to_numpy()[:, 0], *kmf.confidence_interval_.to_numpy().T]
        assert got == [first_half(line, c) for c in curves]
        if not np.isclose(kmf.survival_function_.to_numpy(), 0.5, atol=1e-9).any():
            med = median_survival_times(kmf.confidence_interval_).to_numpy().ravel()
            expect = [kmf.median_survival_time_, *med]
            assert got == [None if np.isinf(x) else x for x in expect]
        for land in g.survival_at:
            t = land.years * 365.25
            if t > times[-1]:
                assert land.survival is None
                continue
            if result.method["times"] == "exact":
                assert land.survival == pytest.approx(kmf.predict(t), abs=TOL)
                lo, hi = kmf.confidence_interval_.loc[:t].iloc[-1]
                assert (land.ci_low, land.ci_high) == (pytest.approx(lo), pytest.approx(hi))
            else:  # grouped: the step value, or interpolated towards the next interval end
                curve = kmf.survival_function_.iloc[:, 0]
                after = curve.loc[times[np.searchsorted(times, t)]]
                assert after - TOL <= land.survival <= curve.loc[:t].iloc[-1] + TOL


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_freireich_by_arm_equals_lifelines(k: int) -> None:
    """min_cell = 1: no grouping, so the published times and the 8-week placebo median hold."""
    df = freireich()
    result = federate("km", {"by": ["arm"]}, split(df, k, np.random.default_rng(k)), min_cell=1)
    check_against_lifelines(result, df, "arm")
    placebo = result.groups[1]
    assert placebo.group == "placebo" and placebo.median == 8.0  # Freireich: 8 weeks on placebo


@pytest.mark.parametrize("k", [1, 2, 3])
def test_freireich_grouped_equals_lifelines_on_grouped_times(k: int) -> None:
    df = freireich()
    frames = split(df, k, np.random.default_rng(k))
    result = federate("km", {"by": ["arm"]}, frames)
    check_against_lifelines(result, grouped(frames, ["arm"]), "arm")
    assert len(result.groups[0].table) < df.loc[df["arm"] == "6-MP", "os_time"].nunique()


@pytest.mark.parametrize("seed", range(4))
def test_random_splits_with_ties_equal_lifelines(seed: int) -> None:
    df = cohort(400, seed)
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(1, 11))
    frames = split(df, k, rng)
    by = ["risk_group"]
    check_against_lifelines(federate("km", {"by": by}, frames), grouped(frames, by), "risk_group")
    frames = split(df, k, rng)
    check_against_lifelines(federate("km", {}, frames), grouped(frames, []), None)


def test_two_by_variables_make_joint_groups() -> None:
    df = cohort(300, 7)
    result = federate("km", {"by": ["sex", "risk_group"]}, split(df, 4, np.random.default_rng(0)))
    assert [g.group for g in result.groups][:2] == ["F, high", "F, low"]
    assert sum(g.n for g in result.groups) == 300


@pytest.mark.parametrize("unit", ["week", "month"])
def test_coarse_grid_equals_lifelines_on_the_grid(unit: str) -> None:
    df = cohort(300, 3)
    frames = split(df, 5, np.random.default_rng(1))
    result = federate("km", {"by": ["sex"], "time_unit": unit}, frames)
    step = {"week": 7.0, "month": 30.4375}[unit]
    times = np.array([r.time for g in result.groups for r in g.table])
    np.testing.assert_allclose(times / step, np.round(times / step), atol=1e-9)
    check_against_lifelines(result, grouped(frames, ["sex"], unit=unit), "sex")


def test_efs_outcome_and_frame_and_text() -> None:
    df = cohort(200, 11)
    frames = split(df, 1, np.random.default_rng(2))  # one node: the life table is exact
    result = federate("km", {"outcome": "efs"}, frames)
    ref = grouped(frames, [], outcome="efs")
    kmf = life_table(KaplanMeierFitter().fit(ref["efs_time"], ref["efs_event"]), ref, "efs")
    frame = result.to_frame(steps=True)
    assert list(frame.columns) == [
        "group",
        "time",
        "at_risk",
        "events",
        "survival",
        "ci_low",
        "ci_high",
    ]
    np.testing.assert_allclose(
        frame["survival"], kmf.survival_function_.iloc[:, 0].loc[frame["time"]], atol=TOL
    )
    text = str(result)
    assert (
        "Kaplan–Meier: Event-free survival" in text and "median (years)" in text and " 200 " in text
    )


def test_released_rows_each_hold_min_cell_subjects() -> None:
    """The node's table: every row of a group of >= 5 counts >= 5 records, `records` maps each
    view row to its table row, and the row counts agree with the records."""
    from ccdp.analyses.km import event_table_part
    from ccdp.analyses.node_data import FrameData

    df = cohort(300, 12)
    part = event_table_part(FrameData(df), "os", ["risk_group"], "day")
    assert part.records is not None
    sets = part.records.sets(len(part))
    sizes = np.array([s.size for s in sets])
    np.testing.assert_array_equal(sizes, part.columns["events"] + part.columns["censored"])
    assert sizes.min() >= 5 and sizes.sum() == len(df)


def test_edge_cases_deaths_at_zero_all_dead_and_single_rows() -> None:
    """Deaths at day 0, a group in which everyone dies (S reaches 0), a group whose median is
    never reached, tied deaths and censorings at the same time: still equal to lifelines."""
    df = pd.DataFrame(
        {
            "os_time": [0, 0, 3, 3, 3, 5, 8, 8, 2, 4, 4, 6, 9, 9, 9, 1, 7, 7, 7, 7],
            "os_event": [1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1],
            "risk_group": ["a"] * 8 + ["b"] * 7 + ["c"] * 5,
        }
    )
    for k in (1, 3):
        frames = split(df, k, np.random.default_rng(k))
        result = federate("km", {"by": ["risk_group"]}, frames, min_cell=1)
        check_against_lifelines(result, df, "risk_group")
    a, b, c = result.groups
    assert a.table[-1].survival == 0.0 and (a.table[-1].ci_low, a.table[-1].ci_high) == (0, 0)
    assert b.median is None and b.median_ci_high is None
    assert c.events == 5 and c.median == 7.0
