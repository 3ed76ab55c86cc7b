"""The node's tamper-evident audit log: every answer that leaves (or is refused) is recorded.

A JSON-lines file beside the store (`<store stem>.audit.jsonl`). Each record holds the hash of the
previous record and its own hash: an HMAC-SHA256, keyed by the node's `audit_key` (in the node
config `<store stem>.node.yaml`, never in the log), over its canonical JSON. Editing, deleting or
reordering a record breaks the chain from that point, and someone without the key cannot
recompute the chain after an edit.

After every append the head (seq, hash, and an HMAC over both) is written to a sidecar
`<store stem>.audit.head`, so a log cut short, emptied or deleted no longer matches its head. The
node also sends the head to its hub with every answer and heartbeat; the hub keeps the highest one,
which catches what a holder of the key could still do locally (edit and re-key the chain, or put
back an older copy of log and head): `ccdp node audit --verify --hub URL --token T`.

Logs written before keyed records (plain SHA-256 chains, protocol version 2) are not read as valid:
`verify` says so; move such a log (and start a new one) to keep it as a record.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from ccdp.errors import CcdpError
from ccdp.governance.chain import (
    GENESIS,
    ChainBroken,
    Head,
    HeadError,
    canonical,
    check_anchor,
    head_mac,
    read_head,
    record_mac,
    walk,
    write_head,
)
from ccdp.wire.protocol import AuditHead

TAIL_BLOCK = 1 << 16


class AuditError(CcdpError):
    """The audit log is unreadable, its chain is broken, or it does not match its head."""


def audit_path(store: Path | str) -> Path:
    store = Path(store)
    return store.with_name(f"{store.stem}.audit.jsonl")


def head_path(log_path: Path | str) -> Path:
    """`site.audit.jsonl` -> `site.audit.head` in the same folder."""
    log_path = Path(log_path)
    name = log_path.name.removesuffix(".jsonl")
    return log_path.with_name(f"{name}.head")


def _sha256(record: dict[str, Any]) -> str:
    """The unkeyed digest older logs used (only to say that a log is of the old kind)."""
    return hashlib.sha256(canonical(record)).hexdigest()


__all__ = ["GENESIS", "AuditError", "AuditLog", "head_mac", "record_mac"]


class AuditLog:
    """Append-only HMAC-chained log with its head kept in a sidecar file."""

    def __init__(self, path: Path | str, key: bytes | None = None) -> None:
        """`key` defaults to the `audit_key` of the node config beside the log (same stem),
        read (or created) at first use, not here."""
        if key is not None and len(key) < 16:
            raise AuditError("the audit key is too short (need >= 16 bytes)")
        self.path = Path(path)
        self.head_path = head_path(self.path)
        self._key_value = key

    @classmethod
    def for_store(cls, store: Path | str) -> AuditLog:
        """The log beside `store`, keyed by the node config's `audit_key`."""
        return cls(audit_path(store))

    @property
    def _key(self) -> bytes:
        if self._key_value is None:
            from ccdp.store.config import audit_key

            stem = self.path.name.removesuffix(".jsonl").removesuffix(".audit")
            self._key_value = audit_key(self.path.with_name(f"{stem}.duckdb"))
        return self._key_value

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
        """Add one record, chained to the last one, and move the head to it (file-locked
        against concurrent writers; reads only the log's tail, however long the log)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                prev = self._last(fh)
                record = {
                    "seq": (prev["seq"] + 1) if prev else 1,
                    **entry,
                    "prev": prev["hash"] if prev else GENESIS,
                }
                record["hash"] = record_mac(self._key, record)
                fh.seek(0, os.SEEK_END)
                fh.write((json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
                self._write_head(record["seq"], record["hash"])
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return record

    def _write_head(self, seq: int, digest: str) -> None:
        write_head(self.head_path, self._key, Head(seq, digest))

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

    def head(self) -> AuditHead | None:
        """The head the sidecar file holds (its HMAC checked); None before the first record."""
        try:
            held = read_head(self.head_path, self._key)
            return None if held is None else AuditHead(seq=held.seq, hash=held.hash)
        except HeadError as exc:
            raise AuditError(str(exc)) from None
        except ValueError:  # a head whose fields are not a protocol AuditHead
            raise AuditError(f"{self.head_path}: the audit head is unreadable") from None

    def verify(self) -> AuditHead:
        """The head of an intact log (seq 0 when there is none yet); AuditError naming the first
        bad record, or how the log and its head disagree."""
        return self._verify()[0]

    def _verify(self) -> tuple[AuditHead, list[dict[str, Any]]]:
        head = self.head()
        records = self.records()
        try:
            walk(records, self._key)
        except ChainBroken as exc:
            if exc.seq == 1 and records and _sha256(records[0]) == records[0].get("hash"):
                raise AuditError(
                    f"{self.path}: an unkeyed (plain SHA-256) log of an older ccdp; move it "
                    "aside to keep it and let the node start a keyed log"
                ) from None
            raise AuditError(f"{self.path}: {exc}") from None
        n = len(records)
        if head is None:
            if n:
                raise AuditError(f"{self.head_path}: the audit head is missing ({n} record(s))")
            return AuditHead(seq=0, hash=GENESIS), records
        if n == 0 and head.seq > 0:
            state = "empty" if self.path.exists() else "missing"
            raise AuditError(
                f"{self.path}: the log is {state} but its head says {head.seq} record(s)"
            )
        if n < head.seq:
            raise AuditError(
                f"{self.path}: {n} record(s) but the head says {head.seq} "
                "(cut short or rolled back)"
            )
        if n > head.seq:
            raise AuditError(
                f"{self.path}: {n} record(s) but the head says {head.seq} (head rolled back?)"
            )
        if records[-1]["hash"] != head.hash:
            raise AuditError(f"{self.path}: the last record's hash differs from the head's")
        return head, records

    def check_against(self, anchor: AuditHead) -> AuditHead:
        """Verify locally, then that the log holds the record the hub last heard of: a log cut,
        deleted, edited (even re-keyed) or rolled back since then does not."""
        head, records = self._verify()
        if anchor.seq > head.seq:
            raise AuditError(
                f"the hub holds head {anchor.seq} but the log has {head.seq} record(s) "
                "(cut short, deleted or rolled back)"
            )
        try:
            check_anchor(
                records, Head(anchor.seq, anchor.hash), "the head the hub holds", "at the hub"
            )
        except ChainBroken as exc:
            raise AuditError(str(exc)) from None
        return head
