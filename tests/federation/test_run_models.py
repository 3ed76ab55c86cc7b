"""The survival and regression analyses run end to end over real node stores (cohort view, node
policy and disclosure included) and equal the pooled references on the same view rows."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines.statistics import multivariate_logrank_test

from ccdp.cohort.view import cohort_sql
from ccdp.errors import SpecError
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import run_study
from ccdp.wire.protocol import Answer, Task
from tests.analyses.federate import grouped
from tests.analyses.references import dummies, lifelines_cox, with_node
from tests.analyses.test_km import check_against_lifelines
from tests.storekit import EXACT_YAML, build_store, random_registry

SIZES = {"fr": (11, 300, "FR"), "de": (12, 450, "DE"), "it": (13, 200, "IT")}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stores")
    stores = [
        build_store(tmp / f"{n}.duckdb", random_registry(seed, size, c, n))
        for n, (seed, size, c) in SIZES.items()
    ]
    for s in stores:  # exactness, not differencing, is checked here: no ledger-driven merges
        s.with_name(f"{s.stem}.policy.yaml").write_text(EXACT_YAML + "differencing_threshold: 0\n")
    return stores


@pytest.fixture(scope="module")
def frames(stores) -> list[pd.DataFrame]:
    out = []
    for s in stores:
        con = duckdb.connect()
        con.execute(f"ATTACH '{s}' AS store (READ_ONLY)")
        out.append(con.execute(cohort_sql(None, "TRUE"), [s.stem]).df())
        con.close()
    return out


def run(spec: dict, stores):
    result = run_study(spec, InProcessTransport(stores))
    assert {n: s.status for n, s in result.nodes.items()} == dict.fromkeys(SIZES, "answered")
    return result.result


def test_km_and_logrank_equal_lifelines(stores, frames) -> None:
    # each node groups its event times (intervals of >= min_cell subjects, released as intervals):
    # the counts equal lifelines' on the interval ends and the curve is the life table
    # (tests/analyses/test_km.py says what is exact where several nodes grouped differently)
    pooled = grouped(frames, ["sex"])
    km = run({"analysis": "km", "outcome": "os", "by": ["sex"]}, stores)
    check_against_lifelines(km, pooled, "sex")
    lr = run({"analysis": "logrank", "outcome": "os", "by": ["sex"]}, stores)
    ref = multivariate_logrank_test(pooled["os_time"], pooled["sex"], pooled["os_event"])
    assert lr.chi2 == pytest.approx(ref.test_statistic, rel=1e-9)


@pytest.mark.parametrize("strata", ["none", "node"])
def test_cox_equals_lifelines(stores, frames, strata: str) -> None:
    cov = ["sex", "wbc_at_diagnosis", "age_at_diagnosis"]
    spec = {"analysis": "cox", "outcome": "os", "covariates": cov, "strata": strata}
    result = run(spec, stores)
    parts = [f.dropna(subset=["os_time", "os_event", *cov]) for f in frames]
    if strata == "none":  # risk-set tables are sent on grouped times; node strata stay exact
        parts = [grouped([p], []) for p in parts]
    pooled = with_node(parts)
    cph = lifelines_cox(pooled, cov, strata=["node"] if strata == "node" else None)
    assert [c.term for c in result.coefficients] == list(cph.params_.index)
    np.testing.assert_allclose(
        [c.coef for c in result.coefficients], cph.params_, rtol=1e-7, atol=1e-9
    )
    np.testing.assert_allclose(
        [c.se for c in result.coefficients], cph.standard_errors_, rtol=1e-7, atol=1e-9
    )
    assert result.loglik == pytest.approx(cph.log_likelihood_, abs=1e-7)
    assert result.n == len(pooled)


class RecordingTransport(InProcessTransport):
    """In-process nodes; keeps every answer as the coordinator received it."""

    def __init__(self, stores) -> None:
        super().__init__(stores)
        self.received: list[tuple[str, Answer]] = []

    def ask(self, task: Task, nodes: list[str]) -> dict[str, Answer]:
        answers = super().ask(task, nodes)
        self.received += list(answers.items())
        return answers


def test_node_log_records_exactly_the_risk_set_sums_that_left(stores) -> None:
    transport = RecordingTransport(stores)
    spec = {"analysis": "cox", "covariates": ["age_at_diagnosis", "sex"], "strata": "none"}
    assert run_study(spec, transport).result is not None
    logs = {n: transport.node(n).audit.records() for n in transport.nodes()}
    fits = [(n, a) for n, a in transport.received if a.summary and "risk_sets" in a.summary]
    assert len(fits) >= 3 * len(stores)  # every node, every Newton round
    for node, answer in fits:
        logged = [r["summary"] for r in logs[node] if r["task_id"] == answer.task_id]
        assert logged == [answer.summary]
        a = answer.summary["risk_sets"]["columns"]["a"]
        assert a["encoding"] == "float64-le-base64" and a["shape"][1] == 6  # w, w·x, w·xxᵀ


def test_logistic_and_poisson_equal_statsmodels(stores, frames) -> None:
    cov = ["sex", "wbc_at_diagnosis"]
    pooled = pd.concat(frames, ignore_index=True).dropna(subset=["os_time", "os_event", *cov])
    x = sm.add_constant(dummies(pooled, cov))
    logit = run({"analysis": "logistic", "outcome": "os_event", "covariates": cov}, stores)
    ref = sm.GLM(pooled["os_event"], x, family=sm.families.Binomial()).fit(tol=1e-13)
    np.testing.assert_allclose([c.coef for c in logit.coefficients], ref.params, rtol=1e-8)
    assert logit.deviance == pytest.approx(ref.deviance, rel=1e-10)
    pois = run({"analysis": "poisson", "outcome": "os", "covariates": cov}, stores)
    pooled = pooled[pooled["os_time"] > 0]
    x = sm.add_constant(dummies(pooled, cov))
    ref = sm.GLM(
        pooled["os_event"], x, family=sm.families.Poisson(), offset=np.log(pooled["os_time"])
    ).fit(tol=1e-13)
    np.testing.assert_allclose([c.coef for c in pois.coefficients], ref.params, rtol=1e-8)
    np.testing.assert_allclose([c.se for c in pois.coefficients], ref.bse, rtol=1e-8)


def test_unknown_covariate_is_refused_at_the_hub_and_again_at_every_node(stores) -> None:
    with pytest.raises(SpecError, match="did you mean 'sex'"):
        run_study({"analysis": "cox", "covariates": ["sexx"]}, InProcessTransport(stores))
    transport = InProcessTransport(stores)
    task = Task(task_id="t", study_id="s", round=0, analysis="cox", params={"covariates": ["sexx"]})
    for name in transport.nodes():  # a hub that skipped its check still gets a refusal
        answer = transport.node(name).answer(task)
        assert answer.status == "failed" and "sexx" in answer.reason


def test_small_node_refuses_cox_and_the_others_still_answer(stores, frames, tmp_path) -> None:
    tiny = build_store(tmp_path / "mt.duckdb", random_registry(99, 6, "MT", "mt"))
    result = run_study(
        {"analysis": "cox", "covariates": ["sex", "wbc_at_diagnosis"], "min_nodes": len(stores)},
        InProcessTransport([*stores, tiny]),
    )
    assert result.nodes["mt"].status == "refused"
    assert "minimum cohort size" in result.nodes["mt"].reason
    assert result.result.n == sum(
        len(f.dropna(subset=["os_time", "os_event", "sex", "wbc_at_diagnosis"])) for f in frames
    )
