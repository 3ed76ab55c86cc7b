"""Registered studies: the canonical hash, projects that list their studies, and the node's rule
(`exact_release`): a registered study is answered exactly, anything else waits for the custodian
and nothing of it reaches the hub before the custodian decides."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.policy import NodePolicy
from ccdp.federation.hub.models import AnswerRow, ProjectRow
from ccdp.federation.hub.studies import SpecExecutor
from ccdp.federation.node.agent import NodeAgent
from ccdp.federation.node.local import LocalNode
from ccdp.federation.node.pending import PendingStore
from ccdp.federation.node.projects import (
    amendments,
    load_decisions,
    record_decision,
    registered_here,
)
from ccdp.federation.study import STUDY_KEYS, StudySpec
from ccdp.governance.projects import ProjectError, ProjectSpec, ProjectTerms, load_project
from ccdp.governance.registered import (
    NOT_RELEASED_KEYS,
    RegisteredStudyError,
    canonical_study,
    study_hash,
)
from ccdp.wire.protocol import Task
from tests.conftest import run_ccdp
from tests.federation.netutil import LiveHub, wait_until
from tests.storekit import build_store, random_registry

IN_A_YEAR = (date.today() + timedelta(days=365)).isoformat()
WINDOW = {"from": "2006-01-01", "to": "2012-12-31"}
KM = {
    "title": "Overall survival of leukaemia, 2006-2012",
    "analysis": "km",
    "outcome": "os",
    "by": ["sex"],
    "cohort": {"iccc_group": ["I"], "diagnosis_date": WINDOW},
}
COUNT = {"title": "Leukaemia by sex", "analysis": "count", "by": ["sex"]}


def h(spec: dict[str, Any]) -> str:
    s = StudySpec.model_validate(spec)
    return study_hash(s.analysis, s.params, s.cohort_json())


# -- the canonical hash -----------------------------------------------------------------------
def test_what_does_not_change_the_release_does_not_change_the_hash():
    base = h(KM)
    reordered = dict(reversed(list(KM.items())))
    assert h(reordered) == base
    assert h({**KM, "title": "another title", "description": "why"}) == base
    assert h({**KM, "nodes": ["fr", "de"], "min_nodes": 1, "timeout": 60}) == base
    assert h({**KM, "project": "p1", "data_use": {"permission": "GRU"}}) == base
    assert h({**KM, "time_unit": "day"}) == base  # the default, made explicit
    levels = {**KM, "cohort": {**KM["cohort"], "iccc_group": ["I"]}}
    assert h(levels) == base
    two = {**KM, "cohort": {"iccc_group": ["I", "II"]}}
    assert h(two) == h({**KM, "cohort": {"iccc_group": ["II", "I"]}})  # a list is a set
    assert h(COUNT) == h({**COUNT, "by": ["sex"], "unit": "tumours"})


@pytest.mark.parametrize(
    "change",
    [
        {"analysis": "logrank"},
        {"outcome": "efs"},
        {"by": ["age_group"]},
        {"by": ["sex", "age_group"]},
        {"time_unit": "month"},
        {"cohort": {"iccc_group": ["I"], "diagnosis_date": {**WINDOW, "to": "2012-12-30"}}},
        {"cohort": {"iccc_group": ["I"], "diagnosis_date": {**WINDOW, "from": "2006-01-02"}}},
        {"cohort": {"iccc_group": ["I", "II"], "diagnosis_date": WINDOW}},
        {"cohort": {"iccc_group": ["I"]}},
        {"cohort": {"iccc_group": ["I"], "diagnosis_date": WINDOW, "sex": "female"}},
    ],
)
def test_any_parameter_cohort_bound_or_analysis_changes_the_hash(change):
    assert h({**KM, **change}) != h(KM)


def test_the_canonical_form_is_plain_json_with_defaults_explicit():
    form = canonical_study("count", {}, None)
    assert form == {"analysis": "count", "params": {"by": [], "unit": "tumours"}, "cohort": {}}
    with pytest.raises(RegisteredStudyError, match="unknown analysis 'kaplan'"):
        study_hash("kaplan", {}, None)
    with pytest.raises(RegisteredStudyError, match="by: Input should be a valid list"):
        study_hash("count", {"by": "sex"}, None)


def test_the_keys_that_never_change_a_release_are_the_study_level_keys():
    assert set(STUDY_KEYS) == {"cohort", "analysis", *NOT_RELEASED_KEYS}


# -- a project lists its studies --------------------------------------------------------------
PROJECT = {
    "title": "Leukaemia outcome",
    "summary": "Survival of leukaemia by sex.",
    "institution": "Example University Hospital",
    "data_use": {"permission": "GRU"},
    "nodes": ["fr"],
    "analyses": ["count", "km"],
    "cohort": {"iccc_group": ["I"]},
    "expires": IN_A_YEAR,
}


def test_a_project_keeps_its_studies_as_written_and_the_terms_their_hashes():
    studies = [KM, {**COUNT, "cohort": {"iccc_group": ["I"]}}]
    spec = load_project({**PROJECT, "studies": studies})
    assert spec.model_dump(mode="json")["studies"] == studies
    assert ProjectTerms.of("p", spec).studies == [h(s) for s in studies]
    # stored as JSON and read back (the hub's round trip): the same hashes
    again = ProjectSpec.model_validate(json.loads(spec.model_dump_json()))
    assert ProjectTerms.of("p", again).studies == ProjectTerms.of("p", spec).studies
    assert ProjectTerms.of("p", load_project(PROJECT)).studies == []


@pytest.mark.parametrize(
    ("studies", "message"),
    [
        ([{**KM, "by": "sex"}], "studies[0].by: Input should be a valid list"),
        ([KM, {**KM, "outcome": "oss"}], "studies[1].outcome: Input should be 'os'"),
        ([{**KM, "colour": 1}], "studies[0].colour: Extra inputs are not permitted"),
        ([{**KM, "min_nodes": 0}], "studies[0].min_nodes: Input should be greater"),
        ([{"title": "no analysis"}], "studies[0].analysis: Field required"),
        ([{**KM, "analysis": "cox"}], "studies[0].covariates: Field required"),
        ([{**KM, "cohort": {"iccc_grup": ["I"]}}], "studies[0].cohort: unknown cohort variable"),
        ([{**COUNT, "cohort": {"iccc_group": ["I"]}, "analysis": "crosstab"}], "not one of"),
        ([COUNT], "studies[0].cohort: iccc_group must be restricted to the project's scope"),
        ([KM, {**KM, "title": "again"}], "studies[1]: the same study as studies[0]"),
        (["km"], "studies[0]: Input should be a valid dictionary"),
        ("km", "studies: Input should be a valid list"),
    ],
)
def test_a_bad_registered_study_is_named_by_its_index_and_key(tmp_path, studies, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**PROJECT, "studies": studies}))
    with pytest.raises(ProjectError) as err:
        load_project(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


# -- the node's rule --------------------------------------------------------------------------
def consented(registry: dict) -> dict:
    return {**registry, "patient": [{**p, "consent": "DUO:0000042"} for p in registry["patient"]]}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("registered")
    return build_store(folder / "fr.duckdb", consented(random_registry(31, 600, "FR", "fr")))


def node_at(tmp_path: Path, template: Path, exact_release: str, counts: str = "exact") -> LocalNode:
    """A fresh copy of the same store (its own ledger and audit log), under the given rule;
    exact counts unless `counts` says otherwise, so that a count is an exact answer too."""
    store = tmp_path / f"{exact_release}-{uuid.uuid4().hex[:6]}" / "fr.duckdb"
    store.parent.mkdir()
    shutil.copy(template, store)
    policy = NodePolicy(name="fr", exact_release=exact_release, counts=counts)  # type: ignore[arg-type]
    return LocalNode(store, name="fr", policy=policy, from_hub=True)


def accept(node: LocalNode, studies: list[dict[str, Any]], pid: str = "p1") -> ProjectTerms:
    terms = ProjectTerms.of(pid, load_project({**PROJECT, "studies": studies}))
    record_decision(node.store, terms, "accepted", None)
    return terms


def task(spec: dict[str, Any], pid: str | None = "p1", round_no: int = 0) -> Task:
    """The task a hub sends for `spec` (as the study runner builds it)."""
    s = StudySpec.model_validate({**spec, "project": pid})
    return Task(
        task_id=uuid.uuid4().hex,
        study_id=uuid.uuid4().hex[:16],
        round=round_no,
        analysis=s.analysis,
        params=s.params,
        cohort=s.cohort_json(),
        title=s.title,
        project=pid,
        data_use={"permission": "GRU"} if pid else None,
    )


class Agent:
    """The node agent's own handling of a task (NodeAgent.handle, no hub needed): `put` says
    what it would post (None: nothing, the answer is held for the custodian)."""

    def __init__(self, node: LocalNode) -> None:
        self.agent = NodeAgent(
            "http://127.0.0.1:9",
            "t",
            node.answer,
            pending=PendingStore(node.store),
            review=node.review,
        )
        self.agent.name = node.name

    def put(self, t: Task) -> Any:
        self.agent.handle(t)
        return self.agent.outbox.get(t.task_id)


def airlock_for(node: LocalNode) -> Agent:
    return Agent(node)


def today_answer(tmp_path, template, spec, registered=True):
    """The answer of a node that answers every task at once (`any`), the study registered
    there or not."""
    node = node_at(tmp_path, template, "any")
    accept(node, [spec] if registered else [])
    return node.answer(task(spec))


def test_a_registered_study_is_answered_exactly_as_today(tmp_path, template):
    today = today_answer(tmp_path, template, KM)
    assert today.status == "answered"
    # registered, its event times come at the policy's resolution (day): more rows than the
    # grouped intervals an unregistered answer gets
    grouped = today_answer(tmp_path, template, KM, registered=False)
    rows = len(today.summary["events"]["columns"]["time"])
    assert rows > len(grouped.summary["events"]["columns"]["time"])
    node = node_at(tmp_path, template, "registered")
    accept(node, [KM])
    lock = airlock_for(node)
    retitled = {**KM, "title": "another title", "nodes": ["fr"], "time_unit": "day"}
    answer = lock.put(task(retitled))
    assert answer is not None and PendingStore(node.store).all() == []
    assert answer.status == "answered" and answer.summary == today.summary


def test_an_unregistered_study_is_held_with_its_reason_never_answered(tmp_path, template):
    node = node_at(tmp_path, template, "registered")
    accept(node, [KM])
    lock = airlock_for(node)
    given = lock.put(task(COUNT | {"cohort": {"iccc_group": ["I"]}}))
    assert given is None  # nothing posted
    [held] = PendingStore(node.store).all()
    assert held.state == "held" and held.answer.status == "answered" and held.answer.summary
    assert "not a registered study of project p1" in str(held.held_for)


def test_under_the_default_counts_an_unregistered_count_is_answered_perturbed(tmp_path, template):
    """The feasibility tier: a count that is not registered leaves at once, perturbed; the
    same count registered leaves at once, exact."""
    node = node_at(tmp_path, template, "registered", counts="perturbed")
    study = COUNT | {"cohort": {"iccc_group": ["I"]}}
    accept(node, [KM])
    lock = airlock_for(node)
    noisy = lock.put(task(study))
    assert noisy is not None and PendingStore(node.store).all() == []
    assert noisy.summary["cells"]["noise"] == 4 and "perturbed" in noisy.reason
    accept(node, [KM, study])
    exact = lock.put(task(study))
    assert exact is not None and "noise" not in exact.summary["cells"]
    truth = node.read_view(["sex"], CohortSpec.load({"iccc_group": ["I"]}))["sex"].value_counts()
    got = {c["sex"]: c["n"] for c in exact.summary["cells"]["cells"]}
    assert got == {k: int(v) for k, v in truth.items()}


def test_reviewed_holds_even_a_registered_study_and_any_answers_all(tmp_path, template):
    reviewed = node_at(tmp_path, template, "reviewed")
    accept(reviewed, [KM])
    lock = airlock_for(reviewed)
    assert lock.put(task(KM)) is None
    assert "exact_release: reviewed" in str(PendingStore(reviewed.store).all()[0].held_for)
    anything = node_at(tmp_path, template, "any")
    accept(anything, [KM])
    lock = airlock_for(anything)
    other = {**KM, "by": []}
    answer = lock.put(task(other))
    assert answer is not None and answer.status == "answered" and answer.summary is not None


def test_an_amendment_is_not_registered_until_accepted_again(tmp_path, template):
    node = node_at(tmp_path, template, "registered")
    accept(node, [KM])
    added = {**COUNT, "cohort": {"iccc_group": ["I"]}}
    changed = {**KM, "by": []}
    # the hub's project now lists more or other studies than this node accepted
    now = ProjectTerms.of("p1", load_project({**PROJECT, "studies": [changed, added]})).studies
    decisions = load_decisions(node.store)
    assert amendments(decisions, "p1", now) == now
    assert not registered_here(task(added), decisions)
    assert not registered_here(task(changed), decisions)
    assert node.review(task(added)) is not None and node.review(task(changed)) is not None
    accept(node, [changed, added])  # the custodian accepts the amended project
    assert node.review(task(added)) is None and node.review(task(KM)) is not None


def test_one_day_off_a_registered_cohort_bound_gets_no_automatic_exact_answer(tmp_path, template):
    node = node_at(tmp_path, template, "registered")
    accept(node, [KM])
    lock = airlock_for(node)
    for bound in ({"to": "2012-12-30"}, {"to": "2013-01-01"}, {"from": "2006-01-02"}):
        nudged = {**KM, "cohort": {**KM["cohort"], "diagnosis_date": {**WINDOW, **bound}}}
        assert lock.put(task(nudged)) is None
    assert len(PendingStore(node.store).all()) == 3
    # a hub that relays a study as registered under another title gains nothing either
    assert node.review(task({**KM, "title": "registered!"})) is None


def test_a_refusal_after_reading_data_is_held_too_but_one_before_is_not(tmp_path, template):
    node = node_at(tmp_path, template, "registered")
    accept(node, [KM])
    lock = airlock_for(node)
    tiny = {
        **KM,
        "cohort": {
            "iccc_group": ["I"],
            "diagnosis_date": {"from": "2006-01-01", "to": "2006-01-01"},
        },
    }
    tiny_task = task(tiny)
    assert lock.put(tiny_task) is None
    # too few for a curve: today that refusal would leave at once and say something of the data
    [held] = PendingStore(node.store).all()
    assert held.answer.status == "refused" and held.answer.task_id == tiny_task.task_id
    # a task of a project not accepted here is refused before any data is read: not held
    refused = lock.put(task(KM, pid="p2"))
    assert refused is not None and refused.status == "refused"
    invalid = task(KM).model_copy(update={"params": {"outcome": "os", "colour": 1}})
    failed = lock.put(invalid)
    assert failed is not None and failed.status == "failed"
    assert len(PendingStore(node.store).all()) == 1


# -- end to end, through the real hub ---------------------------------------------------------
@pytest.mark.slow
def test_through_the_hub_only_registered_studies_are_answered_before_review(tmp_path, template):
    store = tmp_path / "node" / "fr.duckdb"
    store.parent.mkdir()
    shutil.copy(template, store)
    policy = NodePolicy(name="fr", exact_release="registered", counts="exact")
    node = LocalNode(store, name="fr", policy=policy, from_hub=True)
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", SpecExecutor(), open_studies=False) as live:
        tokens = {
            "fr": live.hub.add_node("fr", "FR"),
            "ana": live.hub.add_user("ana", "researcher"),
            "bob": live.hub.add_user("bob", "board"),
        }

        def call(who: str, method: str, path: str, **kw: Any) -> Any:
            with live.client(tokens[who]) as c:
                r = c.request(method, path, **kw)
            assert r.status_code < 300, r.text
            return r.json()

        bad = {**PROJECT, "studies": [{**KM, "by": "sex"}]}
        with live.client(tokens["ana"]) as c:
            r = c.post("/api/projects", json={"spec": bad})
        assert r.status_code == 422 and "studies[0].by" in r.json()["detail"]
        pid = call("ana", "POST", "/api/projects", json={"spec": {**PROJECT, "studies": [KM]}})[
            "project_id"
        ]
        call("bob", "POST", f"/api/projects/{pid}/review", json={"decision": "approve"})
        shown = call("ana", "GET", f"/api/projects/{pid}")
        assert [(s["title"], s["hash"]) for s in shown["studies"]] == [(KM["title"], h(KM))]
        assert shown["terms"]["studies"] == [h(KM)]
        at_node = ("--store", store, "--hub", live.url, "--token", tokens["fr"])
        seen = json.loads(run_ccdp("node", "projects", "show", pid, *at_node, "--json").stdout)
        assert seen["not_accepted_here"] == [h(KM)]
        accepted = run_ccdp("node", "projects", "accept", pid, *at_node).stdout
        assert "registered studies accepted: 1" in accepted
        assert load_decisions(store)[pid].terms.studies == [h(KM)]  # hashed at the node
        text = run_ccdp("node", "projects", "show", pid, *at_node).stdout
        assert f"{h(KM)[:12]}  {KM['title']}" in text and "not accepted here" not in text

        pending = PendingStore(store)
        agent = NodeAgent(
            live.url,
            tokens["fr"],
            node.answer,
            pending=pending,
            review=node.review,
            wait=0.5,
            heartbeat=0.2,
        )
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        thread.start()
        try:
            study = {**KM, "project": pid, "timeout": 60}
            sid = call("ana", "POST", "/api/studies", json={"spec": study})["id"]
            done = call("ana", "GET", f"/api/studies/{sid}", params={"wait": 30})
            assert done["status"] == "done" and done["result"]["nodes"]["fr"]["status"] == (
                "answered"
            )
            nudged = {
                **study,
                "cohort": {**KM["cohort"], "diagnosis_date": {**WINDOW, "to": "2012-12-30"}},
            }
            sid2 = call("ana", "POST", "/api/studies", json={"spec": nudged})["id"]
            wait_until(lambda: any(i.state == "held" for i in pending.all()), 20)
            waiting = call("ana", "GET", f"/api/studies/{sid2}")
            assert waiting["status"] != "done"
            with live.hub.context.sessions() as s:  # nothing of it has reached the hub
                assert s.scalar(select(func.count()).select_from(AnswerRow)) == 1  # the first
            [held] = [i for i in pending.all() if i.state == "held"]
            pending.release(held.task.task_id)
            after = call("ana", "GET", f"/api/studies/{sid2}", params={"wait": 30})
            assert after["status"] == "done"
            assert after["result"]["nodes"]["fr"]["status"] == "answered"
        finally:
            stop.set()
            thread.join(10)
            agent.close()

        # an amendment at the hub: a study added to the list after the node accepted it
        added = {**COUNT, "cohort": {"iccc_group": ["I"]}}
        with live.hub.context.sessions.begin() as s:
            row = s.get(ProjectRow, pid)
            assert row is not None
            row.spec = {**row.spec, "studies": [*row.spec["studies"], added]}
        seen = json.loads(run_ccdp("node", "projects", "show", pid, *at_node, "--json").stdout)
        assert seen["not_accepted_here"] == [h(added)]
        text = run_ccdp("node", "projects", "show", pid, *at_node).stdout
        assert f"{h(added)[:12]}  {added['title']}  [not accepted here]" in text
        assert node.review(task(added, pid=pid)) is not None


def test_the_example_project_file_loads_with_its_studies():
    root = Path(__file__).resolve().parents[2]
    spec = load_project(root / "examples" / "projects" / "leukaemia-outcome.yaml")
    assert len(ProjectTerms.of("p", spec).studies) == 3


def test_an_offline_task_that_is_not_registered_writes_no_result_until_released(tmp_path, template):
    from ccdp.disclosure.policy import load_policy, save_policy

    node = node_at(tmp_path, template, "registered")
    save_policy(
        node.store, load_policy(node.store).model_copy(update={"exact_release": "registered"})
    )
    accept(node, [KM])
    nudged = {**KM, "cohort": {**KM["cohort"], "diagnosis_date": {**WINDOW, "to": "2013-01-01"}}}
    sent = task(nudged)
    taskfile = tmp_path / "task.json"
    taskfile.write_text(json.dumps({"node": "fr", "task": sent.model_dump(mode="json")}))
    args = ("node", "answer", taskfile, "--store", node.store, "--token", "t0ken")
    first = run_ccdp(*args)
    assert "held for the custodian" in first.stdout
    assert not list(tmp_path.glob("result-*.json"))
    listed = json.loads(run_ccdp("node", "pending", "--store", node.store, "--json").stdout)
    assert [(i["id"], i["state"]) for i in listed] == [(sent.task_id, "held")]
    assert "not a registered study" in listed[0]["held_for"]
    run_ccdp("node", "release", sent.task_id[:10], "--store", node.store)
    second = run_ccdp(*args)
    assert second.stdout.startswith("answered: signed result written")
    assert (tmp_path / f"result-{sent.task_id}.json").exists()
    assert PendingStore(node.store).find(sent.task_id).state == "sent"
