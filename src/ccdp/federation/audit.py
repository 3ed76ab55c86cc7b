"""The node's tamper-evident audit log: every answer that leaves (or is refused) is recorded.

A JSON-lines file beside the store (`<store stem>.audit.jsonl`); each record holds the SHA-256 of
the previous record, and its own hash over its canonical JSON, so editing, deleting or reordering
any record breaks the chain from that point. `ccdp node audit --store S --verify` checks it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from ccdp.errors import CcdpError

GENESIS = "0" * 64
TAIL_BLOCK = 1 << 16


class AuditError(CcdpError):
    """The audit log is unreadable or its hash chain is broken."""


def audit_path(store: Path | str) -> Path:
    store = Path(store)
    return store.with_name(f"{store.stem}.audit.jsonl")


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AuditLog:
    """Append-only hash-chained log."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for i, line in enumerate(self.path.read_text("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise AuditError(f"{self.path}: line {i} is not JSON") from None
        return out

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Add one record, chained to the last one (file-locked against concurrent writers)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            prev = self._last(fh)
            record = {
                "seq": (prev["seq"] + 1) if prev else 1,
                **entry,
                "prev": prev["hash"] if prev else GENESIS,
            }
            record["hash"] = _digest(record)
            fh.seek(0, os.SEEK_END)
            fh.write((json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8"))
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)
        return record

    def _last(self, fh: BinaryIO) -> dict[str, Any] | None:
        """The last record, read backwards from the end: a node's log grows without bound (a
        Cox round can log megabytes), so appending must not re-read it."""
        pos = fh.seek(0, os.SEEK_END)
        tail = b""
        while pos > 0:
            step = min(TAIL_BLOCK, pos)
            pos -= step
            fh.seek(pos)
            tail = fh.read(step) + tail
            body = tail.rstrip()
            if b"\n" in body or (pos == 0 and body):
                line = body.rsplit(b"\n", 1)[-1]
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    raise AuditError(f"{self.path}: the last record is not JSON") from None
        return None

    def verify(self) -> int:
        """Number of records when the chain is intact; AuditError naming the first bad record."""
        prev = GENESIS
        records = self.records()
        for i, rec in enumerate(records, start=1):
            if rec.get("seq") != i:
                raise AuditError(f"{self.path}: record {i} has seq {rec.get('seq')} (removed?)")
            if rec.get("prev") != prev:
                raise AuditError(f"{self.path}: record {i} does not follow record {i - 1}")
            if _digest(rec) != rec.get("hash"):
                raise AuditError(f"{self.path}: record {i} was altered (hash mismatch)")
            prev = rec["hash"]
        return len(records)
