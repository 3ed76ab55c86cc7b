"""Incidence: federated rates equal the direct method computed independently on pooled counts."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ccdp.analyses.incidence import Incidence, IncidenceParams
from ccdp.analyses.node_data import FrameData
from ccdp.cohort.view import cohort_sql
from ccdp.disclosure.policy import set_policy_value
from ccdp.errors import SpecError
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.node.local import LocalNode
from ccdp.federation.study import load_study, run_study
from ccdp.wire.protocol import Task
from tests.storekit import build_store, random_registry

# Segi (1960) world standard population, per 100,000, ages 0, 1-4, 5-9, 10-14, 15-19
SEGI = {"0": 2400, "1-4": 9600, "5-9": 10000, "10-14": 9000, "15-19": 9000}
AGES = ["0", "1-4", "5-9", "10-14"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("inc")
    return [
        build_store(d / f"{c.lower()}.duckdb", random_registry(seed, n, c, c.lower()))
        for seed, n, c in [(11, 900, "FR"), (12, 1300, "DE"), (13, 700, "IT")]
    ]


def pooled(stores) -> tuple[pd.DataFrame, pd.DataFrame]:
    views, pops = [], []
    for s in stores:
        con = duckdb.connect()
        con.execute(f"ATTACH '{s}' AS store (READ_ONLY)")
        views.append(con.execute(cohort_sql(None, "TRUE"), [s.stem]).df())
        pops.append(con.execute("SELECT * FROM store.population").df())
        con.close()
    return pd.concat(views), pd.concat(pops)


def direct_method(cases: np.ndarray, py: np.ndarray, std: np.ndarray, tiwari: bool = False):
    """Textbook direct standardisation with the Fay-Feuer gamma interval, written out."""
    w = std / std.sum()
    rate = np.sum(w * cases / py)
    var = np.sum((w / py) ** 2 * cases)
    wk = (w / py).mean() if tiwari else (w / py).max()
    wk2 = ((w / py) ** 2).mean() if tiwari else wk**2  # Tiwari: the mean squared weight
    lower = stats.gamma.ppf(0.025, rate**2 / var) * var / rate
    upper = stats.gamma.ppf(0.975, (rate + wk) ** 2 / (var + wk2)) * (var + wk2) / (rate + wk)
    return rate * 1e6, lower * 1e6, upper * 1e6


@pytest.mark.parametrize("ci", ["fay_feuer", "tiwari"])
def test_asr_by_sex_equals_pooled_direct_method(stores, ci):
    result = run_study(
        {"analysis": "incidence", "by": ["sex"], "ci": ci}, InProcessTransport(stores)
    ).result
    view, pop = pooled(stores)
    view = view[view.age_group.isin(AGES)]
    pop = pop[pop.age_group.isin(AGES)]
    for row in result.rows:
        c = view[view.sex == row["sex"]].groupby("age_group").size().reindex(AGES, fill_value=0)
        p = pop[pop.sex == row["sex"]].groupby("age_group").population.sum().reindex(AGES)
        asr, lo, hi = direct_method(
            c.to_numpy(float),
            p.to_numpy(),
            np.array([SEGI[a] for a in AGES]),
            tiwari=ci == "tiwari",
        )
        assert row["asr"] == pytest.approx(asr, rel=1e-12)
        assert (row["asr_ci_low"], row["asr_ci_high"]) == pytest.approx((lo, hi), rel=1e-10)
        n, py = int(c.sum()), float(p.sum())
        assert row["cases"] == n and row["person_years"] == pytest.approx(py)
        assert row["crude_rate"] == pytest.approx(n / py * 1e6)
        assert row["crude_ci_low"] == pytest.approx(stats.chi2.ppf(0.025, 2 * n) / 2 / py * 1e6)
        assert row["crude_ci_high"] == pytest.approx(
            stats.chi2.ppf(0.975, 2 * n + 2) / 2 / py * 1e6
        )


def test_by_group_and_sex_with_suppression(stores):
    result = run_study(
        {"analysis": "incidence", "by": ["iccc_group", "sex"], "ages": "0-19"},
        InProcessTransport(stores),
    ).result
    view, pop = pooled(stores)
    frame = result.to_frame()
    released = frame[~frame.suppressed]
    assert len(released) > 0 and frame.suppressed.any()  # rare groups are suppressed
    for row in released.to_dict("records"):
        v = view[(view.iccc_group == row["iccc_group"]) & (view.sex == row["sex"])]
        assert row["cases"] == len(v)
        py = pop[pop.sex == row["sex"]].population.sum()
        assert row["crude_rate"] == pytest.approx(len(v) / py * 1e6)


def test_cohort_restricts_denominators(stores):
    spec = {"analysis": "incidence", "cohort": {"sex": "female", "diagnosis_year": {"from": 2010}}}
    rows = run_study({**spec, "by": ["country"]}, InProcessTransport(stores)).result.rows
    assert [r["country"] for r in rows] == ["DE", "FR", "IT"]
    row = run_study(spec, InProcessTransport(stores)).result.rows[0]
    _, pop = pooled(stores)
    keep = (pop.sex == "female") & (pop.year >= 2010) & pop.age_group.isin(AGES)
    assert row["person_years"] == pytest.approx(pop[keep].population.sum())


@pytest.mark.parametrize("variable", ["age_at_diagnosis", "age_years", "diagnosis_date"])
def test_cohort_finer_than_the_denominators_is_refused(stores, variable):
    """A cohort of ages 0-4.5 would divide part of the cases by all the person-years: refused
    at the study spec, and by a node that is sent such a task directly."""
    value = {"diagnosis_date": {"from": "2010-06-01"}}.get(variable, {"from": 0, "to": 4})
    spec = {"analysis": "incidence", "cohort": {variable: value}}
    with pytest.raises(SpecError, match=f"restricts {variable}.*age_group"):
        load_study(spec)
    task = Task(task_id="t", study_id="s", round=0, analysis="incidence", cohort={variable: value})
    answer = LocalNode(stores[0]).answer(task)
    assert answer.status == "failed" and f"restricts {variable}" in answer.reason
    assert answer.summary is None


def test_frame_data_local_and_zero_cases():
    view = pd.DataFrame(
        {
            "age_group": ["1-4"] * 6,
            "country": ["FR"] * 6,
            "diagnosis_year": [2010] * 6,
            "sex": ["male"] * 6,
        }
    )
    pop = pd.DataFrame(
        {
            "country": "FR",
            "year": 2010,
            "sex": "male",
            "age_group": AGES,
            "population": [1e4, 4e4, 5e4, 5e4],
        }
    )
    inc, params = Incidence(), IncidenceParams()
    summary = inc.local(FrameData(view, pop), params, {}, {})
    row = inc.combine(params, None, {"a": summary}).result.rows[0]
    w = np.array([SEGI[a] for a in AGES], float)
    assert row["asr"] == pytest.approx(w[1] / w.sum() * 6 / 4e4 * 1e6)
    assert row["cases"] == 6


def test_node_policy_threshold_changes_suppression(stores, tmp_path):
    store = build_store(tmp_path / "small.duckdb", random_registry(4, 60, "PL", "pl"))
    spec = {"analysis": "incidence", "by": ["sex"]}
    set_policy_value(store, "min_cell", "10")
    strict = run_study(spec, InProcessTransport([store])).result
    set_policy_value(store, "min_cell", "1")
    loose = run_study(spec, InProcessTransport([store])).result
    assert any(r["asr"] is None for r in strict.rows)
    assert all(r["asr"] is not None for r in loose.rows)


def test_by_period_uses_population_of_those_years(stores):
    res = run_study(
        {"analysis": "incidence", "by": ["diagnosis_period"]}, InProcessTransport(stores)
    ).result
    _, pop = pooled(stores)
    pop = pop[pop.age_group.isin(AGES)]
    assert [r["diagnosis_period"] for r in res.rows] == ["2005-2009", "2010-2014"]
    for row, (lo, hi) in zip(res.rows, [(2005, 2009), (2010, 2014)], strict=True):
        assert row["person_years"] == pytest.approx(pop[pop.year.between(lo, hi)].population.sum())


def test_the_intervals_quantiles_are_scipy_stats_own_without_importing_it():
    """The Garwood and gamma intervals take their quantiles from `scipy.special` (what
    scipy.stats computes underneath) so that the first incidence study after a start does not
    import scipy.stats (~0.8 s): equal to scipy.stats on a grid, NaN where it gives NaN."""
    import subprocess
    import sys

    from ccdp.analyses.incidence import gamma_ppf, poisson_ci

    for cases in (0, 1, 2, 3.5, 7, 40, 1234, 1e6):
        for level in (0.8, 0.9, 0.95, 0.99, 0.999):
            alpha = 1 - level
            low = 0.0 if cases == 0 else stats.chi2.ppf(alpha / 2, 2 * cases) / 2
            high = stats.chi2.ppf(1 - alpha / 2, 2 * cases + 2) / 2
            assert poisson_ci(cases, level) == pytest.approx((low, high), rel=1e-12, abs=0)
    for q in (1e-9, 0.025, 0.5, 0.975, 1 - 1e-9):
        for shape in (1e-3, 0.5, 1.0, 17.3, 4e4):
            for scale in (1e-6, 0.3, 1.0, 250.0):
                want = stats.gamma.ppf(q, shape, scale=scale)
                assert gamma_ppf(q, shape, scale) == pytest.approx(want, rel=1e-12)
    for shape, scale in ((0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (1.0, -2.0), (np.nan, 1.0)):
        with np.errstate(invalid="ignore"):  # scipy.stats's own arithmetic on a bad scale
            assert np.isnan(stats.gamma.ppf(0.5, shape, scale=scale))
        assert np.isnan(gamma_ppf(0.5, shape, scale))
    code = (
        "import sys; from ccdp.analyses.incidence import poisson_ci; poisson_ci(3, 0.95); "
        "print('scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
