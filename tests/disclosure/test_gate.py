"""Attacks that try to learn one patient through the analyses are suppressed or refused."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

import duckdb
import numpy as np
import pytest

from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.gate import release
from ccdp.disclosure.policy import NodePolicy, load_policy
from ccdp.disclosure.refusals import Refusal
from ccdp.disclosure.suppress import suppress
from ccdp.federation.node.local import LocalNode
from ccdp.federation.node.policy import set_policy_value
from ccdp.wire.protocol import Task
from ccdp.wire.records import Records
from ccdp.wire.summary import AggregatePart, CountsPart, EventTimesPart, Summary
from tests.storekit import EXACT, EXACT_YAML, build_store, random_registry


def recoverable(cells: list[dict], dims: list[str], margins_public=True) -> list[tuple]:
    """Cells an attacker can pin down from released cells plus every row/column/layer sum:
    an independent check by linear algebra (rank test per suppressed cell)."""
    levels = [sorted({c[d] for c in cells}) for d in dims]
    grid = list(itertools.product(*levels))
    value = {tuple(c[d] for d in dims): c["n"] for c in cells}
    unknown = [g for g in grid if value.get(g, 0) is None]
    rows = []
    for ax in range(len(dims)):
        others = [i for i in range(len(dims)) if i != ax]
        for key in {tuple(g[i] for i in others) for g in grid}:
            rows.append([1.0 if tuple(u[i] for i in others) == key else 0.0 for u in unknown])
    mat = np.array([r for r in rows if any(r)]) if rows else np.zeros((0, len(unknown)))
    rank = np.linalg.matrix_rank(mat) if mat.size else 0
    out = []
    for i, u in enumerate(unknown):
        e = np.zeros(len(unknown))
        e[i] = 1
        if mat.size and np.linalg.matrix_rank(np.vstack([mat, e])) == rank:
            out.append(u)
    return out


def test_single_small_cell_gets_a_complement():
    part = CountsPart(
        dims=["sex"], counts=["n"], cells=[{"sex": "f", "n": 3}, {"sex": "m", "n": 120}]
    )
    out, report = suppress({"c": part}, 5)
    assert [c["n"] for c in out["c"].cells] == [None, None]
    assert report.secondary["c"] == 1


def test_crosstab_margins_do_not_give_away_a_suppressed_cell():
    rng = np.random.default_rng(7)
    cells = [
        {"a": a, "b": b, "n": int(rng.choice([1, 2, 3, 9, 15, 40]))}
        for a in range(4)
        for b in range(3)
    ]
    part = CountsPart(dims=["a", "b"], counts=["n"], cells=cells)
    out, report = suppress({"c": part}, 5)
    released = out["c"].cells
    assert report.primary["c"] > 0
    assert all(
        c["n"] is None
        for c in released
        if 0 < next(x["n"] for x in cells if (x["a"], x["b"]) == (c["a"], c["b"])) < 5
    )
    assert recoverable(released, ["a", "b"]) == []


@pytest.mark.parametrize("seed", range(4))
def test_three_way_tables_are_protected(seed):
    rng = np.random.default_rng(seed)
    cells = [
        {"a": a, "b": b, "c": c, "n": int(rng.choice([0, 2, 8, 20, 30]))}
        for a in range(3)
        for b in range(3)
        for c in range(2)
    ]
    out, _ = suppress({"t": CountsPart(dims=["a", "b", "c"], counts=["n"], cells=cells)}, 5)
    assert recoverable(out["t"].cells, ["a", "b", "c"]) == []


def test_shared_margin_parts_are_protected_together():
    cells = CountsPart(
        dims=["g"],
        counts=["n"],
        cells=[{"g": "x", "n": 2}, {"g": "y", "n": 50}, {"g": "z", "n": 60}],
    )
    total = CountsPart(dims=[], counts=["n"], cells=[{"n": 112}])
    out, _ = suppress({"cells": cells, "total": total}, 5)
    hidden = [c["g"] for c in out["cells"].cells if c["n"] is None]
    assert len(hidden) == 2 and "x" in hidden


def test_zero_policy_is_explicit():
    part = CountsPart(
        dims=["g"],
        counts=["n"],
        cells=[{"g": "x", "n": 0}, {"g": "y", "n": 50}, {"g": "z", "n": 60}],
    )
    released, _ = suppress({"p": part}, 5, "release")
    assert [c["n"] for c in released["p"].cells] == [0, 50, 60]
    hidden, _ = suppress({"p": part}, 5, "suppress")
    assert [c["n"] for c in hidden["p"].cells].count(None) == 2


def model(n: int, n_params: int, levels: dict | None = None, **values) -> Summary:
    keys = np.arange(1, n + 1, dtype=np.uint64)
    part = AggregatePart(
        n=n, n_params=n_params, values=values, records=Records.single(keys), levels=levels
    )
    return Summary({"m": part})


def test_models_need_a_cohort_few_parameters_and_stated_levels():
    ctx = DisclosureContext(NodePolicy())
    with pytest.raises(Refusal, match="minimum cohort size") as small:
        release(model(1, 1, {}), ctx)
    assert "1 " not in str(small.value).replace("(10)", "")  # the count itself is not said
    with pytest.raises(Refusal, match="more parameters"):
        release(model(30, 30, {}), ctx)
    with pytest.raises(Refusal, match="does not declare"):
        release(model(30, 3, None), ctx)
    with pytest.raises(Refusal, match="sex: a level of this term") as rare:
        release(model(30, 3, {"sex": [27, 3]}), ctx)
    assert "27" not in str(rare.value) and "3 " not in str(rare.value)
    ok = release(model(30, 10, {"sex": [15, 15]}, g=[1]), ctx)
    assert ok.summary.parts["m"].values == {"g": [1]}


def test_event_time_rules():
    columns = {
        "group": ["a", "b", "b"],
        "time": [1.0, 2.0, 3.0],
        "events": [1, 3, 2],
        "censored": [2, 17, 18],
    }
    rows = np.repeat([0, 1, 2], [3, 20, 20])
    records = Records(np.arange(1, 44, dtype=np.uint64), rows)
    part = EventTimesPart(
        group_by=["arm"], columns=columns, group_sizes={"a": 3, "b": 40}, records=records
    )
    checked = release(Summary({"e": part}), DisclosureContext(NodePolicy()))
    assert checked.summary.parts["e"].group_sizes == {"b": 40}
    assert checked.summary.to_dict()["e"]["columns"] == {
        "group": ["b", "b"],
        "time": [2.0, 3.0],
        "events": [3, 2],
        "censored": [17, 18],
    }
    assert checked.notes == ["e: 1 group(s) of fewer than 5 subjects withheld"]  # no label
    with pytest.raises(Refusal, match="month grid"):
        release(Summary({"e": part}), DisclosureContext(NodePolicy(event_times="month")))
    with pytest.raises(Refusal, match="does not release event-time"):
        release(Summary({"e": part}), DisclosureContext(NodePolicy(event_times="forbid")))
    thin = EventTimesPart(
        group_by=["arm"],
        columns={"group": ["b", "b"], "time": [2.0, 3.0], "events": [1, 0], "censored": [2, 37]},
        group_sizes={"b": 40},
        records=Records(np.arange(1, 41, dtype=np.uint64), np.repeat([0, 1], [3, 37])),
    )
    with pytest.raises(Refusal, match="fewer than 5 subjects"):
        release(Summary({"e": thin}), DisclosureContext(NodePolicy()))


@pytest.fixture
def store(tmp_path):
    return build_store(tmp_path / "node.duckdb", random_registry(5, 200, "FR", "n"))


def _task(i: int, **kw) -> Task:
    return Task(task_id=f"t{i}", study_id=f"s{i}", round=0, analysis="count", **kw)


NEWBORN = {"age_at_diagnosis": {"to": 0.02}}  # diagnosed in the first week of life


def store_with_newborns(path, k: int):
    """The 200 random children of `store`, of whom exactly `k` were diagnosed three days after
    birth; every other child was at least 30 days old (random_registry), so NEWBORN selects
    exactly those `k`."""
    rows = random_registry(5, 200, "FR", "n")
    diagnosed = {t["patient_id"]: t["diagnosis_date"] for t in rows["tumour"]}
    for patient in rows["patient"][:k]:
        patient["birth_date"] = diagnosed[patient["patient_id"]] - timedelta(days=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    return build_store(path, rows)


def newborns_in_store(store) -> int:
    """The true size of the NEWBORN cohort, straight from the store's tables (SQL)."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        sql = (
            "SELECT count(DISTINCT p.patient_id) FROM tumour t JOIN patient p USING (patient_id) "
            "WHERE date_diff('day', p.birth_date, t.diagnosis_date) < 7"
        )
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def public(answer) -> dict:
    """What an answer tells its reader (not its task id, time or audit head)."""
    return answer.model_dump(include={"node", "status", "reason", "summary"})


