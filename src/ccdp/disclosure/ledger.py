"""The node's ledger of released record sets: the memory that defeats differencing.

Every number a node releases counts a set of records (tumours, patients or event-time subjects,
keyed as `ccdp.wire.records.ledger_keys` says). Two released sets A and B whose symmetric
difference holds 1 to `threshold - 1` records let an attacker subtract one answer from the other
and describe those few children, so a set that differs so little from any earlier released set
(of any requester: requesters could collude) is refused, and the gate suppresses that cell.
Identical sets are allowed (the same answer again, e.g. every Newton round of one model).

The ledger lives in SQLite beside the store (`<store stem>.ledger.db`, never sent anywhere). It
numbers each record key once (`keys`: key -> dense id) and keeps a set as its sorted ids, delta
coded and deflated: a set of a large cohort costs about a byte a record. Checking stays fast with
many thousands of sets: only sets whose size is within `threshold` of the new one can be close;
among those a 64-bucket sketch (how many keys fall in each bucket) rules out nearly all, since the
L1 distance of two sketches never exceeds the symmetric difference of their sets; the few left
are compared exactly (keys never recorded count as differences).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

BUCKETS = 64
_OF_PROJECT = "WHERE json_extract(meta, '$.project') = ?"
_SHIFT = np.uint64(64 - 6)  # the top 6 bits of a key pick its bucket

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (id INTEGER PRIMARY KEY, key INTEGER NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS released (
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    sketch BLOB NOT NULL,
    members BLOB NOT NULL,
    meta TEXT NOT NULL,
    released_at TEXT NOT NULL
)
"""


def ledger_path(store: Path | str) -> Path:
    """`<store stem>.ledger.db` beside the store."""
    store = Path(store)
    return store.with_name(f"{store.stem}.ledger.db")


