"""Rules of the disclosure gate that its tests left unchecked, found by the mutation run
(docs/testing.md), each asserted at its boundary through the gate itself (`release`): a part
must count exactly the records it declares, else nothing is released; the ledger of releases
is the node's file, so it outlives the node process; a table too big for the exact audit
still hides its small cell; the registered audit's search misses no combination."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.gate import release
from ccdp.disclosure.ledger import ledger_path
from ccdp.disclosure.policy import NodePolicy
from ccdp.disclosure.refusals import Refusal
from ccdp.disclosure.registered_audit import _zero_sums
from ccdp.disclosure.suppress import suppress
from ccdp.federation.node.local import LocalNode
from ccdp.wire.protocol import Task
from ccdp.wire.records import Records
from ccdp.wire.summary import CountsPart, Summary
from tests.storekit import build_store, random_registry

EXACT = NodePolicy(counts="exact", min_cell=5)


def by_sex(stated: dict[str, int], true: dict[str, int]) -> Summary:
    """One count by sex whose cells state `stated` but whose record sets hold `true` records."""
    sizes = list(true.values())
    keys = np.arange(1, sum(sizes) + 1, dtype=np.uint64)
    rows = np.repeat(np.arange(len(sizes)), sizes)
    cells = [{"sex": s, "n": n} for s, n in stated.items()]
    return Summary(
        {"c": CountsPart(dims=["sex"], counts=["n"], cells=cells, records=Records(keys, rows))}
    )


def test_a_count_that_matches_its_records_is_released() -> None:
    counts = {"female": 40, "male": 60}
    out = release(by_sex(counts, counts), DisclosureContext(EXACT))
    assert {c["sex"]: c["n"] for c in out.summary.parts["c"].cells} == counts


@pytest.mark.parametrize("off", [-1, 1])
def test_a_count_one_off_its_records_is_refused(off: int) -> None:
    """A part stating 41 girls over a record set of 40 (or 39) is refused as undeclared: the
    gate judges the records, so a count it has not seen must never pass through."""
    true = {"female": 40, "male": 60}
    with pytest.raises(Refusal) as e:
        release(by_sex({"female": 40 + off, "male": 60}, true), DisclosureContext(EXACT))
    assert e.value.rule == "undeclared"


def test_the_ledger_outlives_the_node_process(tmp_path: Path) -> None:
    """The node's ledger is a file beside its store, so a differencing attack split over two
    node processes (a restart between the queries) is refused as it is within one."""
    store = build_store(tmp_path / "node.duckdb", random_registry(5, 200, "FR", "n"))
    assert ledger_path(store) == tmp_path / "node.ledger.db"
    first = LocalNode(store).answer(task(1, {"diagnosis_year": {"from": 2005}}))
    assert first.status == "answered"
    assert ledger_path(store).is_file()
    restarted = LocalNode(store)  # a new process: it must read what the first one released
    cut = float(restarted._read(["wbc_at_diagnosis"], CohortSpec.load({})).wbc_at_diagnosis.max())
    second = restarted.answer(task(2, {"wbc_at_diagnosis": {"to": cut - 1e-9}}))
    assert second.status == "answered" and "differencing" in second.reason
    assert second.summary["total"]["cells"][0]["n"] is None


def task(i: int, cohort: dict) -> Task:
    return Task(task_id=f"t{i}", study_id=f"s{i}", round=0, analysis="count", cohort=cohort)


def peel(hidden: np.ndarray) -> np.ndarray:
    """Cells an attacker still cannot solve for, given every row and column total: repeatedly
    solve each row or column that holds a single unknown cell (an independent, necessary
    check: a cell this solves is recoverable)."""
    unknown = hidden.copy()
    while True:
        rows = np.flatnonzero(unknown.sum(axis=1) == 1)
        cols = np.flatnonzero(unknown.sum(axis=0) == 1)
        if rows.size == 0 and cols.size == 0:
            return unknown
        unknown[rows] = False
        unknown[:, cols] = False


def test_a_table_too_big_for_the_exact_audit_still_hides_its_small_cell() -> None:
    """Over MAX_EXACT_CELLS × 4 base cells (100 × 70) neither the exact audit nor hypercubes
    run; the fallback protects every suppressed cell alone in a row or column. One count of 2
    among counts of 20: the row and column totals must not give it away."""
    grid = np.full((100, 70), 20)
    grid[37, 11] = 2
    cells = [{"r": i, "c": j, "n": int(grid[i, j])} for i in range(100) for j in range(70)]
    out, _ = suppress({"t": CountsPart(dims=["r", "c"], counts=["n"], cells=cells)}, 5)
    hidden = np.zeros(grid.shape, dtype=bool)
    for c in out["t"].cells:
        hidden[c["r"], c["c"]] = c["n"] is None
        assert c["n"] in (None, grid[c["r"], c["c"]])
    assert hidden[37, 11]
    assert peel(hidden)[37, 11], "the small cell follows from the row and column totals"


def minimal_zero_sums(
    parity: list[dict[int, int]], sizes: np.ndarray, most: int, prime: int
) -> list[tuple[int, ...]]:
    """By enumeration: every minimal set of atoms of total size <= most whose parity vectors
    sum to zero modulo `prime` (the reference for the registered audit's search)."""
    found: list[tuple[int, ...]] = []
    for k in range(1, len(parity) + 1):
        for atoms in itertools.combinations(range(len(parity)), k):
            if sizes[list(atoms)].sum() > most or any(set(f) < set(atoms) for f in found):
                continue
            total: dict[int, int] = {}
            for a in atoms:
                for j, v in parity[a].items():
                    total[j] = (total.get(j, 0) + v) % prime
            if not any(total.values()):
                found.append(atoms)
    return sorted(found)


def test_the_registered_audit_search_is_exact_where_its_bound_is_tight() -> None:
    """The search for small combinations of registered studies that pin records down prunes a
    branch when the atoms it may still add cannot cancel the running sum. Against enumeration,
    on GF(2) systems small enough to enumerate, including one where the bound is met with
    equality (a set found only by the branch the bound must keep): nothing is missed."""
    tight = [{0: 1, 1: 1}, {1: 1}, {1: 1, 0: 1}, {1: 1, 0: 1}, {0: 1}, {1: 1, 0: 1}, {1: 1}]
    cases = [(tight, np.array([2, 1, 1, 2, 1, 2, 1]), 4)]
    rng = np.random.default_rng(1)
    for _ in range(300):
        n, width = int(rng.integers(3, 8)), int(rng.integers(2, 5))
        supports = [rng.choice(width, int(rng.integers(1, width + 1)), False) for _ in range(n)]
        parity = [{int(j): 1 for j in support} for support in supports]
        cases.append((parity, rng.integers(1, 3, size=n), int(rng.integers(2, 6))))
    for parity, sizes, most in cases:
        found, complete = _zero_sums(parity, sizes.astype(np.int64), most, 2, 10**6)
        assert complete
        assert sorted(tuple(sorted(u)) for u in found) == minimal_zero_sums(parity, sizes, most, 2)
