"""Attacks on node catalogues: what two catalogues around one child's ingest say together, a
lone child's diagnosis year, the completeness of a tiny table."""

from __future__ import annotations

import duckdb
import pytest

from ccdp.federation.node.audit import AuditLog
from ccdp.federation.node.catalogue import NodeCatalogue, state_paths
from ccdp.federation.node.local import LocalNode
from ccdp.wire.protocol import Task
from tests.catalogue_kit import ingest_child, make_store

CHILD = {"iccc_group": "II", "sex": "female", "age_days": 3 * 365}  # group II, girl, 1-4


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "fr.duckdb")


def published(store) -> dict:
    return NodeCatalogue.for_store(store).publish().catalogue.model_dump(mode="json")


def figures(cat: dict) -> dict:
    """Everything but the dates: what the two catalogues could differ in."""
    return {k: v for k, v in cat.items() if k not in ("generated_at", "last_ingest")}


def candidates(before: dict, after: dict, key: str) -> set[str]:
    """Levels an attacker holding both catalogues could place the new child in: those whose
    cell changed or is suppressed in either."""
    a = {c["level"]: c for c in before[key]}
    out = set()
    for cell in after[key]:
        old = a.get(cell["level"])
        if old is None or cell["suppressed"] or old["suppressed"] or cell["count"] != old["count"]:
            out.add(cell["level"])
    return out


def test_one_more_child_changes_nothing_but_the_dates(store):
    first = published(store)
    ingest_child(store, **CHILD)
    second_computed = NodeCatalogue.for_store(store).publish()
    second = second_computed.catalogue.model_dump(mode="json")
    assert second_computed.held
    assert second["last_ingest"] != first["last_ingest"]
    assert figures(second) == figures(first)  # group, sex, age group, follow-up, years: all
    # the base of the rule stays the last refreshed catalogue: a second child adds up
    ingest_child(store, pid="NEW2", **CHILD)
    assert NodeCatalogue.for_store(store).compute().held
    assert [r["analysis"] for r in AuditLog.for_store(store).records()] == ["catalogue"] * 2


def test_without_the_refresh_rule_the_ledger_still_hides_the_child(store):
    """The node's catalogue state is lost (or the attacker compares a study's release with the
    catalogue): the differencing ledger alone keeps the child's group, sex and age group."""
    first = published(store)
    for path in state_paths(store):
        path.unlink()
    ingest_child(store, **CHILD)
    second = published(store)
    assert second["tumours"] == {"count": None, "suppressed": True}  # 201 vs 200
    assert second["patients"]["suppressed"]
    for key, level in (("by_iccc_group", "II"), ("by_sex", "female"), ("by_age_group", "1-4")):
        found = candidates(first, second, key)
        assert level in found
        assert len(found) >= 2, (key, found)  # the child's level is not singled out
    rows = {t["name"]: t for t in second["tables"]}
    assert rows["patient"]["suppressed"] and rows["tumour"]["suppressed"]
    # and the completeness of those tables, which would give the child's filled fields, too
    assert all(f["completeness"] is None for f in rows["patient"]["fields"])


def test_a_study_release_and_the_catalogue_do_not_difference(store):
    """A count study over every tumour but one child's year, then the catalogue: the cells
    that differ by that child are suppressed in the catalogue (one ledger for both)."""
    node = LocalNode(store, name="fr")
    task = Task(
        task_id="t1",
        study_id="s1",
        round=0,
        analysis="count",
        params={"by": ["iccc_group"]},
        cohort={"diagnosis_year": {"from": 2000}},  # leaves out the child alone in 1999
    )
    answer = node.answer(task)
    assert answer.status == "answered"
    cat = published(store)
    assert cat["tumours"]["suppressed"]  # 200 vs the study's 199


def test_diagnosis_years_do_not_date_a_lone_child(store):
    cat = NodeCatalogue.for_store(store).compute().catalogue.model_dump(mode="json")
    con = duckdb.connect(str(store), read_only=True)
    years = dict(
        con.execute("SELECT year(diagnosis_date), count(*) FROM tumour GROUP BY 1").fetchall()
    )
    con.close()
    assert years[1999] == 1 and min(years) == 1999  # one child alone in the earliest year
    assert cat["diagnosis_years"]["first"] == min(y for y, n in years.items() if n >= 5)
    assert cat["diagnosis_years"]["first"] != 1999
    assert cat["diagnosis_years"]["last"] == max(y for y, n in years.items() if n >= 5)


def test_completeness_of_a_tiny_table_is_not_released(store):
    con = duckdb.connect(str(store))
    con.execute(
        "INSERT INTO treatment (treatment_id, tumour_id, type) VALUES "
        "('R1', 'aT1', 'chemotherapy'), ('R2', 'aT2', 'chemotherapy'), ('R3', 'aT3', NULL)"
    )
    con.close()
    cat = NodeCatalogue.for_store(store).compute().catalogue.model_dump(mode="json")
    tables = {t["name"]: t for t in cat["tables"]}
    assert tables["treatment"]["rows"] is None and tables["treatment"]["suppressed"]
    assert all(f["completeness"] is None for f in tables["treatment"]["fields"])
    # 7 rows: a count that may be released, but percentages of 7 children may not
    assert tables["biomarker"]["rows"] == 7
    assert all(f["completeness"] is None for f in tables["biomarker"]["fields"])
    specimen = {f["name"]: f["completeness"] for f in tables["specimen"]["fields"]}
    assert specimen["type"] == 100.0 and specimen["collection_date"] == 0.0  # 12 rows


def test_a_node_below_min_cohort_publishes_no_count(tmp_path):
    small = make_store(tmp_path / "tiny.duckdb", n=8)
    cat = NodeCatalogue.for_store(small).compute().catalogue.model_dump(mode="json")
    assert cat["patients"]["suppressed"] and cat["tumours"]["suppressed"]
    assert all(c["suppressed"] for c in cat["by_sex"])
    assert cat["diagnosis_years"] == {"first": None, "last": None}
    assert cat["follow_up"] == {"median_years": None, "method": "reverse Kaplan-Meier",
                                "released": False}  # fmt: skip
    assert cat["quality"]["score"] is None
    assert all(t["rows"] is None for t in cat["tables"])
