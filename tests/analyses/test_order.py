"""ICCC-3 groups in the classification's order (I ... XII) and bands by their lower bound, in
every result: KM groups, log-rank groups, cross-tab rows and columns (issue 14)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.analyses.data import cohort
from tests.analyses.federate import federate, split

GROUPS = ["IX", "V", "XII", "I", "II"]
AGES = ["10-14", "1-4", "0", "15-19", "5-9"]


def frame() -> pd.DataFrame:
    df = cohort(600, 4)
    rng = np.random.default_rng(4)
    return df.assign(iccc_group=rng.choice(GROUPS, len(df)), age_group=rng.choice(AGES, len(df)))


def test_km_and_logrank_groups_follow_the_classification() -> None:
    frames = split(frame(), 2, np.random.default_rng(1))
    km = federate("km", {"by": ["iccc_group"]}, frames)
    assert [g.group for g in km.groups] == ["I", "II", "V", "IX", "XII"]
    lr = federate("logrank", {"by": ["age_group"]}, frames)
    assert [g.group for g in lr.groups] == ["0", "1-4", "5-9", "10-14", "15-19"]


def test_crosstab_rows_and_columns_follow_the_classification() -> None:
    frames = split(frame(), 2, np.random.default_rng(2))
    wide = federate("crosstab", {"by": ["iccc_group", "age_group"]}, frames).to_frame()
    assert list(wide.index) == ["I", "II", "V", "IX", "XII", "Total"]
    assert list(wide.columns) == ["0", "1-4", "5-9", "10-14", "15-19", "Total"]
