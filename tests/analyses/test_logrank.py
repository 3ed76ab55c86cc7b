"""Log-rank over 1–10 nodes equals lifelines' multivariate_logrank_test on the pooled data, with
each node's times grouped as it groups them for release (min_cell = 1 for the published check)."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.statistics import multivariate_logrank_test

from tests.analyses.data import cohort, freireich
from tests.analyses.federate import federate, grouped, split


@pytest.mark.parametrize("k", [1, 3, 10])
def test_freireich_equals_lifelines_and_published(k: int) -> None:
    df = freireich()
    frames = split(df, k, np.random.default_rng(k))
    result = federate("logrank", {"by": ["arm"]}, frames, min_cell=1)
    ref = multivariate_logrank_test(df["os_time"], df["arm"], df["os_event"])
    assert result.chi2 == pytest.approx(ref.test_statistic, rel=1e-10)
    assert result.p == pytest.approx(ref.p_value, rel=1e-8)
    assert result.df == 1
    # Published: chi-square 16.8 on 1 df (R survdiff on these data; Kleinbaum & Klein 2012, ch. 2).
    assert round(result.chi2, 1) == 16.8
    assert [g.observed for g in result.groups] == [9, 21]
    coarse = federate("logrank", {"by": ["arm"]}, frames)
    pooled = grouped(frames, ["arm"])
    ref = multivariate_logrank_test(pooled["os_time"], pooled["arm"], pooled["os_event"])
    assert coarse.chi2 == pytest.approx(ref.test_statistic, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_k_groups_random_splits(seed: int) -> None:
    df = cohort(500, seed)
    rng = np.random.default_rng(seed)
    by = ["risk_group"] if seed % 2 else ["sex", "risk_group"]
    frames = split(df, int(rng.integers(1, 11)), rng)
    result = federate("logrank", {"by": by}, frames)
    df = grouped(frames, by)
    labels = df[by].astype(str).agg(", ".join, axis=1)
    ref = multivariate_logrank_test(df["os_time"], labels, df["os_event"])
    assert result.chi2 == pytest.approx(ref.test_statistic, rel=1e-9)
    assert result.p == pytest.approx(ref.p_value, rel=1e-7, abs=1e-300)
    assert result.df == labels.nunique() - 1
    assert sum(g.observed for g in result.groups) == df["os_event"].sum()
    assert sum(g.expected for g in result.groups) == pytest.approx(df["os_event"].sum())
    assert "Log-rank" in str(result) and len(result.to_frame()) == labels.nunique()
