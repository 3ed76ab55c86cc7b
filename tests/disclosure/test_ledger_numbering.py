"""The ledger's key numbering gives the very ids the first numbering gave (kept here as it was),
so stored sets stay the same bytes, also when two processes record into one file in turn."""

from __future__ import annotations

import multiprocessing
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ccdp.disclosure.ledger import Ledger, as_set

RNG = np.random.default_rng(11)
# keys over the whole uint64 range: half have the top bit set (negative as SQLite integers)
POOL = RNG.integers(0, 2**64 - 1, size=3000, dtype=np.uint64, endpoint=True)


class OldNumbering(Ledger):
    """The numbering as it was before sorted runs (8d86ca4): one sorted array re-sorted after
    every set, fresh keys inserted with `INSERT OR IGNORE` one set at a time."""

    def __init__(self, path: Path | str | None = None) -> None:
        super().__init__(path)
        self._keys = np.zeros(0, dtype=np.uint64)
        self._ids = np.zeros(0, dtype=np.int64)

    def _refresh_keys(self) -> None:
        con = self._db()
        top = con.execute("SELECT coalesce(max(id), 0) FROM keys").fetchone()[0]
        if top == self._top_id:
            return
        rows = np.array(
            con.execute("SELECT id, key FROM keys WHERE id > ?", (self._top_id,)).fetchall(),
            dtype=np.int64,
        ).reshape(-1, 2)
        keys = np.concatenate([self._keys, rows[:, 1].view(np.uint64)])
        ids = np.concatenate([self._ids, rows[:, 0]])
        order = np.argsort(keys, kind="stable")
        self._keys, self._ids, self._top_id = keys[order], ids[order], top

    def _lookup(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._keys.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(members.size, dtype=bool)
        pos = np.minimum(np.searchsorted(self._keys, members), self._keys.size - 1)
        known = self._keys[pos] == members
        return np.sort(self._ids[pos[known]]), known

    def _number(self, members: np.ndarray) -> np.ndarray:
        self._refresh_keys()
        ids, known = self._lookup(members)
        if not known.all():
            fresh = members[~known].view(np.int64)
            con = self._db()
            with con:
                con.executemany(
                    "INSERT OR IGNORE INTO keys (key) VALUES (?)", [(int(k),) for k in fresh]
                )
            self._refresh_keys()
            ids, known = self._lookup(members)
        return ids

    def _number_all(self, sets: list[np.ndarray]) -> list[np.ndarray]:
        return [self._number(m) for m in sets]


def calls(n: int, seed: int) -> list[list[np.ndarray]]:
    """`n` record calls of 1 to 4 sets each, overlapping one another, with repeats."""
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = []
    for _ in range(n):
        batch = []
        for _ in range(int(rng.integers(1, 5))):
            lo = int(rng.integers(0, POOL.size - 400))
            batch.append(as_set(POOL[lo : lo + int(rng.integers(1, 400))]))
        if out and rng.random() < 0.3:
            batch.append(out[-1][0])  # released before: kept once
        batch.append(batch[0])  # twice in one call: kept once
        out.append(batch)
    return out


def tables(path: Path) -> tuple[list[tuple[int, int]], list[tuple[int, int, bytes, bytes, bytes]]]:
    """The `keys` table and the `released` rows but their time stamps."""
    con = sqlite3.connect(path)
    try:
        keys = con.execute("SELECT id, key FROM keys ORDER BY id").fetchall()
        released = con.execute(
            "SELECT id, size, digest, sketch, members FROM released ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    return keys, released


def test_same_sets_give_the_same_tables_as_the_old_numbering(tmp_path) -> None:
    old, new = OldNumbering(tmp_path / "old.db"), Ledger(tmp_path / "new.db")
    counts = []
    for batch in calls(40, seed=1):
        counts.append((old.record(batch, {"s": 1}), new.record(batch, {"s": 1})))
    old.close(), new.close()
    assert all(a == b for a, b in counts) and sum(a for a, _ in counts) > 40
    keys, released = tables(tmp_path / "new.db")
    assert (keys, released) == tables(tmp_path / "old.db")
    assert [i for i, _ in keys] == list(range(1, len(keys) + 1))  # dense ids
    assert any(k < 0 for _, k in keys)  # top-bit keys stored as negative integers


def test_two_ledgers_on_one_file_number_as_one_would(tmp_path) -> None:
    seq = calls(30, seed=2)
    one = Ledger(tmp_path / "one.db")
    for batch in seq:
        one.record(batch, {})
    one.close()
    a, b = Ledger(tmp_path / "two.db"), Ledger(tmp_path / "two.db")
    a.record(seq[0], {})
    b.refused(seq[0], 5)  # b reads the numbering now, and must see a's later keys too
    for i, batch in enumerate(seq[1:]):
        (a if i % 2 else b).record(batch, {})
    assert tables(tmp_path / "two.db") == tables(tmp_path / "one.db")
    # each object reads the keys the other numbered: both give back every set as recorded
    one = Ledger(tmp_path / "one.db")
    want = one.sets()
    assert want is not None and len(want[0]) > 30
    for led in (a, b):
        got = led.sets()
        assert got is not None and [s.tobytes() for s in got[0]] == [s.tobytes() for s in want[0]]


def test_duplicates_and_known_keys_are_numbered_once(tmp_path) -> None:
    old, new = OldNumbering(tmp_path / "old.db"), Ledger(tmp_path / "new.db")
    first = as_set(POOL[:100])
    mixed = np.concatenate([POOL[50:150], POOL[120:200], POOL[60:70]])  # repeats, known keys
    for led in (old, new):
        led.record([first], {})
    ids_old, ids_new = old._number(mixed), new._number(mixed)
    assert np.array_equal(ids_old, ids_new)
    old.close(), new.close()
    keys, _ = tables(tmp_path / "new.db")
    assert keys == tables(tmp_path / "old.db")[0] and len(keys) == 200  # each key once
    id_of = {k: i for i, k in keys}
    # the first set's keys in key order, then the new keys in the order they first came
    assert sorted(id_of[int(k)] for k in POOL[:100].view(np.int64)) == list(range(1, 101))
    assert [id_of[int(k)] for k in POOL[100:200].view(np.int64)] == list(range(101, 201))


def test_rule_decisions_match_the_old_numbering(tmp_path) -> None:
    old, new = OldNumbering(), Ledger()
    for batch in calls(20, seed=3):
        old.record(batch, {}), new.record(batch, {})
    probes = [as_set(np.delete(s, 0)) for batch in calls(10, seed=4) for s in batch]
    probes += [as_set(POOL[i : i + 50]) for i in range(0, 2900, 97)]
    for threshold in (2, 5, 11):
        assert np.array_equal(old.refused(probes, threshold), new.refused(probes, threshold))


def _record_all(path: str, seed: int) -> int:
    """One process's records (run in a child process)."""
    ledger = Ledger(path)
    kept = sum(ledger.record(batch, {"seed": seed}) for batch in calls(25, seed=seed))
    ledger.close()
    return kept


def test_processes_recording_at_once_number_each_key_once(tmp_path) -> None:
    path = str(tmp_path / "shared.db")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        kept = sum(pool.map(_record_all, [path, path], [5, 6]))
    keys, released = tables(Path(path))
    assert [i for i, _ in keys] == list(range(1, len(keys) + 1))
    assert len({k for _, k in keys}) == len(keys)  # no key numbered twice
    assert len(released) == kept
    got = Ledger(path).sets()
    assert got is not None
    recorded = {s.tobytes() for seed in (5, 6) for batch in calls(25, seed=seed) for s in batch}
    assert {s.tobytes() for s in got[0]} == recorded  # every set maps back to its keys
