"""Attacks on specimen counts: one child with many samples must not be one cell, alone or by
differencing two releases (docs/specimens.md).

The target is a child with the only tumour of ICCC-3 group XI at the node, diagnosed last, who
gave six bone-marrow samples, six RNA extracts and six other samples (nobody else has RNA or
other samples). Six samples pass a
min_cell of 5 if samples were counted as children; here every released figure is checked
against the store by the children it comes from.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccdp.disclosure.ledger import symmetric_difference
from ccdp.disclosure.refusals import TOO_FEW
from ccdp.federation.node.catalogue import NodeCatalogue
from ccdp.federation.node.local import LocalNode
from ccdp.wire.protocol import Answer, Task
from ccdp.wire.records import Records
from tests.storekit import add_specimens, build_store, random_registry, specimen_truth

MIN_CELL = 5
TARGET = "XP0"
TARGET_DAY = date(2015, 6, 30)  # after every other diagnosis (random_registry: 2005-2014)


def _registry() -> dict[str, list[dict[str, Any]]]:
    rows = add_specimens(random_registry(5, 300, "FR", "A"), seed=6)
    rows["patient"].append(
        {
            "patient_id": TARGET,
            "sex": "female",
            "birth_date": TARGET_DAY - timedelta(days=9 * 365),
            "country": "FR",
            "vital_status": "alive",
            "last_contact_date": TARGET_DAY + timedelta(days=400),
        }
    )
    rows["tumour"].append(
        {
            "tumour_id": "XT0",
            "patient_id": TARGET,
            "diagnosis_date": TARGET_DAY,
            "topography": "C73.9",
            "morphology": "8260",
            "behaviour": 3,
            "iccc_group": "XI",
        }
    )
    for kind in ("bone_marrow", "rna", "other"):
        rows["specimen"] += [
            {"specimen_id": f"XS-{kind}{k}", "tumour_id": "XT0", "type": kind, "available": True}
            for k in range(6)
        ]
    return rows


@pytest.fixture
def node(tmp_path: Path) -> LocalNode:
    return LocalNode(build_store(tmp_path / "FR.duckdb", _registry()))


class Attacker:
    """Asks the node and keeps every released specimen figure with the cohort and cell it
    describes, to check them against the store."""

    def __init__(self, node: LocalNode) -> None:
        self.node, self.i = node, 0
        self.figures: list[tuple[str, dict[str, Any], int]] = []  # (where SQL, cell, n)

    def ask(self, analysis: str, cohort: dict | None = None, **params: Any) -> Answer:
        self.i += 1
        task = Task(
            task_id=f"t{self.i}",
            study_id=f"s{self.i}",
            round=0,
            analysis=analysis,
            params={"unit": "specimens", **params},
            cohort=cohort or {},
        )
        answer = self.node.answer(task)
        for part in (answer.summary or {}).values():
            for cell in part["cells"]:
                if cell.get("n") is not None:
                    self.figures.append((_where(cohort or {}), cell, cell["n"]))
        return answer

    def children(self, where: str, cell: dict[str, Any]) -> int:
        """How many children the samples of a released cell come from, from the store."""
        conds = [where] + [f"{_column(k)} = '{v}'" for k, v in cell.items() if k != "n"]
        truth = specimen_truth(self.node.store, [], " AND ".join(conds))
        assert truth["n"].iloc[0] == cell["n"], (where, cell)  # the figure is the truth
        return int(truth["children"].iloc[0])

    def assert_each_figure_describes_enough_children(self) -> None:
        assert self.figures, "nothing was released"
        for where, cell, _ in self.figures:
            assert self.children(where, cell) >= MIN_CELL, (where, cell)

    def released(self, cell: dict[str, Any]) -> list[int]:
        """Every released n of a cell with these labels (any cohort)."""
        keys = set(cell)
        return [n for _, c, n in self.figures if set(c) - {"n"} == keys and _same(c, cell)]


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == v for k, v in b.items())


def _column(name: str) -> str:
    return {"specimen_type": "s.type", "sex": "p.sex"}.get(name, f"t.{name}")


def _where(cohort: dict[str, Any]) -> str:
    """The cohort as SQL over the store's tables (the few forms these attacks use)."""
    conds = ["TRUE"]
    for key, cond in cohort.items():
        if key == "diagnosis_date":
            conds.append(f"t.diagnosis_date <= DATE '{cond['to']}'")
        else:
            values = ", ".join(f"'{v}'" for v in cond)
            conds.append(f"{_column(key)} IN ({values})")
    return " AND ".join(conds)