@pytest.mark.parametrize("k", range(1, 5))  # 1 .. min_cell - 1 children
def test_cohort_of_one_is_refused_without_saying_its_size(tmp_path, k):
    """A cohort of 1 to min_cell - 1 real children (checked in the store by SQL and through
    the node's view): the node refuses, and nothing it releases (status, summary, reason, any
    number in the reason) depends on, equals or bounds k more tightly than the refusal of an
    empty cohort does; a cohort of min_cohort children is answered with the store's count."""
    policy = load_policy(store_with_newborns(tmp_path / "probe.duckdb", 0))
    assert (policy.min_cell, policy.min_cohort) == (5, 10)
    answers = {}
    for size in (0, k, policy.min_cohort - 1, policy.min_cohort):
        store = store_with_newborns(tmp_path / str(size) / "node.duckdb", size)
        node = LocalNode(store)
        truth = node.read_view(None, CohortSpec.load(NEWBORN))
        assert newborns_in_store(store) == truth.patient_id.nunique() == len(truth) == size
        answers[size] = node.answer(_task(1, cohort=NEWBORN, params={"by": ["sex"]}))
    ans = answers[k]
    assert ans.status == "refused" and ans.summary is None
    assert "minimum cohort size (10)" in ans.reason
    # every number in the text is the policy's threshold, none the size or near it
    numbers = {int(x) for x in re.findall(r"\d+", ans.reason)}
    assert numbers == {policy.min_cohort} and k not in numbers
    # the same answer, word for word, for no child, k children and min_cohort - 1 children
    assert public(ans) == public(answers[0]) == public(answers[policy.min_cohort - 1])
    # where something should be released, it is: min_cohort children are counted exactly
    full = answers[policy.min_cohort]
    assert full.status == "answered" and full.summary is not None
    assert full.summary["total"]["cells"][0]["n"] == policy.min_cohort
    store = tmp_path / str(policy.min_cohort) / "node.duckdb"
    by_sex = LocalNode(store).read_view(None, CohortSpec.load(NEWBORN)).groupby("sex").size()
    released = [c for c in full.summary["cells"]["cells"] if c["n"] is not None]
    for cell in released:
        assert cell["n"] == by_sex.get(cell["sex"], 0), cell
    if min(by_sex) >= policy.min_cell:
        assert len(released) == len(by_sex)


