"""Project files (key-path errors) and the one check of a study against a project's terms."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.refusals import Refusal
from ccdp.federation.node.projects import check_task, load_decisions, record_decision
from ccdp.governance.projects import (
    ProjectError,
    ProjectTerms,
    cohort_outside,
    load_project,
    study_outside,
)
from ccdp.wire.data_use import DataUse
from ccdp.wire.protocol import Task

CONTRACT = """\
title: Outcome of relapsed ALL across Europe
summary: Event-free survival after first relapse, by relapse timing and site.
institution: Example University Hospital
data_use: {permission: DS, disease: "MONDO:0004992", commercial: false}
nodes: [FR, DE]
analyses: [count, km, cox]
cohort: {iccc_group: [I]}
expires: 2027-12-31
"""


def test_the_contract_example_loads(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(CONTRACT)
    spec = load_project(path)
    assert spec.data_use == DataUse(permission="DS", disease="MONDO:0004992")
    assert spec.cohort == {"iccc_group": ["I"]} and spec.expires == date(2027, 12, 31)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("colour: blue\n", "colour: Extra inputs are not permitted"),
        ("data_use: {permission: DS}\n", "data_use: permission DS needs the disease"),
        ("data_use: {permission: GRU, extra: 1}\n", "data_use.extra: Extra inputs"),
        ("analyses: [count, kaplan]\n", "analyses: unknown analyses ['kaplan']"),
        ("nodes: [FR, FR]\n", "nodes: named more than once: FR"),
        ("cohort: {iccc_grup: [I]}\n", "cohort: unknown"),
        ("expires: next year\n", "expires: Input should be a valid date"),
    ],
)
def test_bad_project_files_name_the_file_and_key(tmp_path, change, message):
    key = change.split(":")[0]
    lines = [ln for ln in CONTRACT.splitlines(keepends=True) if not ln.startswith(key + ":")]
    path = tmp_path / "bad.yaml"
    path.write_text("".join(lines) + change)
    with pytest.raises(ProjectError) as err:
        load_project(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_a_missing_key_is_named(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(CONTRACT.replace("institution: Example University Hospital\n", ""))
    with pytest.raises(ProjectError, match="institution: Field required"):
        load_project(path)


@pytest.mark.parametrize(
    ("cohort", "inside"),
    [
        ({"iccc_group": ["I"], "sex": "female"}, True),
        ({"iccc_group": "I"}, True),
        ({"iccc_group": ["I", "II"]}, False),
        ({"sex": "female"}, False),
        (None, False),
    ],
)
def test_a_study_cohort_must_be_within_the_scope(cohort, inside):
    assert (cohort_outside(cohort, {"iccc_group": ["I"]}) is None) is inside


def test_ranges_must_lie_inside_the_scope_range():
    scope = {"diagnosis_year": {"from": 2005, "to": 2015}}
    assert cohort_outside({"diagnosis_year": {"from": 2006, "to": 2010}}, scope) is None
    assert cohort_outside({"diagnosis_year": [2007, 2008]}, scope) is None
    assert "beyond" in str(cohort_outside({"diagnosis_year": {"from": 2000}}, scope))
    assert "beyond" in str(cohort_outside({"diagnosis_year": {"to": 2012}}, scope))


TERMS = ProjectTerms(
    id="P1",
    data_use=DataUse(permission="HMB"),
    analyses=["count"],
    cohort=CohortSpec.load({"iccc_group": ["I"]}).to_json(),
    expires=date.today() + timedelta(days=30),
    nodes=["fr"],
)


def test_study_outside_names_the_broken_term():
    today = date.today()
    assert study_outside(TERMS, "count", {"iccc_group": ["I"]}, today) is None
    assert study_outside(TERMS, "km", {"iccc_group": ["I"]}, today)[0] == "analyses"
    assert study_outside(TERMS, "count", {"iccc_group": ["II"]}, today)[0] == "cohort"
    later = TERMS.expires + timedelta(days=1)
    assert study_outside(TERMS, "count", {"iccc_group": ["I"]}, later)[0] == "expires"


def _task(**kw):
    base = dict(
        task_id="t",
        study_id="s",
        round=0,
        analysis="count",
        cohort={"iccc_group": ["I"]},
        project="P1",
        data_use=DataUse(permission="HMB"),
    )
    return Task(**{**base, **kw})


def test_the_node_checks_a_task_against_what_its_custodian_accepted(tmp_path):
    store = tmp_path / "fr.duckdb"
    store.touch()
    today = date.today()
    with pytest.raises(Refusal, match="not accepted: project P1 is not accepted at this node"):
        check_task(_task(), "fr", load_decisions(store), today)
    record_decision(store, TERMS, "accepted", None)
    held = load_decisions(store)
    check_task(_task(), "fr", held, today)  # within the terms: no refusal
    for change, term in [
        ({"analysis": "km"}, "analyses"),
        ({"cohort": {"iccc_group": ["I", "II"]}}, "cohort"),
        ({"data_use": DataUse(permission="GRU")}, "data_use"),
        ({"data_use": None}, "data_use"),
    ]:
        with pytest.raises(Refusal, match=rf"project P1 \({term}\): the task is outside"):
            check_task(_task(**change), "fr", held, today)
    with pytest.raises(Refusal, match=r"project P1 \(nodes\)"):
        check_task(_task(), "de", held, today)
    with pytest.raises(Refusal, match="expired"):
        check_task(_task(), "fr", held, TERMS.expires + timedelta(days=1))
    record_decision(store, TERMS, "declined", "not our remit")
    with pytest.raises(Refusal, match="is not accepted at this node"):
        check_task(_task(), "fr", load_decisions(store), today)
