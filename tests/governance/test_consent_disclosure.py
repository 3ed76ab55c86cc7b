"""The count of patients consent excluded leaves the node only through the gate: a small count
is suppressed, and differencing a study with and without a data use does not reveal one child."""

from __future__ import annotations

import re
from datetime import date

import duckdb
import pandas as pd
import pytest

from ccdp.cohort.spec import CohortSpec
from ccdp.federation.node.local import LocalNode
from ccdp.wire.protocol import Answer, Task
from tests.storekit import EXACT_YAML, build_store, random_registry

GRU = "DUO:0000042"
HEAD = "excluded by their consent (DUO)"


def store_with(tmp_path, consented: int, unconsented: int, name: str = "fr"):
    rows = random_registry(11, consented + unconsented, "FR", "d", years=(2005, 2012))
    for i, patient in enumerate(rows["patient"]):
        patient["consent"] = GRU if i < consented else None
    # the last unconsented child is the only one diagnosed in 2014: a cohort cut can drop them
    rows["tumour"][-1]["diagnosis_date"] = date(2014, 6, 1)
    return build_store(tmp_path / f"{name}.duckdb", rows)


def ask(node: LocalNode, study: str, data_use: dict | None, cohort: dict | None = None) -> Answer:
    task = Task(
        task_id=f"{study}-r0",
        study_id=study,
        round=0,
        analysis="count",
        params={"by": ["sex"]},
        cohort=cohort,
        data_use=data_use,
    )
    return node.answer(Task.model_validate_json(task.model_dump_json()))


def total(answer: Answer) -> int | None:
    """The released total of a count answer (None when suppressed or not answered)."""
    if answer.status != "answered":
        return None
    return answer.summary["total"]["cells"][0]["n"]


def released_numbers(answer: Answer) -> set[int]:
    return {int(x) for x in re.findall(r"\(DUO\): (\d+)", answer.reason or "")}


HMB = {"permission": "HMB"}


def by_sex(answer: Answer) -> dict[str, int | None]:
    """The released by-sex cells of a count answer (None: suppressed)."""
    assert answer.summary is not None
    return {c["sex"]: c["n"] for c in answer.summary["cells"]["cells"]}


