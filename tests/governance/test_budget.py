"""A project's budget of feasibility tables at a node (policy `feasibility_budget`): under
`counts: perturbed` the first `budget` count/crosstab studies of a project are answered as they
come, later ones wait for the custodian (`ccdp node pending`); the decision depends only on how
many tables the project had before, never on the data."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from ccdp.disclosure.policy import NodePolicy, PolicyError, set_policy_value
from ccdp.federation.node.local import LocalNode, budget_path
from ccdp.federation.node.pending import PendingStore
from tests.governance.test_registered import Agent, accept, consented, task
from tests.storekit import build_store, random_registry

LEUKAEMIA = {"iccc_group": ["I"]}  # the test project's scope
SEX = {"title": "Patients by sex", "analysis": "count", "by": ["sex"], "cohort": LEUKAEMIA}
TUMOURS = {**SEX, "title": "Tumours by sex", "unit": "tumours"}
AGES = {
    "title": "Patients by age group",
    "analysis": "count",
    "by": ["age_group"],
    "cohort": LEUKAEMIA,
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("budget")
    return build_store(folder / "fr.duckdb", consented(random_registry(37, 400, "FR", "fr")))


def node_with(tmp_path: Path, template: Path, **policy: Any) -> LocalNode:
    store = tmp_path / uuid.uuid4().hex[:6] / "fr.duckdb"
    store.parent.mkdir()
    shutil.copy(template, store)
    rules = NodePolicy(name="fr", counts="perturbed", **policy)
    return LocalNode(store, name="fr", policy=rules, from_hub=True)


def test_the_budget_is_a_policy_key_unlimited_by_default(tmp_path):
    assert NodePolicy().feasibility_budget is None
    store = tmp_path / "fr.duckdb"
    assert set_policy_value(store, "feasibility_budget", "3").feasibility_budget == 3
    with pytest.raises(PolicyError, match="feasibility_budget"):
        set_policy_value(store, "feasibility_budget", "-1")


def test_beyond_the_budget_tables_wait_for_the_custodian(tmp_path, template):
    node = node_with(tmp_path, template, feasibility_budget=2)
    accept(node, [])
    agent = Agent(node)
    first, second, third, fourth = task(SEX), task(TUMOURS), task(AGES), task(SEX)
    assert agent.put(first).status == "answered"
    assert agent.put(second).status == "answered"
    assert agent.put(third) is None and agent.put(fourth) is None  # held, nothing posted
    held = PendingStore(node.store).all()
    assert [h.task.task_id for h in held] == [third.task_id, fourth.task_id]
    assert all("feasibility budget" in str(h.held_for) for h in held)
    assert "project p1 has had its 2 feasibility tables" in str(held[0].held_for)
    # a study asked again (same study id: a re-sent task) is counted once
    again = first.model_copy(update={"task_id": uuid.uuid4().hex})
    assert node.review(again) is None
    # another project has its own budget
    accept(node, [], pid="p2")
    assert node.review(task(SEX, pid="p2")) is None
    assert budget_path(node.store).exists()


def test_the_decision_depends_on_the_number_of_tables_not_on_the_data(tmp_path, template):
    """Two nodes with different children hold exactly the same tasks: the budget reads no
    data."""
    other = build_store(tmp_path / "small.duckdb", consented(random_registry(5, 60, "FR", "fr")))
    decisions = []
    for store in (template, other):
        node = node_with(tmp_path, store, feasibility_budget=1)
        accept(node, [])
        decisions.append([node.review(task(spec)) is None for spec in (SEX, AGES, TUMOURS)])
    assert decisions[0] == decisions[1] == [True, False, False]


def test_no_budget_and_exact_counts_are_not_held_by_it(tmp_path, template):
    unlimited = node_with(tmp_path, template)
    accept(unlimited, [])
    assert all(unlimited.review(task(SEX)) is None for _ in range(5))
    store = tmp_path / "exact" / "fr.duckdb"
    store.parent.mkdir()
    shutil.copy(template, store)
    rules = NodePolicy(name="fr", counts="exact", exact_release="any", feasibility_budget=0)
    exact = LocalNode(store, name="fr", policy=rules, from_hub=True)
    accept(exact, [])
    assert exact.review(task(SEX)) is None  # exact counts: exact_release decides, not the budget
    assert not budget_path(store).exists()