def test_differencing_by_one_patient_is_refused(store):
    node = LocalNode(store)
    first = node.answer(_task(1, cohort={"diagnosis_year": {"from": 2005}}))
    assert first.status == "answered"
    # aim the attack: a cohort that leaves out exactly the patient with the highest WBC
    cut = float(node._read(["wbc_at_diagnosis"], CohortSpec.load({})).wbc_at_diagnosis.max())
    second = node.answer(_task(2, cohort={"wbc_at_diagnosis": {"to": cut - 1e-9}}))
    assert second.status == "answered" and "differencing" in second.reason
    assert second.summary["total"]["cells"][0]["n"] is None
    # the same cohort again is not a difference
    again = node.answer(_task(3, cohort={"diagnosis_year": {"from": 2005}}))
    assert again.status == "answered"


def test_policy_file_and_defaults(store, tmp_path):
    assert load_policy(tmp_path / "none.duckdb") == NodePolicy()  # no file: the defaults
    assert load_policy(store) == NodePolicy.model_validate(EXACT)  # the tests' file
    set_policy_value(store, "min_cell", "10")
    assert load_policy(store).min_cell == 10
    from ccdp.disclosure.policy import PolicyError

    with pytest.raises(PolicyError, match="unknown policy key"):
        set_policy_value(store, "min_cells", "3")
    with pytest.raises(PolicyError, match="min_cell"):
        set_policy_value(store, "min_cell", "zero")


def test_policy_refuses_unknown_analysis_names(store):
    from ccdp.disclosure.policy import PolicyError

    with pytest.raises(PolicyError, match="unknown analyses"):
        set_policy_value(store, "allowed_analyses", "[count, cox_typo]")


def test_km_small_groups_withheld_end_to_end(tmp_path):
    from ccdp.federation.inprocess import InProcessTransport
    from ccdp.federation.study import run_study

    store = build_store(tmp_path / "k.duckdb", random_registry(9, 120, "FR", "k"))
    view = LocalNode(store).read_view(["iccc_group", "sex"], CohortSpec.load({}))
    sizes = (view.iccc_group + ", " + view.sex).value_counts()
    small = sorted(g for g, n in sizes.items() if n < 5)
    assert small, "the fixture needs a rare group"
    res = run_study(
        {"analysis": "km", "outcome": "os", "by": ["iccc_group", "sex"]},
        InProcessTransport([store]),
    )
    assert res.nodes["k"].status == "answered" and "withheld" in res.nodes["k"].reason
    groups = {g.group for g in res.result.groups}
    assert groups and not groups & set(small)