def _cells(answer: Answer, part: str = "cells") -> list[dict[str, Any]]:
    assert answer.status == "answered", answer.reason
    return answer.summary[part]["cells"]


def test_one_childs_six_samples_are_not_a_cell(node: LocalNode) -> None:
    attacker = Attacker(node)
    answer = attacker.ask("crosstab", by=["specimen_type", "iccc_group"])
    cells = {(c["specimen_type"], c["iccc_group"]): c["n"] for c in _cells(answer)}
    assert cells.get(("bone_marrow", "XI")) is None  # 6 samples, one child
    assert cells.get(("rna", "XI")) is None
    margin = {c["iccc_group"]: c["n"] for c in _cells(answer, "margin:iccc_group")}
    assert margin.get("XI") is None  # 12 samples, still one child
    rna = {c["specimen_type"]: c["n"] for c in _cells(answer, "margin:specimen_type")}
    assert rna.get("rna") is None
    attacker.assert_each_figure_describes_enough_children()


def _hidden_lines_hold_enough_children(cells: list[dict[str, Any]], truth: pd.DataFrame) -> int:
    """Check every line (cells sharing all labels but one) of a released table; returns how
    many lines had hidden cells beside shown ones."""
    dims = [k for k in cells[0] if k != "n"]
    checked = 0
    for dim in dims:
        others = [d for d in dims if d != dim]
        lines: dict[tuple, list[dict[str, Any]]] = {}
        for c in cells:
            lines.setdefault(tuple(c[d] for d in others), []).append(c)
        for key, line in lines.items():
            hidden = {c[dim] for c in line if c["n"] is None}
            if not hidden or len(hidden) == len(line):
                continue
            checked += 1
            rows = truth[truth[dim].isin(hidden)]
            for d, v in zip(others, key, strict=True):
                rows = rows[rows[d] == v]
            kids = rows.patient_id.nunique()
            assert kids == 0 or kids >= MIN_CELL, f"{dim} line {key}: hidden sum of {kids}"
    return checked


def test_the_hidden_cells_of_a_line_hold_enough_children(node: LocalNode) -> None:
    """A line's margin less its shown cells is the sum of its hidden ones: that sum must not
    be one child's samples either (here RNA and other samples, both only the child's: each is
    suppressed, and neither can be told from the other, but together they are the child's)."""
    attacker = Attacker(node)
    truth = specimen_truth(node.store, ["s.type AS specimen_type", "t.iccc_group", "t.patient_id"])
    by_type = _cells(attacker.ask("count", by=["specimen_type"]))
    hidden = {c["specimen_type"] for c in by_type if c["n"] is None}
    assert {"rna", "other"} < hidden  # a third type is hidden with the child's two
    assert _hidden_lines_hold_enough_children(by_type, truth) == 1
    crosstab = _cells(attacker.ask("crosstab", by=["specimen_type", "iccc_group"]))
    assert _hidden_lines_hold_enough_children(crosstab, truth) >= 2
    attacker.assert_each_figure_describes_enough_children()


def test_a_cohort_of_that_one_child_is_too_few(node: LocalNode) -> None:
    answer = Attacker(node).ask("count", {"iccc_group": ["XI"]}, by=["specimen_type"])
    assert answer.status == "refused"
    assert answer.reason.startswith(TOO_FEW)
    assert not re.search(r"\b(6|12)\b", answer.reason)


def test_dropping_the_child_from_a_cohort_does_not_difference_out_their_samples(
    node: LocalNode,
) -> None:
    """Cohorts a day apart: the later one holds the child, the earlier not. Their bone-marrow
    counts differ by six samples, which a rule counting samples would let pass."""
    attacker = Attacker(node)
    day = TARGET_DAY
    attacker.ask("count", {"diagnosis_date": {"to": str(day - timedelta(days=1))}}, by=[])
    attacker.ask(
        "count", {"diagnosis_date": {"to": str(day - timedelta(days=1))}}, by=["specimen_type"]
    )
    attacker.ask("count", {"diagnosis_date": {"to": str(day)}}, by=["specimen_type"])
    attacker.ask("count", {"diagnosis_date": {"to": str(day)}}, by=[])
    for label in ({"specimen_type": "bone_marrow"}, {}):
        seen = attacker.released(label)
        assert len(set(seen)) <= 1, f"{label}: {seen} differ by the child's samples"
    attacker.assert_each_figure_describes_enough_children()


