"""Incidence against printed figures, not a transcription of ccdp's own formulas.

Fay–Feuer: the data of Table 1 of Fay & Feuer (Stat Med 1997;16:791-801) — Down syndrome births
by maternal age and birth order from Fleiss (1981, p. 249), standardised to the mean births per
age group over the birth orders — with the rates and 95% gamma intervals printed in the tidyrates
README (epitools' ageadjust.direct, M. P. Fay's own implementation), 3 significant figures. Data
and figures: tests/data/fay_feuer_1997_table1*.csv, each naming its source.

Tiwari, Clegg & Zou (Stat Methods Med Res 2006;15:547-569): no printed small-count table was found
(searched for SEER*Stat, CDC WONDER, asht, dsrTest and tidyepi examples with printed output;
CDC WONDER tables have national counts, where the two methods agree). The reference is the
interval as the method's definition gives it, written here from asht::wspoissonTest (M. P. Fay;
wmtype = "tcz", which "gives the Tiwari, Clegg, Zou, 2006 method") and, independently, tidyepi's
direct_adjust (section 2.1 of the paper: each of the k age groups gets 1/k more event): the upper
gamma limit for rate + mean(w) and variance + mean(w²), w the per-person weights; plus a
Monte-Carlo check of its coverage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ccdp.analyses.incidence import PER, IncidenceParams, _rate_row, gamma_ci

DATA = Path(__file__).parents[1] / "data"
AGES = ["Under 20", "20-24", "25-29", "30-34", "35-39", "40 and over"]


def table1() -> pd.DataFrame:
    return pd.read_csv(DATA / "fay_feuer_1997_table1.csv", comment="#", dtype={"birth_order": str})


def printed() -> pd.DataFrame:
    path = DATA / "fay_feuer_1997_table1_published.csv"
    return pd.read_csv(path, comment="#", dtype={"birth_order": str}).set_index("birth_order")


def standard(data: pd.DataFrame) -> pd.Series:
    """Fay & Feuer's standard: each age group's births averaged over the five birth orders."""
    return data.groupby("age_group")["births"].mean().reindex(AGES)


def sig3(x: float) -> float:
    return float(f"{x:.3g}")


def row(order: str, ci: str) -> dict:
    """ccdp's rate row for one birth order (ccdp's per-million scale turned back to per birth)."""
    data = table1()
    block = data[data["birth_order"] == order].set_index("age_group").reindex(AGES)
    params = IncidenceParams.model_validate({"ci": ci})
    out = _rate_row(
        {},
        int(block["cases"].sum()),
        [int(c) for c in block["cases"]],
        [float(b) for b in block["births"]],
        standard(data),
        params,
    )
    keys = ("crude_rate", "asr", "asr_ci_low", "asr_ci_high")
    return {k: out[k] / PER for k in keys}


def test_the_printed_standard_population_is_the_mean_over_birth_orders() -> None:
    assert standard(table1()).round(1).tolist() == [
        63986.6,
        186263.6,
        157302.2,
        97647.0,
        47572.6,
        12262.6,
    ]


@pytest.mark.parametrize("order", ["1", "2", "3", "4", "5+"])
def test_fay_feuer_rates_and_intervals_equal_the_printed_table(order: str) -> None:
    got = row(order, "fay_feuer")
    want = printed().loc[order]
    assert sig3(got["crude_rate"]) == want["crude_rate"]
    assert sig3(got["asr"]) == want["adj_rate"]
    assert sig3(got["asr_ci_low"]) == want["lci"]
    assert sig3(got["asr_ci_high"]) == want["uci"]


def test_the_printed_table_tells_the_two_methods_apart() -> None:
    """Birth orders 4 and 5+ have a sparse age group with a large weight: the printed Fay–Feuer
    upper limits (0.00115, 0.00188) are not Tiwari's, so the test above checks the method."""
    for order in ("4", "5+"):
        assert sig3(row(order, "tiwari")["asr_ci_high"]) != printed().loc[order, "uci"]


def tiwari_reference(cases: np.ndarray, pyears: np.ndarray, std: np.ndarray) -> float:
    """The Tiwari et al. upper limit as defined (see the module docstring), 95%."""
    w = std / std.sum() / pyears
    y, v = float(np.sum(w * cases)), float(np.sum(w**2 * cases))
    ys, vs = y + w.mean(), v + np.mean(w**2)
    return float(stats.gamma.ppf(0.975, ys**2 / vs, scale=vs / ys))


@pytest.mark.parametrize("order", ["1", "2", "3", "4", "5+"])
def test_tiwari_upper_limit_is_the_methods_definition(order: str) -> None:
    data = table1()
    block = data[data["birth_order"] == order].set_index("age_group").reindex(AGES)
    cases = block["cases"].to_numpy(float)
    births = block["births"].to_numpy(float)
    std = standard(data).to_numpy(float)
    want = tiwari_reference(cases, births, std)
    assert row(order, "tiwari")["asr_ci_high"] == pytest.approx(want, rel=1e-9)
    # the lower limit is Fay–Feuer's (both methods share it)
    assert row(order, "tiwari")["asr_ci_low"] == pytest.approx(
        row(order, "fay_feuer")["asr_ci_low"]
    )


@pytest.mark.parametrize("method", ["fay_feuer", "tiwari"])
def test_intervals_cover_the_true_rate_at_least_nominally(method: str) -> None:
    """Monte-Carlo: Poisson counts in four childhood age groups (Segi weights 0-14, 2,000 to
    30,000 person-years, true rates 50-250 per million: 4.5 cases expected), 2,000 draws.
    Both gamma methods are meant to keep at least nominal coverage (Fay & Feuer 1997; SEER*Stat's
    help on the Tiwari option: "also retain the nominal level"): coverage >= 0.95 less 3
    Monte-Carlo standard errors (measured: Fay–Feuer 0.988, Tiwari 0.976)."""
    rng = np.random.default_rng(2006)
    pyears = np.array([2_000.0, 8_000.0, 12_000.0, 30_000.0])
    rates = np.array([250e-6, 200e-6, 50e-6, 60e-6])
    weights = np.array([2400.0, 9600.0, 10000.0, 9000.0])
    weights /= weights.sum()
    true = float(np.sum(weights * rates))
    draws = rng.poisson(rates * pyears, size=(2000, 4)).astype(float)
    covered = 0
    for cases in draws:
        _, low, high = gamma_ci(cases, pyears, weights, 0.95, method)
        covered += low <= true <= high
    coverage = covered / len(draws)
    assert coverage >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / len(draws))
