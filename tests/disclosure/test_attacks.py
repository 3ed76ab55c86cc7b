"""The attack suite: a determined researcher with ordinary specs tries to learn one child's data.

Every study goes through a real node (`LocalNode` over a DuckDB store, the code behind the node
agent). The attacker keeps everything the node ever released; an independent oracle, which knows
the store, then checks that nothing released, alone or together with all earlier releases, pins
down a count between 1 and min_cell - 1 or names a patient:

* every released count is 0 or at least min_cell (cells, margins, totals, event-time rows);
* no two released counts are of nested sets that differ by 1 to min_cell - 1 records (the
  difference of the two answers would describe those few children), in the same unit or across
  units (a tumour count and a patient count of the same patients differ by their second tumours);
* refusals and errors quote no identifier, stored date or level.

Specs are drawn by hypothesis (cohorts cut by a few days of diagnosis date, by lists of
categorical variables, both units), besides the targeted attacks named in issue 10.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccdp.cohort.spec import CohortSpec
from ccdp.errors import CcdpError, SpecError
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.node.local import LocalNode
from ccdp.federation.study import load_study, run_study
from ccdp.wire.protocol import Answer, Task
from tests.storekit import EXACT_YAML, build_store, random_registry

MIN_CELL = 5
BY_CHOICES = ["sex", "iccc_group", "age_group", "vital_status", "immunophenotype", "arm"]


def registry_with_second_tumours(seed: int, n: int, prefix: str) -> dict[str, list[dict]]:
    """A random registry where about one patient in twelve has a second tumour."""
    rows = random_registry(seed, n, "FR", prefix)
    rng = np.random.default_rng(seed + 100)
    extra = []
    for t in rows["tumour"]:
        if rng.random() < 1 / 12:
            extra.append(
                {
                    **t,
                    "tumour_id": t["tumour_id"] + "b",
                    "diagnosis_date": t["diagnosis_date"]
                    + timedelta(days=int(rng.integers(30, 900))),
                    "iccc_group": str(rng.choice(["I", "II", "III"])),
                }
            )
    rows["tumour"] = rows["tumour"] + extra
    return rows


class Oracle:
    """Everything the node released, with the record sets the oracle knows they count."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.truth = node.read_view(None, CohortSpec())
        self.rows = {t: i for i, t in enumerate(self.truth.tumour_id)}
        self.patients = {p: i for i, p in enumerate(sorted(set(self.truth.patient_id)))}
        self.released: dict[str, list[np.ndarray]] = {"tumours": [], "patients": []}
        self.values: dict[str, list[int]] = {"tumours": [], "patients": []}
        self.origin: dict[str, list[str]] = {"tumours": [], "patients": []}
        self.reasons: list[tuple[str, str]] = []
        self.i = 0

    def ask(self, analysis: str, cohort: dict | None = None, **params: Any) -> Answer:
        """The first round of a study (the describe step of a model)."""
        self.i += 1
        models = ("cox", "logistic", "poisson")
        task = Task(
            task_id=f"a{self.i}",
            study_id=f"attack{self.i}",
            round=0,
            analysis=analysis,
            params=params,
            cohort=cohort,
            request={"step": "describe"} if analysis in models else {},
        )
        answer = self.node.answer(task)
        if answer.reason:
            self.reasons.append((answer.reason, task.model_dump_json()))
        if answer.status == "answered" and analysis in ("count", "crosstab"):
            self._learn_counts(answer, cohort, params.get("unit", "tumours"))
        return answer

    def _learn_counts(self, answer: Answer, cohort: dict | None, unit: str) -> None:
        frame = self.node.read_view(None, CohortSpec.load(cohort))
        assert answer.summary is not None
        for part in answer.summary.values():
            for cell in part["cells"]:
                n = cell.get("n")
                if n is None:
                    continue
                dims = part["dims"]
                mask = np.ones(len(frame), dtype=bool)
                for d in dims:
                    col = frame[d].astype(object).where(frame[d].notna(), None)
                    mask &= (col == cell[d]).to_numpy() | (col.isna() & (cell[d] is None))
                chosen = frame[mask]
                if unit == "tumours":
                    members = np.zeros(len(self.rows), dtype=bool)
                    members[[self.rows[t] for t in chosen.tumour_id]] = True
                else:
                    members = np.zeros(len(self.patients), dtype=bool)
                    members[[self.patients[p] for p in set(chosen.patient_id)]] = True
                assert int(members.sum()) == n, "the node released a count the oracle disputes"
                self.released[unit].append(members)
                self.values[unit].append(n)
                self.origin[unit].append(f"{cohort} {dims} {cell}")

    # -- the checks ---------------------------------------------------------------------------
    def assert_nothing_pinned(self) -> None:
        for unit in ("tumours", "patients"):
            values = np.array(self.values[unit])
            assert not ((values > 0) & (values < MIN_CELL)).any(), f"small {unit} count released"
            if not self.released[unit]:
                continue
            m = np.array(self.released[unit], dtype=np.int32)
            inter = m @ m.T
            size = m.sum(axis=1)
            # B inside A (inter == |B|) with |A \\ B| = |A| - |B| in 1..min_cell-1
            nested = inter == size[None, :]
            diff = size[:, None] - size[None, :]
            bad = nested & (diff > 0) & (diff < MIN_CELL)
            pairs = [(int(i), int(j), int(diff[i, j])) for i, j in np.argwhere(bad)][:3]
            where = [(self.origin[unit][i], self.origin[unit][j]) for i, j, _ in pairs]
            assert not pairs, f"released {unit} counts differ by a few nested records: {where}"
        self._assert_units_apart()
        self.assert_reasons_clean()

    def _assert_units_apart(self) -> None:
        """A tumour count and a patient count of the same patients must not differ by 1..4."""
        if not (self.released["tumours"] and self.released["patients"]):
            return
        owner = np.array([self.patients[p] for p in self.truth.patient_id])
        for t_mask, t_n in zip(self.released["tumours"], self.values["tumours"], strict=True):
            pats = np.zeros(len(self.patients), dtype=bool)
            pats[owner[t_mask]] = True
            for p_mask, p_n in zip(self.released["patients"], self.values["patients"], strict=True):
                if (p_mask == pats).all():
                    assert not 0 < t_n - p_n < MIN_CELL, "second tumours pinned down"

    def assert_reasons_clean(self) -> None:
        """No reason quotes an identifier, a stored date or an undeclared level."""
        dates = {str(d)[:10] for d in self.truth.diagnosis_date} | {
            str(d)[:10] for d in self.truth.first_relapse_date.dropna()
        }
        ids = set(self.truth.patient_id) | set(self.truth.tumour_id)
        for reason, request in self.reasons:  # what the request itself said may be echoed
            for token in re.findall(r"[\w-]+", reason):
                assert token not in ids or token in request, f"identifier in {reason!r}"
            for d in re.findall(r"\d{4}-\d{2}-\d{2}", reason):
                assert d not in dates or d in request, f"stored date in {reason!r}"
            assert not re.search(r"\b[1-4] (patient|record|tumour|subject)", reason), reason


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> LocalNode:
    path = tmp_path_factory.mktemp("attack") / "FR.duckdb"
    build_store(path, registry_with_second_tumours(11, 420, "FR"))
    return LocalNode(path)