def test_model_with_as_many_parameters_as_patients_is_refused(tmp_path):
    from ccdp.federation.inprocess import InProcessTransport
    from ccdp.federation.study import run_study

    store = build_store(tmp_path / "m.duckdb", random_registry(9, 40, "FR", "m"))
    # let the parameter rule speak
    (tmp_path / "m.policy.yaml").write_text(EXACT_YAML + "min_cohort: 2\n")
    numeric = ["wbc_at_diagnosis", "age_at_diagnosis", "age_years"]
    res = run_study(
        {"analysis": "cox", "covariates": numeric, "cohort": {"age_at_diagnosis": {"to": 1.5}}},
        InProcessTransport([store]),
    )
    assert res.result is None
    assert res.nodes["m"].status == "refused" and "more parameters" in res.nodes["m"].reason
    # a categorical covariate with a rare level is refused by the level rule, naming the term
    res = run_study({"analysis": "cox", "covariates": ["iccc_group"]}, InProcessTransport([store]))
    assert res.result is None and res.nodes["m"].status == "refused"
    assert "iccc_group: a level of this term" in res.nodes["m"].reason


def test_attack_with_every_margin_query_learns_no_suppressed_cell(tmp_path):
    """The attacker runs the cross-tab and then each margin as its own query (count by row
    variable, by column variable, total) and solves the linear system of everything released."""
    from ccdp.federation.inprocess import InProcessTransport
    from ccdp.federation.study import run_study

    store = build_store(tmp_path / "a.duckdb", random_registry(21, 150, "FR", "a"))
    (tmp_path / "a.policy.yaml").write_text(EXACT_YAML + "differencing_threshold: 0\n")
    transport = InProcessTransport([store])

    def cells(by: list[str]) -> list[dict]:
        return run_study({"analysis": "count", "by": by}, transport).result.cells

    table = cells(["iccc_group", "immunophenotype"])
    suppressed = [c for c in table if c["n"] is None]
    assert suppressed, "the fixture must have small cells"
    rows, cols, total = cells(["iccc_group"]), cells(["immunophenotype"]), cells([])
    grid = [(c["iccc_group"], c["immunophenotype"]) for c in table]
    unknown = [g for g, c in zip(grid, table, strict=True) if c["n"] is None]
    eqs = []
    for margin, key in ((rows, 0), (cols, 1)):
        for m in margin:
            if m["n"] is not None:
                value = m["iccc_group" if key == 0 else "immunophenotype"]
                eqs.append([1.0 if u[key] == value else 0.0 for u in unknown])
    if total[0]["n"] is not None:
        eqs.append([1.0] * len(unknown))
    mat = np.array(eqs)
    rank = np.linalg.matrix_rank(mat)
    for i in range(len(unknown)):
        e = np.zeros(len(unknown))
        e[i] = 1
        assert np.linalg.matrix_rank(np.vstack([mat, e])) > rank, f"{unknown[i]} recoverable"


def test_an_event_table_whose_every_group_is_withheld_answers_empty():
    part = EventTimesPart(
        group_by=["arm"],
        columns={"group": ["a"], "time": [3.0], "events": [1], "censored": [2]},
        group_sizes={"a": 3},
        records=Records(np.arange(1, 4, dtype=np.uint64), np.zeros(3, dtype=np.int64)),
    )
    # min_cohort 1: the group rule speaks (under the default, the cohort of 3 is refused whole)
    checked = release(Summary({"e": part}), DisclosureContext(NodePolicy(min_cohort=1)))
    released = checked.summary.parts["e"]
    assert len(released) == 0 and released.group_sizes == {}
    with pytest.raises(Refusal, match=r"^no eligible patients, or too few to report"):
        release(Summary({"e": part}), DisclosureContext(NodePolicy()))


@pytest.mark.parametrize(
    ("analysis", "params", "request_"),
    [
        ("count", {}, {}),
        ("crosstab", {"by": ["sex"]}, {}),
        ("km", {"by": ["sex"]}, {}),
        ("cox", {"covariates": ["sex"]}, {"step": "describe"}),
        ("incidence", {"by": ["sex"]}, {}),
    ],
)
def test_no_eligible_patients_and_too_few_give_the_same_release(
    tmp_path, analysis, params, request_
):
    """An attacker who could tell a node with no eligible patients from one with a few would
    learn that a rare child exists there: both answers must be the same refusal."""
    (tmp_path / "none").mkdir()
    (tmp_path / "few").mkdir()
    none = build_store(tmp_path / "none" / "FR.duckdb", random_registry(3, 0, "FR", "a"))
    few = build_store(tmp_path / "few" / "FR.duckdb", random_registry(3, 4, "FR", "a"))
    task = Task(
        task_id="t", study_id="s", round=0, analysis=analysis, params=params, request=request_
    )
    keep = {"status", "reason", "summary", "node"}
    a_none = LocalNode(none).answer(task).model_dump(include=keep)
    a_few = LocalNode(few).answer(task).model_dump(include=keep)
    assert a_none == a_few
    assert a_none["status"] == "refused"
    assert a_none["reason"].startswith("no eligible patients, or too few to report")
