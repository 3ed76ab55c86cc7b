"""Keyed hash chains: what the node's audit log and the hub's audit table share.

A record is a JSON object with `seq` (1, 2, ...), `prev` (the previous record's hash, GENESIS for
the first) and `hash`: an HMAC-SHA256, keyed by a secret kept outside the log, over the record's
canonical JSON (every field but `hash`). Editing, removing or reordering a record breaks the chain
at that record, and nobody without the key can recompute it. A head (seq, hash and an HMAC over
both) kept apart from the log catches a log cut short behind the last record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccdp.errors import CcdpError
from ccdp.store.files import replace_durably

GENESIS = "0" * 64
MIN_KEY_BYTES = 16


class ChainBroken(CcdpError):
    """A chain does not verify; `seq` is the first bad record's (1-based) position."""

    def __init__(self, seq: int, why: str) -> None:
        self.seq, self.why = seq, why
        super().__init__(why)


class HeadError(CcdpError):
    """A head file is unreadable or its HMAC does not match (edited, or another key's)."""


@dataclass(frozen=True)
class Head:
    """The last record of a chain: its seq and hash (seq 0 and GENESIS before any record)."""

    seq: int
    hash: str


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's HMAC covers: sorted-key compact JSON of every field but `hash`."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def record_mac(key: bytes, record: Mapping[str, Any]) -> str:
    """A record's hash: HMAC-SHA256 over its canonical JSON (all fields but `hash`)."""
    return hmac.new(key, canonical(record), hashlib.sha256).hexdigest()


def head_mac(key: bytes, seq: int, digest: str) -> str:
    """A head's own HMAC ("head:" prefix: never equal to a record's, which is JSON)."""
    return hmac.new(key, f"head:{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


def walk(records: Iterable[Mapping[str, Any]], key: bytes) -> Head:
    """The head of an intact chain; ChainBroken at the first record out of place (a seq that is
    not the next one: removed or reordered), not following its predecessor, or altered."""
    prev = GENESIS
    i = 0
    for i, rec in enumerate(records, start=1):
        if rec.get("seq") != i:
            raise ChainBroken(i, f"record {i} has seq {rec.get('seq')} (removed or reordered?)")
        if rec.get("prev") != prev:
            raise ChainBroken(i, f"record {i} does not follow record {i - 1}")
        if not hmac.compare_digest(record_mac(key, rec), str(rec.get("hash"))):
            raise ChainBroken(i, f"record {i} was altered (HMAC mismatch)")
        prev = str(rec["hash"])
    return Head(i, prev)


def write_head(path: Path, key: bytes, head: Head) -> None:
    """Atomic: a reader sees the old head or the new one, never half of one."""
    body = {"seq": head.seq, "hash": head.hash, "mac": head_mac(key, head.seq, head.hash)}
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(body, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    replace_durably(tmp, path)  # else a crash can bring back the old head: a false rollback


def read_head(path: Path, key: bytes) -> Head | None:
    """The head a file holds, its HMAC checked; None if there is no file."""
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text("utf-8"))
        seq, digest, mac = int(body["seq"]), str(body["hash"]), body["mac"]
    except (ValueError, KeyError, TypeError):
        raise HeadError(f"{path}: the audit head is unreadable") from None
    if not hmac.compare_digest(str(mac), head_mac(key, seq, digest)):
        raise HeadError(f"{path}: the audit head was altered (HMAC mismatch)")
    return Head(seq, digest)


def check_anchor(
    records: Sequence[Mapping[str, Any]],
    anchor: Head,
    holder: str = "the head",
    there: str = "in it",
) -> None:
    """ChainBroken unless the chain still holds the record `anchor` names: a chain cut behind
    it, or rewritten up to it (even with the key), does not. `holder` and `there` name who holds
    the anchor in the message."""
    if anchor.seq == 0:
        return
    if anchor.seq > len(records):
        raise ChainBroken(
            len(records) + 1,
            f"{len(records)} record(s) but {holder} says {anchor.seq} "
            f"(records {len(records) + 1} to {anchor.seq} cut off)",
        )
    held = str(records[anchor.seq - 1].get("hash"))
    if held != anchor.hash:
        raise ChainBroken(
            anchor.seq,
            f"record {anchor.seq} differs from {holder} ({held[:12]} here, "
            f"{anchor.hash[:12]} {there}): edited or rewritten",
        )
