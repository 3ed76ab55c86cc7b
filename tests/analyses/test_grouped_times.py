"""Grouped event times say what they are: no event placed where it did not happen, landmarks
that count the deaths of an interval spanning them, method notes, excluded nodes per group.

The newcomer's case (issue 28, measured item 4): AML, n = 40, true first deaths at days 189 and
239, the next child leaving after 1,000 days. With min_cell = 5 the first interval holds both
deaths; the old rule put them at the interval's mean (day 986 in the issue) and released 1-year
OS 1.000 where the pooled patient-level KM gives 0.950."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter

from ccdp.analyses.km import KMResult
from ccdp.disclosure.event_times import group_intervals
from tests.analyses.federate import federate

YEAR = 365.25


def aml() -> pd.DataFrame:
    late = np.linspace(1100.0, 3000.0, 38).round()
    event = np.r_[1, 1, (np.arange(38) % 4 == 0).astype(int)]
    return pd.DataFrame({"os_time": np.r_[189.0, 239.0, late], "os_event": event, "arm": "AML"})


def test_aml_one_year_is_not_claimed_1_and_the_first_step_is_in_the_first_deaths_interval() -> None:
    df = aml()
    truth = KaplanMeierFitter().fit(df["os_time"], df["os_event"])
    assert truth.predict(YEAR) == 0.95  # the pooled patient-level KM
    result = federate("km", {"by": ["arm"]}, [df], min_cell=5)
    assert isinstance(result, KMResult)
    group = result.groups[0]
    one_year = group.survival_at[0].survival
    assert one_year is not None and one_year < 1.0
    start, end = group_intervals(
        np.array(["AML"] * 40), df["os_time"].to_numpy(), np.arange(40, dtype=np.uint64), 5, 1.0
    )
    assert start[0] < 189.0 <= end[0]  # the first death's interval, as released
    first_step = next(r.time for r in group.table if r.events)
    assert first_step <= end[0]
    # reference: the actuarial life table by its published formula (Cutler & Ederer 1958):
    # q = d / (n - c/2) over the first interval, S linear inside it
    first = end == end[0]
    d = int(df["os_event"][first].sum())
    c = int(first.sum()) - d
    s_end = 1.0 - d / (40 - c / 2.0)
    expect = 1.0 + (YEAR - start[0]) / (end[0] - start[0]) * (s_end - 1.0)
    assert abs(one_year - expect) < 1e-12
    assert result.method["times"] == "grouped"
    assert "grouped" in result.method_text()


def test_exact_times_say_exact() -> None:
    df = aml()
    result = federate("km", {"by": ["arm"]}, [df], min_cell=1)
    assert result.method["times"] == "exact"
    assert result.groups[0].survival_at[0].survival == 0.95
    assert "exact" in result.method_text()


def test_pooled_group_names_the_nodes_it_excludes() -> None:
    rng = np.random.default_rng(1)
    a = pd.DataFrame(
        {"os_time": rng.integers(1, 2000, 60).astype(float), "os_event": rng.integers(0, 2, 60)}
    ).assign(arm=np.repeat(["ALL", "AML"], 30))
    b = a[a["arm"] == "ALL"].reset_index(drop=True)
    result = federate("km", {"by": ["arm"]}, [a, b], min_cell=1)
    assert result.method["excluded"] == {"AML": ["n1"]}
    assert "AML: excludes n1" in result.method_text()
    rank = federate("logrank", {"by": ["arm"]}, [a, b], min_cell=1)
    assert rank.method["excluded"] == {"AML": ["n1"]}


def test_complete_case_note_gives_no_count_of_left_out_rows() -> None:
    """Two rows lack `arm`: the note says rows were left out and why n may differ, but not how
    many (a count under min_cell would be a new small-cell channel)."""
    df = aml()
    df.loc[[5, 6], "arm"] = None
    result = federate("km", {"by": ["arm"]}, [df], min_cell=1)
    note = result.method["complete_cases"]
    assert "arm" in note and not any(ch.isdigit() for ch in note)
    assert result.groups[0].n == 38


def registry_frames(seed: int) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """A simulated registry over six nodes of 1,200 to 60 children (as
    benchmarks/bench_event_times.py): daily times, up to 8 years of follow-up, three arms."""
    rng = np.random.default_rng(seed)
    n = 3410
    arm = rng.choice(np.array(["A", "B", "C"]), n, p=[0.5, 0.3, 0.2])
    lp = np.select([arm == "B", arm == "C"], [0.5, 1.1], 0.0)
    event_t = rng.exponential(4000 * np.exp(-lp))
    cens_t = rng.uniform(180, 8 * YEAR, n)
    df = pd.DataFrame(
        {
            "os_time": np.ceil(np.minimum(event_t, cens_t)),
            "os_event": (event_t <= cens_t).astype(int),
            "arm": arm,
        }
    )
    bounds = np.cumsum((0, 1200, 900, 700, 400, 150, 60))
    return df, [df.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(bounds)]


def test_grouped_landmarks_over_six_nodes_stay_close_to_the_patient_level_km() -> None:
    """Reference: lifelines on the pooled patient-level rows. Each node's intervals differ, so
    the hub spreads them over the pooled times (life-table assumption); without that, counting
    every child at its interval's end biased 5-year OS up by 0.06 at min_cell 10. Each landmark
    stays inside the patient-level KM's 95% CI (min_cell 5: within 0.01 at 1 and 3 years)."""
    df, frames = registry_frames(1)
    for min_cell in (5, 10):
        result = federate("km", {"by": ["arm"]}, frames, min_cell=min_cell)
        assert result.method["times"] == "grouped"
        for g in result.groups:
            block = df[df["arm"] == g.group]
            kmf = KaplanMeierFitter().fit(block["os_time"], block["os_event"])
            for land in g.survival_at:
                t = land.years * YEAR
                assert land.survival is not None
                lo, hi = kmf.confidence_interval_.loc[:t].iloc[-1]
                assert lo < land.survival < hi
                if min_cell == 5 and land.years < 5:
                    assert abs(land.survival - float(kmf.predict(t))) < 0.01


