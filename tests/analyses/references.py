"""Pooled reference fits (lifelines, statsmodels) on dummy-coded copies of the test data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from statsmodels.duration.hazard_regression import PHReg

# lifelines also stops on its Newton decrement (with precision 1e-7 by default, leaving ~1e-8
# in the estimates); 1e-16 makes it iterate to the maximum.
TIGHT = {"precision": 1e-16, "r_precision": 0.0, "max_steps": 60}


def dummies(df: pd.DataFrame, covariates: list[str], reference: dict | None = None) -> pd.DataFrame:
    """Columns named as ccdp names terms: numeric as is, `var[level]` against the reference."""
    out = {}
    for c in covariates:
        if pd.api.types.is_numeric_dtype(df[c]):
            out[c] = df[c].astype(float)
            continue
        levels = sorted(df[c].astype(str).unique())
        ref = (reference or {}).get(c, levels[0])
        for level in levels:
            if level != ref:
                out[f"{c}[{level}]"] = (df[c].astype(str) == level).astype(float)
    return pd.DataFrame(out, index=df.index)


def lifelines_cox(
    df: pd.DataFrame, covariates: list[str], strata: list[str] | None = None, reference=None
) -> CoxPHFitter:
    x = dummies(df, covariates, reference)
    data = pd.concat([x, df[["os_time", "os_event", *(strata or [])]]], axis=1)
    return CoxPHFitter().fit(
        data, "os_time", "os_event", strata=strata or None, fit_options=dict(TIGHT)
    )


def statsmodels_breslow(
    df: pd.DataFrame, covariates: list[str], strata: list[str] | None = None
) -> tuple[pd.DataFrame, object]:
    x = dummies(df, covariates)
    st = None
    if strata:
        st = df[strata].astype(str).agg("|".join, axis=1).to_numpy()
    fit = PHReg(
        df["os_time"].to_numpy(), x, status=df["os_event"].to_numpy(), ties="breslow", strata=st
    ).fit()
    return x, fit


def with_node(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The pooled data with each row's node, for references stratified by node."""
    return pd.concat([f.assign(node=f"n{i}") for i, f in enumerate(frames)], ignore_index=True)


def assert_matches(
    result, coef: np.ndarray, se: np.ndarray, loglik: float, terms: list[str]
) -> None:
    assert [c.term for c in result.coefficients] == terms
    np.testing.assert_allclose([c.coef for c in result.coefficients], coef, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose([c.se for c in result.coefficients], se, rtol=1e-7, atol=1e-8)
    assert abs(result.loglik - loglik) < 1e-7