def as_set(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct uint64 keys: the one form a set takes in the ledger."""
    return np.unique(np.asarray(keys, dtype=np.uint64))


def sketch(members: np.ndarray) -> np.ndarray:
    """Keys per bucket (int32, BUCKETS long)."""
    return np.bincount((members >> _SHIFT).astype(np.int64), minlength=BUCKETS).astype(np.int32)


def digest(members: np.ndarray) -> bytes:
    return hashlib.sha256(members.tobytes()).digest()


def pack_ids(ids: np.ndarray) -> bytes:
    """Sorted ids as deflated deltas (uint32)."""
    return zlib.compress(np.diff(ids, prepend=0).astype("<u4").tobytes(), 1)


def unpack_ids(blob: bytes) -> np.ndarray:
    return np.cumsum(np.frombuffer(zlib.decompress(blob), dtype="<u4").astype(np.int64))


def symmetric_difference(a: np.ndarray, b: np.ndarray) -> int:
    """|A Δ B| of two sorted distinct key arrays."""
    common = np.intersect1d(a, b, assume_unique=True).size
    return int(a.size + b.size - 2 * common)


class _Numbering:
    """Key -> id held as a few sorted runs, each at least twice the next: adding n keys merges
    runs of like size (as a binary counter carries), so numbering N keys in all costs
    O(N log N) however many sets bring them, where one array re-sorted on every set cost
    O(N log N) a set; a lookup searches each of the O(log N) runs."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted uint64 keys, their ids)

    def add(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Add sorted keys, none already held, with their ids."""
        if keys.size == 0:
            return
        self.runs.append((keys, ids))
        while len(self.runs) > 1 and self.runs[-2][0].size <= 2 * self.runs[-1][0].size:
            (k2, i2), (k1, i1) = self.runs.pop(), self.runs.pop()
            at = np.searchsorted(k1, k2)
            self.runs.append((np.insert(k1, at, k2), np.insert(i1, at, i2)))

    def lookup(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sorted ids of the members held, mask of those members)."""
        known = np.zeros(members.size, dtype=bool)
        found = []
        for keys, ids in self.runs:
            pos = np.minimum(np.searchsorted(keys, members), keys.size - 1)
            hit = keys[pos] == members
            known |= hit
            found.append(ids[pos[hit]])
        if not found:
            return np.zeros(0, dtype=np.int64), known
        return np.sort(np.concatenate(found)), known

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """All keys held and their ids (in no particular order)."""
        if not self.runs:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
        return (
            np.concatenate([k for k, _ in self.runs]),
            np.concatenate([i for _, i in self.runs]),
        )


@dataclass
class _Index:
    """What the checks read of every released set, held in memory."""

    ids: np.ndarray
    sizes: np.ndarray
    sketches: np.ndarray
    digests: set[bytes]


class Ledger:
    """Released sets of one node; `path=None` keeps them in memory (tests, dry runs)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._con: sqlite3.Connection | None = None
        self._index: _Index | None = None
        self._seen = -1
        self._numbering = _Numbering()  # key -> id of the keys read or numbered so far
        self._top_id = 0

    # -- storage --------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            target = ":memory:" if self.path is None else str(self.path)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(target, timeout=30.0, check_same_thread=False)
            self._con.executescript(SCHEMA)
            self._con.commit()
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _current(self) -> _Index:
        """The in-memory index, refreshed with sets another process recorded meanwhile."""
        con = self._db()
        top = con.execute("SELECT coalesce(max(id), 0) FROM released").fetchone()[0]
        if self._index is not None and top == self._seen:
            return self._index
        since = 0 if self._index is None else self._seen
        rows = con.execute(
            "SELECT id, size, digest, sketch FROM released WHERE id > ? ORDER BY id", (since,)
        ).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        sizes = np.array([r[1] for r in rows], dtype=np.int64)
        sk = (
            np.frombuffer(b"".join(r[3] for r in rows), dtype=np.int32).reshape(-1, BUCKETS)
            if rows
            else np.zeros((0, BUCKETS), dtype=np.int32)
        )
        old = self._index
        if old is None:
            self._index = _Index(ids, sizes, sk, {bytes(r[2]) for r in rows})
        else:
            old.digests.update(bytes(r[2]) for r in rows)
            self._index = _Index(
                np.concatenate([old.ids, ids]),
                np.concatenate([old.sizes, sizes]),
                np.vstack([old.sketches, sk]),
                old.digests,
            )
        self._seen = top
        return self._index

    def _members(self, set_id: int) -> np.ndarray:
        """A recorded set's sorted ids."""
        row = self._db().execute("SELECT members FROM released WHERE id = ?", (set_id,)).fetchone()
        return unpack_ids(row[0])

    # -- key numbering --------------------------------------------------------------------
    def _refresh_keys(self) -> None:
        """Read the keys another process numbered since (none: this process adds its own)."""
        con = self._db()
        top = con.execute("SELECT coalesce(max(id), 0) FROM keys").fetchone()[0]
        if top == self._top_id:
            return
        cur = con.execute(  # up to `top`: a row added since is read next time, never twice
            "SELECT id, key FROM keys WHERE id > ? AND id <= ? ORDER BY id", (self._top_id, top)
        )
        # rows stream into one flat array: no list of a tuple per key held at once
        flat = np.fromiter(chain.from_iterable(cur), dtype=np.int64).reshape(-1, 2)
        keys = flat[:, 1].view(np.uint64)
        order = np.argsort(keys, kind="stable")  # only the new rows are sorted
        self._numbering.add(keys[order], flat[order, 0])
        self._top_id = top

    def _lookup(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids of the members already numbered, mask of those members)."""
        return self._numbering.lookup(members)

    def _number_all(self, sets: list[np.ndarray]) -> list[np.ndarray]:
        """Sorted ids of each set's members, numbering keys seen for the first time: new keys
        take the next ids in the order of the sets, then of the keys (as inserting them one set
        after another did), in one write transaction so no other process numbers meanwhile."""
        self._refresh_keys()
        looked = [self._lookup(m) for m in sets]
        if all(known.all() for _, known in looked):
            return [ids for ids, _ in looked]
        con = self._db()
        con.execute("BEGIN IMMEDIATE")
        try:
            self._refresh_keys()  # keys another process numbered before the lock was taken
            out = []
            for members in sets:
                ids, known = self._lookup(members)
                if not known.all():
                    self._insert_keys(con, members[~known])
                    ids, known = self._lookup(members)
                out.append(ids)
            con.commit()
        except BaseException:
            con.rollback()
            self._forget_keys()
            raise
        return out

    def _insert_keys(self, con: sqlite3.Connection, fresh: np.ndarray) -> None:
        """Give `fresh` (none numbered yet) the next ids in the order they come, a repeated key
        once (as `INSERT OR IGNORE` of each in turn did), in memory and in the table."""
        if fresh.size > 1 and not bool(np.all(fresh[1:] > fresh[:-1])):  # not a sorted set
            _, first = np.unique(fresh, return_index=True)
            fresh = fresh[np.sort(first)]
        ids = np.arange(self._top_id + 1, self._top_id + 1 + fresh.size, dtype=np.int64)
        con.executemany(
            "INSERT INTO keys (id, key) VALUES (?, ?)",
            zip(ids.tolist(), fresh.view(np.int64).tolist(), strict=True),
        )
        order = np.argsort(fresh, kind="stable")
        self._numbering.add(fresh[order], ids[order])
        self._top_id += int(fresh.size)

    def _forget_keys(self) -> None:
        """Drop the in-memory numbering (a rolled back write may have added to it)."""
        self._numbering = _Numbering()
        self._top_id = 0

    def _number(self, members: np.ndarray) -> np.ndarray:
        """Sorted ids of `members`, numbering keys seen for the first time."""
        return self._number_all([members])[0]

    def __len__(self) -> int:
        return int(self._current().ids.size)

    def sets(
        self, project: str | None = None, limit: int | None = None
    ) -> tuple[list[np.ndarray], list[dict[str, Any]]] | None:
        """The released sets (of one project, when given: its releases' `project` metadata) as
        sorted record keys, with the metadata each was recorded with, oldest first; None when
        there are more than `limit` of them (the caller then says it skipped them)."""
        con = self._db()
        where, args = ("", ()) if project is None else (_OF_PROJECT, (project,))
        count = con.execute(f"SELECT count(*) FROM released {where}", args).fetchone()[0]
        if limit is not None and count > limit:
            return None
        rows = con.execute(
            f"SELECT members, meta FROM released {where} ORDER BY id", args
        ).fetchall()
        if not rows:
            return [], []
        self._refresh_keys()
        keys, ids = self._numbering.pairs()
        key_of = np.zeros(int(ids.max(initial=0)) + 1, dtype=np.uint64)
        key_of[ids] = keys
        sets = [np.sort(key_of[unpack_ids(r[0])]) for r in rows]
        return sets, [json.loads(r[1]) for r in rows]

    # -- the rule -------------------------------------------------------------------------
    def refused(self, sets: list[np.ndarray], threshold: int) -> np.ndarray:
        """For each set (sorted distinct keys), True when it differs from a released set by
        1 to threshold - 1 records."""
        out = np.zeros(len(sets), dtype=bool)
        if threshold <= 1 or not sets:
            return out
        index = self._current()
        if index.ids.size == 0:
            return out
        for i, members in enumerate(sets):
            out[i] = self._too_close(index, members, threshold)
        return out

    def _too_close(self, index: _Index, members: np.ndarray, threshold: int) -> bool:
        if digest(members) in index.digests:
            return False  # the very same set was released before: nothing new
        near = np.flatnonzero(np.abs(index.sizes - members.size) < threshold)
        if near.size == 0:
            return False
        l1 = np.abs(index.sketches[near] - sketch(members)[None, :]).sum(axis=1)
        close = near[l1 < threshold]
        if close.size == 0:
            return False
        self._refresh_keys()
        ids, known = self._lookup(members)
        unknown = int(members.size - known.sum())  # never recorded: in no released set
        for j in close:
            d = unknown + symmetric_difference(ids, self._members(int(index.ids[j])))
            if 0 < d < threshold:
                return True
        return False

    def record(self, sets: list[np.ndarray], meta: dict[str, Any]) -> int:
        """Remember released sets (each once); returns how many were new."""
        con = self._db()
        now = datetime.now(UTC).isoformat()
        text = json.dumps(meta, default=str, sort_keys=True)
        rows = []
        known = self._current().digests
        fresh: dict[bytes, np.ndarray] = {}
        for members in sets:
            d = digest(members)
            if d not in known and d not in fresh:
                fresh[d] = members
        numbered = self._number_all(list(fresh.values()))
        for (d, members), ids in zip(fresh.items(), numbered, strict=True):
            rows.append((int(members.size), d, sketch(members).tobytes(), pack_ids(ids)))
        with con:
            con.executemany(
                "INSERT OR IGNORE INTO released (size, digest, sketch, members, meta, released_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(*r, text, now) for r in rows],
            )
        return len(rows)


__all__ = ["Ledger", "as_set", "ledger_path", "symmetric_difference"]