def test_a_group_withheld_by_a_nodes_gate_names_that_node() -> None:
    """Through the real gate: DE's two AML children are withheld (fewer than min_cell); the
    pooled AML group is FR's alone and says it excludes DE. Nothing new leaves DE: the hub
    sees only that DE answered without an AML row (DE may have none)."""
    from ccdp.analyses import registry
    from ccdp.analyses.node_data import FrameData
    from ccdp.disclosure.context import DisclosureContext
    from ccdp.disclosure.gate import release
    from ccdp.disclosure.policy import NodePolicy
    from ccdp.wire.summary import Summary

    rng = np.random.default_rng(4)

    def frame(aml: int, all_: int) -> pd.DataFrame:
        n = aml + all_
        return pd.DataFrame(
            {
                "os_time": rng.integers(30, 3000, n).astype(float),
                "os_event": rng.integers(0, 2, n),
                "arm": ["AML"] * aml + ["ALL"] * all_,
            }
        )

    km = registry.get("km")
    params = km.params_model.model_validate({"by": ["arm"]})
    summaries = {}
    for node, data in (("DE", frame(2, 40)), ("FR", frame(30, 40))):
        ctx = DisclosureContext(policy=NodePolicy(min_cell=5))
        local = km.local(FrameData(data, node=node, context=ctx), params, {}, {})
        checked = release(local, ctx)
        summaries[node] = Summary.from_dict(json.loads(json.dumps(checked.summary.to_dict())))
    done = km.combine(params, None, summaries)
    result = done.result
    assert isinstance(result, KMResult)
    aml_group = next(g for g in result.groups if g.group == "AML")
    assert aml_group.n == 30
    assert result.method["excluded"] == {"AML": ["DE"]}
    assert "AML: excludes DE" in result.method_text()


def test_cox_and_glm_say_how_they_were_fitted() -> None:
    _, frames = registry_frames(2)
    frames = frames[:3]
    within = federate("cox", {"covariates": ["arm"]}, frames)
    assert within.method["times"] == "exact"  # within-node sums keep exact times
    across = federate("cox", {"covariates": ["arm"], "strata": "none"}, frames)
    assert across.method["times"] == "grouped"
    assert "ties at the interval's end" in across.method_text()
    exact = federate("cox", {"covariates": ["arm"], "strata": "none"}, frames, min_cell=1)
    assert exact.method["times"] == "exact"
    glm = federate("logistic", {"outcome": "os", "covariates": ["arm"]}, frames)
    assert glm.method["fit"] == "exact" and "arm" in glm.method["complete_cases"]
    assert "Fitted exactly" in glm.method_text()
