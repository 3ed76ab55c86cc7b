"""The ledger of released sets agrees with a brute-force check and survives a restart."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ccdp.disclosure.ledger import Ledger, as_set, pack_ids, unpack_ids

KEYS = np.random.default_rng(0).integers(1, 2**63, size=200, dtype=np.uint64) * np.uint64(2)


def keyset(ix: list[int]) -> np.ndarray:
    return as_set(KEYS[ix])


def test_close_sets_refused_identical_and_far_allowed(tmp_path) -> None:
    ledger = Ledger(tmp_path / "n.ledger.db")
    base = keyset(list(range(50)))
    ledger.record([base], {"study": "a"})
    assert not ledger.refused([base], 5)[0]  # the same answer again
    assert ledger.refused([keyset(list(range(49)))], 5)[0]  # one fewer
    assert ledger.refused([keyset([*range(50), 120, 121])], 5)[0]  # two new records
    assert not ledger.refused([keyset(list(range(45)))], 5)[0]  # five apart
    assert not ledger.refused([keyset(list(range(100, 140)))], 5)[0]
    assert not ledger.refused([keyset(list(range(49)))], 0)[0]  # disabled


def test_the_ledger_is_kept_across_restarts(tmp_path) -> None:
    path = tmp_path / "n.ledger.db"
    first = Ledger(path)
    first.record([keyset(list(range(30)))], {})
    first.close()
    again = Ledger(path)
    assert len(again) == 1 and again.refused([keyset(list(range(31)))], 5)[0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sets(st.integers(0, 60), max_size=40), min_size=1, max_size=12),
    st.sets(st.integers(0, 199), max_size=40),
    st.integers(1, 8),
)
def test_agrees_with_brute_force(released: list[set[int]], new: set[int], threshold: int) -> None:
    ledger = Ledger()
    ledger.record([keyset(sorted(s)) for s in released], {})
    # a set released before adds nothing new, whatever else it is close to
    brute = new not in released and any(0 < len(new ^ s) < threshold for s in released)
    assert bool(ledger.refused([keyset(sorted(new))], threshold)[0]) == brute


def test_ids_pack_compactly_and_exactly() -> None:
    ids = np.sort(np.random.default_rng(1).choice(200_000, 20_000, replace=False))
    blob = pack_ids(ids)
    assert (unpack_ids(blob) == ids).all()
    assert len(blob) < 2 * ids.size  # about a byte a record for a dense set


def test_sets_reads_back_the_keys_by_project(tmp_path) -> None:
    """`Ledger.sets`: each released set as its record keys, with its metadata, oldest first; one
    project's alone; None past the limit (read by a fresh ledger, as detection does)."""
    path = tmp_path / "n.ledger.db"
    ledger = Ledger(path)
    a, b, c = keyset(list(range(30))), keyset(list(range(10, 60))), keyset([5, 150, 199])
    ledger.record([a, b], {"project": "p", "study_id": "s1"})
    ledger.record([c], {"project": "q"})
    ledger.close()
    again = Ledger(path)
    got = again.sets()
    assert got is not None
    sets, metas = got
    assert [s.tolist() for s in sets] == [a.tolist(), b.tolist(), c.tolist()]
    assert metas[0] == {"project": "p", "study_id": "s1"} and metas[2] == {"project": "q"}
    only = again.sets(project="q")
    assert only is not None and [s.tolist() for s in only[0]] == [c.tolist()]
    assert again.sets(project="p", limit=1) is None
    assert again.sets(project="none") == ([], [])
