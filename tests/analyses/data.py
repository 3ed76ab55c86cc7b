"""Test data: the Freireich 1963 6-MP trial (as shipped by lifelines) and simulated cohorts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from lifelines.datasets import load_leukemia


def freireich() -> pd.DataFrame:
    """Freireich et al., Blood 1963;21:699–716: 42 children in remission, 6-MP (Rx=0) or placebo
    (Rx=1); remission length in weeks (`os_time` here), relapse as the event. Analyses name only
    view variables, so the treatment is `arm` (6-MP the reference: its `arm[placebo]` term is
    Rx) and log WBC stands in `wbc_at_diagnosis`."""
    df = load_leukemia().rename(columns={"t": "os_time", "status": "os_event"})
    df["arm"] = np.where(df["Rx"] == 1, "placebo", "6-MP")
    df["wbc_at_diagnosis"] = df["logWBC"]
    return df


def cohort(n: int, seed: int) -> pd.DataFrame:
    """A simulated cohort with proportional hazards, integer-day times (many ties), censoring,
    a numeric covariate on a large scale, a binary and a three-level categorical covariate."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(0, 18, n)
    wbc = rng.lognormal(3.0, 1.0, n)
    sex = rng.choice(["F", "M"], n)
    risk = rng.choice(["high", "low", "standard"], n, p=[0.2, 0.5, 0.3])
    lp = (
        0.04 * age
        + 0.004 * wbc
        + 0.3 * (sex == "M")
        + np.select([risk == "high", risk == "standard"], [1.0, 0.4], 0.0)
    )
    event_t = rng.exponential(1500 * np.exp(-lp))
    cens_t = rng.uniform(200, 4000, n)
    time = np.ceil(np.minimum(event_t, cens_t))
    return pd.DataFrame(
        {
            "os_time": time,
            "os_event": (event_t <= cens_t).astype(int),
            "efs_time": np.ceil(np.minimum(event_t * 0.7, cens_t)),
            "efs_event": (event_t * 0.7 <= cens_t).astype(int),
            "age_at_diagnosis": age,
            "wbc_at_diagnosis": wbc,
            "sex": sex,
            "risk_group": risk,
            "relapsed": (sex == "M").astype(int),  # a 0/1 view variable standing in for "male"
        }
    )