def test_a_type_filter_does_not_difference_out_one_childs_other_samples(
    node: LocalNode,
) -> None:
    """Every sample, then every sample but RNA: the same children, but the child's share
    changed, so the second total would give the child's six RNA extracts."""
    attacker = Attacker(node)
    everything = attacker.ask("count")
    assert everything.status == "answered"
    types = ["bone_marrow", "peripheral_blood", "dna", "csf"]
    but_rna = attacker.ask("count", {"specimen_type": types})
    totals = attacker.released({})
    assert len(set(totals)) == 1 or but_rna.status != "answered", totals
    attacker.assert_each_figure_describes_enough_children()


def test_random_specimen_queries_together_pin_down_no_child(node: LocalNode) -> None:
    """A sweep of cohorts and groupings; every pair of released figures of nested cohorts
    whose difference comes from 1 to 4 children is a leak."""
    attacker = Attacker(node)
    rng = np.random.default_rng(3)
    groups = ["I", "II", "III", "IV", "V", "VI", "XI"]
    for _ in range(25):
        cohort: dict[str, Any] = {}
        if rng.random() < 0.5:
            cohort["iccc_group"] = sorted(
                rng.choice(groups, size=int(rng.integers(2, 6)), replace=False)
            )
        if rng.random() < 0.5:
            cohort["diagnosis_date"] = {
                "to": str(TARGET_DAY - timedelta(days=int(rng.integers(0, 2))))
            }
        by = [b for b in ("specimen_type", "sex") if rng.random() < 0.5]
        attacker.ask("count", cohort, by=by)
    attacker.assert_each_figure_describes_enough_children()
    # every pair of figures with the same labels over nested cohorts, as sample sets
    sets = []
    for where, cell, _ in attacker.figures:
        labels = [f"{_column(k)} = '{v}'" for k, v in cell.items() if k != "n"]
        ids = specimen_truth(
            node.store, ["s.specimen_id", "t.patient_id"], " AND ".join([where, *labels])
        )
        sets.append((set(ids.specimen_id), dict(zip(ids.specimen_id, ids.patient_id, strict=True))))
    for i, (a, owner_a) in enumerate(sets):
        for b, owner_b in sets[i + 1 :]:
            if a <= b or b <= a:
                diff = a ^ b
                kids = {({**owner_a, **owner_b})[s] for s in diff}
                assert not 0 < len(kids) < MIN_CELL, (
                    f"{len(diff)} samples of {len(kids)} child(ren)"
                )


def test_the_catalogue_counts_specimen_types_by_children(node: LocalNode) -> None:
    catalogue = NodeCatalogue.for_store(node.store).publish().catalogue.model_dump(mode="json")
    cells = {c["type"]: c for c in catalogue["specimens"]}
    assert cells["rna"]["suppressed"] and cells["rna"]["count"] is None  # one child's six
    assert not cells["bone_marrow"]["suppressed"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 3)), min_size=1, max_size=40),
    st.sets(st.integers(0, 9), max_size=5),
    st.integers(0, 10_000),
)
def test_contributor_sets_differ_by_twice_the_children_who_changed(
    samples: list[tuple[int, int]], changed: set[int], seed: int
) -> None:
    """The ledger compares children: for two releases of samples (child, type), the symmetric
    difference of their contributor sets is exactly twice the number of children whose
    samples differ, however many samples each holds."""
    rng = np.random.default_rng(seed)
    before = sorted(set(samples))
    after = [s for s in before if s[0] not in changed or rng.random() < 0.5]
    for child in changed:  # a changed child loses some samples or gains new ones
        if rng.random() < 0.5 or not any(s[0] == child for s in before):
            after.append((child, 100 + int(rng.integers(0, 5))))
    after = sorted(set(after))

    def contributors(rows: list[tuple[int, int]]) -> np.ndarray:
        keys = np.array([c * 1000 + t + 1 for c, t in rows], dtype=np.uint64)
        owners = np.array([c + 1 for c, _ in rows], dtype=np.uint64)
        return Records(keys, np.zeros(len(keys), np.int64), owners, by_owner=True).sets(1)[0]

    children = {s[0] for s in before} | {s[0] for s in after}
    differ = {
        c for c in children if {s for s in before if s[0] == c} != {s for s in after if s[0] == c}
    }
    a, b = contributors(before), contributors(after)
    assert a.size == 2 * len({s[0] for s in before})
    assert symmetric_difference(a, b) == 2 * len(differ)
    assert pd.Series(a).is_unique