@pytest.fixture(scope="module")
def oracle(node: LocalNode) -> Oracle:
    return Oracle(node)


# -- targeted attacks of issue 10 ---------------------------------------------------------------
def test_two_counts_a_few_days_apart_give_no_small_difference(oracle: Oracle) -> None:
    """Item 1: cohorts that differ by a few days of diagnosis_date."""
    dates = sorted(oracle.truth.diagnosis_date)
    cut = pd.Timestamp(dates[len(dates) // 2]).date()
    by = ["sex", "vital_status", "iccc_group"]
    first = oracle.ask("count", {"diagnosis_date": {"to": str(cut)}}, by=by)
    for days in (1, 2, 3, 5, 8):
        earlier = str(cut - timedelta(days=days))
        oracle.ask("count", {"diagnosis_date": {"to": earlier}}, by=by)
    assert first.status == "answered"
    oracle.assert_nothing_pinned()


def test_a_second_tumour_of_a_patient_in_the_cohort_is_not_counted_apart(oracle: Oracle) -> None:
    second = oracle.truth[oracle.truth.tumour_seq == 2].iloc[0]
    day = pd.Timestamp(second.diagnosis_date).date()
    oracle.ask("count", {"diagnosis_date": {"to": str(day)}})
    oracle.ask("count", {"diagnosis_date": {"to": str(day - timedelta(days=1))}})
    oracle.ask("count", {"diagnosis_date": {"to": str(day)}}, unit="patients")
    oracle.assert_nothing_pinned()


def test_the_differencing_refusal_does_not_say_by_how_much(oracle: Oracle) -> None:
    answer = oracle.ask("count", {"diagnosis_year": {"from": 2006}}, by=["sex"])
    # leave out the two tumours with the highest white cell counts
    cut = float(oracle.truth.wbc_at_diagnosis.sort_values().iloc[-3])
    again = oracle.ask(
        "count", {"diagnosis_year": {"from": 2006}, "wbc_at_diagnosis": {"to": cut}}, by=["sex"]
    )
    assert answer.status == again.status == "answered"
    assert not re.search(r"\d+ (patient|record)", again.reason or "")
    oracle.assert_nothing_pinned()


@pytest.mark.parametrize(
    "by", [["diagnosis_date", "sex", "os_time"], ["patient_id"], ["age_at_diagnosis"]]
)
def test_dates_times_numbers_and_identifiers_cannot_label_cells(by: list[str]) -> None:
    """Item 2: refused at the spec, at the hub and again at the node, before any data is read."""
    with pytest.raises(SpecError):
        load_study({"analysis": "count", "by": by})


def test_labels_of_undeclared_levels_never_name_a_suppressed_cell(oracle: Oracle) -> None:
    answer = oracle.ask("count", {"iccc_group": ["V", "VI"]}, by=["arm", "sex"])
    assert answer.status == "answered" and answer.summary is not None
    withheld = 0
    for part in answer.summary.values():
        withheld += part["withheld"]
        for cell in part["cells"]:
            if cell.get("n") is None:
                assert "arm" not in part["dims"], "a withheld arm cell was listed with its label"
    assert withheld > 0, "the fixture must have rare arms"
    oracle.assert_nothing_pinned()
    # the pooled result says its cells are lower bounds, rather than passing them off as totals
    spec = {"analysis": "count", "by": ["arm", "sex"], "cohort": {"iccc_group": ["V", "VI"]}}
    result = run_study(spec, InProcessTransport([oracle.node.store])).result
    assert result.unlisted_cells > 0 and "lower bounds" in str(result.__rich__().title)


def test_a_one_patient_cohort_describes_nobody(oracle: Oracle) -> None:
    day = str(pd.Timestamp(oracle.truth.diagnosis_date.iloc[0]).date())
    cohort = {"diagnosis_date": {"from": day, "to": day}}
    for analysis, params in [
        ("count", {"by": ["sex", "vital_status"]}),
        ("km", {"outcome": "os"}),
        ("cox", {"covariates": ["sex"], "strata": "none"}),
        ("logistic", {"outcome": "os", "covariates": ["sex"]}),
    ]:
        answer = oracle.ask(analysis, cohort, **params)
        assert answer.status != "answered" or _all_counts_large(answer), (analysis, answer)
    oracle.assert_reasons_clean()


def _all_counts_large(answer: Answer) -> bool:
    assert answer.summary is not None
    for part in answer.summary.values():
        for cell in part.get("cells", []):
            n = cell.get("n")
            if n is not None and 0 < n < MIN_CELL:
                return False
    return True


def test_event_time_rows_each_describe_min_cell_subjects(oracle: Oracle) -> None:
    """Item 3: KM/log-rank tables and unstratified Cox risk sets."""
    km = oracle.ask("km", {"iccc_group": ["I", "II"]}, outcome="os", by=["sex"])
    assert km.status == "answered", km.reason
    assert km.summary is not None
    cols = km.summary["events"]["columns"]
    leaving = np.asarray(cols["events"]) + np.asarray(cols["censored"])
    assert (leaving >= MIN_CELL).all()
    # a group of n subjects gives at most n / min_cell rows: no row per child
    sizes = km.summary["events"]["group_sizes"]
    for group, n in sizes.items():
        assert sum(g == group for g in cols["group"]) <= n // MIN_CELL
    cox = oracle.ask(
        "cox", {"iccc_group": ["I", "II"]}, covariates=["sex"], strata="none", outcome="os"
    )
    assert cox.status == "answered", cox.reason


def test_unstratified_cox_risk_sets_never_isolate_a_patient(tmp_path: Path) -> None:
    """Successive risk sets of one-subject rows would each differ by one person. (A fresh node:
    after the attacks above, the node may rightly refuse this table as too close to them.)"""
    node = LocalNode(
        build_store(tmp_path / "FR.duckdb", registry_with_second_tumours(11, 420, "FR"))
    )
    from ccdp.analyses import registry
    from ccdp.wire.summary import Summary

    cox = registry.get("cox")
    params = cox.params_model.model_validate(
        {"covariates": ["sex", "wbc_at_diagnosis"], "strata": "none"}
    )
    study = "cox-risk"
    first = node.answer(
        Task(
            task_id=study + "0",
            study_id=study,
            round=0,
            analysis="cox",
            params=params.model_dump(mode="json"),
            request={"step": "describe"},
        )
    )
    assert first.status == "answered", first.reason
    design = cox.combine(params, None, {"FR": Summary.from_dict(first.summary)}).request["design"]
    fit = node.answer(
        Task(
            task_id=study + "1",
            study_id=study,
            round=1,
            analysis="cox",
            params=params.model_dump(mode="json"),
            request={"step": "fit", "design": design, "beta": [0.0] * len(design["terms"])},
        )
    )
    assert fit.status == "answered", fit.reason
    risk = Summary.from_dict(fit.summary).parts["risk_sets"]
    subjects = risk.columns["a"][:, 0]  # at beta = 0 the first moment counts the row's subjects
    assert (subjects >= MIN_CELL).all()


# -- models (item 4) --------------------------------------------------------------------------
def test_a_level_held_by_one_patient_is_refused_whatever_max_iter(oracle: Oracle) -> None:
    cohort = {"diagnosis_year": [2005]}
    frame = oracle.node.read_view(["iccc_group"], CohortSpec.load(cohort))
    rare = frame.groupby("iccc_group").size()
    level = rare.idxmin()
    assert rare.min() < MIN_CELL, "the cohort needs a rare ICCC group"
    for max_iter in (1, 2, 50):
        answer = oracle.ask(
            "logistic", cohort, outcome="os", covariates=["iccc_group"], max_iter=max_iter
        )
        assert answer.status == "refused", answer
        assert "iccc_group" in answer.reason and level not in answer.reason.split(":")[-1]


def test_over_parameterised_models_of_every_form_are_refused(tmp_path: Path) -> None:
    """At most n/3 parameters, for unstratified Cox as for node-stratified Cox and GLMs."""
    store = build_store(tmp_path / "FR.duckdb", random_registry(3, 60, "FR", "fr"))
    # let the parameter rule speak
    (tmp_path / "FR.policy.yaml").write_text(EXACT_YAML + "min_cohort: 4\n")
    covariates = ["age_at_diagnosis", "age_years", "wbc_at_diagnosis"]
    cohort = {"age_at_diagnosis": {"to": 2}}
    for spec in (
        {"analysis": "cox", "covariates": covariates, "strata": "none"},
        {"analysis": "cox", "covariates": covariates},
        {"analysis": "logistic", "outcome": "os", "covariates": covariates},
    ):
        res = run_study({**spec, "cohort": cohort}, InProcessTransport([store]))
        assert res.result is None, spec
        assert res.nodes["FR"].status == "refused" and "more parameters" in res.nodes["FR"].reason


def test_coordinator_errors_list_only_declared_levels(network: list[Path]) -> None:
    with pytest.raises(CcdpError) as err:
        run_study(
            {"analysis": "cox", "covariates": ["arm"], "reference": {"arm": "nope"}},
            InProcessTransport(network),
        )
    assert "is not a level of arm" in str(err.value) and "levels:" not in str(err.value)


@pytest.mark.parametrize(
    "spec",
    [
        {"analysis": "cox", "covariates": ["diagnosis_date"]},
        {"analysis": "cox", "covariates": ["patient_id"]},
        {"analysis": "km", "by": ["tumour_id"]},
        {"analysis": "logistic", "outcome": "patient_id"},
        {"analysis": "logrank", "by": ["diagnosis_date"]},
        {"analysis": "cox", "covariates": ["sex"], "strata": ["tumour_id"]},
    ],
)
def test_identifiers_and_dates_are_refused_before_any_node_reads_data(spec: dict) -> None:
    """Item 5: at the hub (spec validation) and at the node (the same models)."""
    with pytest.raises(SpecError) as err:
        load_study(spec)
    assert "P0" not in str(err.value)


def test_a_node_given_an_identifier_spec_refuses_and_quotes_no_value(oracle: Oracle) -> None:
    for analysis, params in [
        ("km", {"by": ["patient_id"]}),
        ("cox", {"covariates": ["tumour_id"]}),
        ("cox", {"covariates": ["diagnosis_date"]}),
    ]:
        answer = oracle.ask(analysis, None, **params)
        assert answer.status in ("failed", "refused")
    oracle.assert_reasons_clean()


# -- random attacks ---------------------------------------------------------------------------
DAY = st.integers(min_value=0, max_value=3650)


@st.composite
def count_specs(draw: st.DrawFn) -> tuple[dict, dict]:
    start = date(2005, 1, 1) + timedelta(days=draw(DAY))
    cohort: dict[str, Any] = {}
    if draw(st.booleans()):
        cohort["diagnosis_date"] = {"to": str(start)}
    else:
        cohort["diagnosis_date"] = {"from": str(start)}
    if draw(st.booleans()):
        cohort["iccc_group"] = draw(
            st.lists(st.sampled_from(["I", "II", "III", "IV", "V", "VI"]), min_size=1, unique=True)
        )
    by = draw(st.lists(st.sampled_from(BY_CHOICES), max_size=3, unique=True))
    unit = draw(st.sampled_from(["tumours", "patients"]))
    analysis = "crosstab" if by and draw(st.booleans()) else "count"
    return cohort, {"analysis": analysis, "by": by, "unit": unit}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(count_specs(), min_size=2, max_size=4))
def test_random_differencing_attacks_pin_down_nothing(oracle: Oracle, specs: list) -> None:
    for cohort, spec in specs:
        analysis = spec.pop("analysis")
        oracle.ask(analysis, cohort, **spec)
        # shift the cut by a day or two: the classic differencing pair
        shifted = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cohort.items()}
        for end in shifted["diagnosis_date"]:
            d = date.fromisoformat(shifted["diagnosis_date"][end]) + timedelta(days=1)
            shifted["diagnosis_date"][end] = str(d)
        oracle.ask(analysis, shifted, **spec)
    oracle.assert_nothing_pinned()


# -- ordinary work is still answered ------------------------------------------------------------
@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("network")
    return [
        build_store(folder / f"{c}.duckdb", random_registry(i, 900, c, c))
        for i, c in enumerate(["FR", "DE", "IT"])
    ]


def test_feasibility_counts_by_group_and_country_are_answered(network: list[Path]) -> None:
    res = run_study(
        {"analysis": "count", "by": ["iccc_group", "country"]}, InProcessTransport(network)
    )
    assert all(s.status == "answered" for s in res.nodes.values())
    released = [c for c in res.result.cells if c["n"] is not None]
    assert res.result.total == 2700 and len(released) >= 12


def test_os_curves_by_group_are_answered(network: list[Path]) -> None:
    res = run_study(
        {"analysis": "km", "outcome": "os", "by": ["iccc_group"]}, InProcessTransport(network)
    )
    assert all(s.status == "answered" for s in res.nodes.values()), res.nodes
    assert {g.group for g in res.result.groups} >= {"I", "II", "III"}
    for g in res.result.groups:
        assert all(r.at_risk >= MIN_CELL for r in g.table)