def store_truth(store) -> pd.DataFrame:
    """Each child's sex and whether it carries consent codes, straight from the store (SQL)."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        sql = "SELECT patient_id, sex, consent IS NOT NULL AS consented FROM patient"
        return con.execute(sql).df()
    finally:
        con.close()


@pytest.mark.parametrize("order", ["plain_first", "data_use_first"])
def test_one_unconsented_child_cannot_be_differenced(tmp_path, order):
    """60 consented children and one without consent: the study with the data use and the one
    without would differ by that child, in the total and in the cell of its sex. Every released
    cell of both answers is the store's truth; the first answer is released in full; and no
    cell or total of the two answers differs by 1 to min_cell - 1, so their difference never
    isolates the child; nor does the excluded count."""
    store = store_with(tmp_path, 60, 1)
    node = LocalNode(store)
    min_cell = node.policy.min_cell
    studies = [("plain", None), ("project", HMB)]
    if order == "data_use_first":
        studies.reverse()
    answers = {name: ask(node, name, use) for name, use in studies}
    plain, project = answers["plain"], answers["project"]
    # the truth, by SQL and through the node's own consent filter
    people = store_truth(store)
    [child_sex] = people.loc[~people.consented, "sex"]
    use = Task(task_id="x", study_id="x", round=0, analysis="count", data_use=HMB).data_use
    everyone = node.read_view(None, CohortSpec())
    permitted = node.read_view(None, CohortSpec(), use, node.policy.consent)
    assert set(everyone.patient_id) - set(permitted.patient_id) == set(
        people.patient_id[~people.consented]
    )
    truth = {
        "plain": everyone.groupby("sex").size().to_dict(),
        "project": permitted.groupby("sex").size().to_dict(),
    }
    assert truth["plain"][child_sex] - truth["project"][child_sex] == 1
    assert min(min(t.values()) for t in truth.values()) >= min_cell  # no cell is small itself
    # the node still answers both, and every released cell is the store's truth
    assert plain.status == project.status == "answered"
    for name, answer in answers.items():
        for sex, n in by_sex(answer).items():
            assert n is None or n == truth[name].get(sex, 0), (name, sex, n)
        assert total(answer) in (None, sum(truth[name].values()))
    # the first study loses nothing: its cells and total are released as they are
    first = studies[0][0]
    assert by_sex(answers[first]) == truth[first]
    assert total(answers[first]) == sum(truth[first].values())
    # ... and the two releases together never isolate the child, in any cell or the total
    both = [(by_sex(plain)[s], by_sex(project)[s]) for s in truth["plain"]]
    both.append((total(plain), total(project)))
    for a, b in both:
        assert a is None or b is None or not 0 < a - b < min_cell, (a, b)
    assert by_sex(plain)[child_sex] is None or by_sex(project)[child_sex] is None
    assert total(plain) is None or total(project) is None
    assert HEAD in project.reason and "withheld" in project.reason
    assert released_numbers(project) == set()


def test_excluded_count_released_then_differencing_refused(tmp_path):
    """Eight unconsented children: the count is released (it is no small cell); a cohort cut
    dropping one of them would give seven, and their difference one child: withheld."""
    node = LocalNode(store_with(tmp_path, 40, 8))
    first = ask(node, "all", HMB)
    assert first.status == "answered" and released_numbers(first) == {8}
    cut = ask(node, "cut", HMB, {"diagnosis_year": {"to": 2013}})
    # the consented cohort is unchanged, so the analysis answers; only the note is withheld
    assert cut.status == "answered" and total(cut) == total(first) == 40
    assert released_numbers(cut) == set() and "withheld" in cut.reason


def test_small_excluded_count_is_suppressed(tmp_path):
    node = LocalNode(store_with(tmp_path, 40, 3))
    answer = ask(node, "s", HMB)
    assert answer.status == "answered"
    assert released_numbers(answer) == set() and "withheld" in answer.reason


def test_zero_excluded_follows_zero_policy(tmp_path):
    store = store_with(tmp_path, 40, 0)
    node = LocalNode(store)
    assert released_numbers(ask(node, "z", HMB)) == {0}
    (tmp_path / "fr.policy.yaml").write_text(EXACT_YAML + "zero_cells: suppress\n")
    again = ask(node, "z2", HMB)
    assert "withheld" in again.reason and released_numbers(again) == set()


def test_node_log_keeps_the_data_use(tmp_path):
    """The operator can see which project use a task carried (the node's audit log)."""
    store = store_with(tmp_path, 40, 8)
    node = LocalNode(store)
    ask(node, "logged", HMB)
    records = list(node.audit.records())
    assert records[-1]["data_use"] == {
        "permission": "HMB",
        "disease": None,
        "commercial": False,
        "meets": [],
    }


def test_in_the_feasibility_tier_the_excluded_count_is_perturbed_never_withheld(tmp_path):
    """Under the default `counts: perturbed` the note is one more perturbed count: 1 to 4
    excluded children are never published as such nor withheld (a withholding would say "small");
    the same set gets the same value, within the policy's bound."""
    from ccdp.disclosure.policy import NodePolicy

    policy = NodePolicy(counts="perturbed")
    for unconsented in (1, 2, 3, 30):
        (tmp_path / str(unconsented)).mkdir()
        store = store_with(tmp_path / str(unconsented), 60, unconsented)
        node = LocalNode(store, policy=policy)
        answers = [ask(node, f"s{i}", HMB) for i in range(2)]
        notes = [a.reason or "" for a in answers]
        assert all("withheld" not in n and "(perturbed, ±4)" in n for n in notes)
        [shown] = released_numbers(answers[0])
        assert released_numbers(answers[1]) == {shown}
        assert shown == 0 or shown >= 5
        assert abs(shown - unconsented) <= 4
