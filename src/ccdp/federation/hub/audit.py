"""The hub's audit log: a keyed hash chain in the hub's own database (table `audit`).

Every record holds its `seq`, the previous record's hash (`prev`) and its own `hash`, an
HMAC-SHA256 over its canonical content (seq, at, actor, action, detail, prev), keyed by the hub's
audit key. The key is kept outside the database, so whoever can edit the database (a DBA, a
stolen backup) cannot re-chain an edit: beside a SQLite file (`hub.db` -> `hub.audit.key`), or
for PostgreSQL in the file `$CCDP_HUB_AUDIT_KEY` / `--audit-key` names (by default one per
database under `~/.config/ccdp/hub-audit/`). It is generated on first start, mode 0600.

The latest head (seq, hash, HMAC) is kept in a sidecar file beside the key (`hub.audit.head`),
moved forward after every commit that appended: a tail cut from the table no longer reaches it.
The sidecar is made as durable as the commits it anchors, no more: fsynced where the database
fsyncs each commit (PostgreSQL), replaced atomically without an fsync over SQLite in WAL with
synchronous=NORMAL (db.py), whose commits skip theirs. An fsynced head there cost an fsync per
answer (most of record_answer's time) and, after a power cut, could name records the database
lost: a false "tail cut". A head that falls behind still verifies.

Appends are serialised by the one-row table `audit_head`: each append first updates that row
(the write lock on SQLite, a row lock on PostgreSQL) and only then reads the last seq, so two
requests appending at once take seq n+1 and n+2, never both n+1.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, Table, bindparam, event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ccdp.errors import CcdpError
from ccdp.federation.hub.models import AuditHeadRow, AuditRow
from ccdp.federation.hub.urls import normalise_url
from ccdp.governance.chain import (
    GENESIS,
    MIN_KEY_BYTES,
    ChainBroken,
    Head,
    HeadError,
    check_anchor,
    head_mac,
    read_head,
    record_mac,
    walk,
    write_head,
)
from ccdp.wire.protocol import utcnow

ENV_KEY = "CCDP_HUB_AUDIT_KEY"
INFO = "ccdp_audit_chain"  # Session.info key: the chain a session appends to
PENDING = "ccdp_audit_pending"  # Session.info key: the head to anchor once the session commits
_STORED = ("seq", "actor", "action", "detail", "prev")  # content() fields stored as they are
TOKEN_RE = re.compile(r"ccdp-(?:node|user)-[A-Za-z0-9_-]+")


class HubAuditError(CcdpError):
    """The hub's audit key is missing or unusable, or its log cannot be appended to."""


def key_path_for(url: str, explicit: Path | str | None = None) -> Path | None:
    """Where the hub of database `url` keeps its audit key: `explicit`, else $CCDP_HUB_AUDIT_KEY,
    else beside a SQLite file, else one file per database in the user's config folder. None for
    an in-memory SQLite database (the key then lives as long as the process)."""
    chosen = explicit or os.environ.get(ENV_KEY)
    if chosen:
        return Path(chosen).expanduser().resolve()
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return None
        db = Path(parsed.database).resolve()
        return db.with_name(f"{db.stem}.audit.key")
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "ccdp" / "hub-audit"
    where = (parsed.get_backend_name(), parsed.host or "local", parsed.port or "", parsed.database)
    name = "-".join(str(part) for part in where)
    return base / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".key")


def head_path_for(key_path: Path) -> Path:
    """`hub.audit.key` -> `hub.audit.head` (any other name: NAME.head)."""
    return key_path.with_name(key_path.name.removesuffix(".key") + ".head")


@dataclass
class AuditChain:
    """The hub's audit key and head file; the key is read, or created, at first use."""

    key_path: Path | None
    # fsync the head file: only where the database fsyncs the commits it anchors (module doc)
    durable: bool = True
    # the record and the head's new hash in one statement (a data-modifying WITH: PostgreSQL)
    one_statement: bool = False
    _key: bytes | None = field(default=None, repr=False)
    # group commit of the sidecar (`anchor`): the head wanted, whether a write is under way,
    # and the highest seq this process has seen anchored
    _group: threading.Condition = field(
        default_factory=threading.Condition, repr=False, compare=False
    )
    _wanted: Head | None = field(default=None, repr=False, compare=False)
    _writing: bool = field(default=False, repr=False, compare=False)
    _anchored: int = field(default=0, repr=False, compare=False)

    @cached_property
    def head_path(self) -> Path | None:
        """The sidecar (cached: it was rebuilt from key_path several times per answer)."""
        return head_path_for(self.key_path) if self.key_path is not None else None

    def has_key(self) -> bool:
        return self._key is not None or (self.key_path is not None and self.key_path.exists())

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = self._load_or_create()
        return self._key

    def _load_or_create(self) -> bytes:
        if self.key_path is None:
            return os.urandom(32)
        path = self.key_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another hub process created it first: use theirs
                pass
            else:
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(os.urandom(32).hex() + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        try:
            key = bytes.fromhex(path.read_text("ascii").strip())
        except (OSError, ValueError) as exc:
            raise HubAuditError(f"{path}: unreadable hub audit key ({exc})") from None
        if len(key) < MIN_KEY_BYTES:
            raise HubAuditError(f"{path}: the hub audit key is too short (need >= 16 bytes)")
        return key

    def anchored(self) -> Head | None:
        """The head the sidecar holds (HMAC checked), None if there is none."""
        if self.head_path is None:
            return None
        try:
            return read_head(self.head_path, self.key)
        except HeadError as exc:
            raise HubAuditError(str(exc)) from None

    def anchor(self, head: Head) -> None:
        """Move the sidecar to `head`, never back, before returning. A group commit: the
        commits that end while the sidecar is being written (each write waits for the disk)
        wait for that write, then one write anchors the highest of their heads for them all,
        instead of one write each, one after another."""
        if self.head_path is None:
            return
        with self._group:
            if self._wanted is None or head.seq > self._wanted.seq:
                self._wanted = head
            while self._anchored < head.seq:
                if self._writing:
                    self._group.wait()
                    continue
                target, self._writing = self._wanted, True
                self._group.release()
                try:
                    self._write_anchor(target)
                finally:
                    self._group.acquire()
                    self._writing = False
                    self._group.notify_all()
                self._anchored = max(self._anchored, target.seq)

    def _write_anchor(self, head: Head) -> None:
        """The sidecar moved to `head` unless it is already there or beyond (file-locked: the
        hub and the CLI both write)."""
        assert self.head_path is not None
        lock = self.head_path.with_name(self.head_path.name + ".lock")
        with lock.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                held = read_head(self.head_path, self.key) if self.head_path.exists() else None
            except HeadError:
                held = None  # an altered head is replaced; verify had already said so
            if held is None or head.seq > held.seq:
                if self.durable:
                    write_head(self.head_path, self.key, head)
                else:
                    replace_head(self.head_path, self.key, head)


def replace_head(path: Path, key: bytes, head: Head) -> None:
    """chain.write_head without its fsync (atomic all the same: a reader sees the old head or
    the new one): for a database whose commits are not fsynced either."""
    body = {"seq": head.seq, "hash": head.hash, "mac": head_mac(key, head.seq, head.hash)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def at_text(at: datetime) -> str:
    """A record's time as it is hashed: ISO 8601 in UTC (SQLite hands back naive UTC values)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat()


def content(
    seq: int, at: datetime, actor: str, action: str, detail: Any, prev: str
) -> dict[str, Any]:
    """What a record's HMAC covers, in the one form the writer, the migration and verify use."""
    return {
        "seq": seq,
        "at": at_text(at),
        "actor": actor,
        "action": action,
        "detail": detail,
        "prev": prev,
    }


def clean_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """`detail` as it will read back from the JSON column, with anything shaped like a token
    blanked: a token in the log would be a credential anyone reading the log could use."""
    text = json.dumps(detail, sort_keys=True, default=str)
    return json.loads(TOKEN_RE.sub("[token withheld]", text))


def chain_of(s: Session | sessionmaker[Session]) -> AuditChain:
    """The chain a session (or the sessions of a factory) append to."""
    info = s.info if isinstance(s, Session) else s.kw.get("info") or {}
    chain = info.get(INFO)
    if not isinstance(chain, AuditChain):
        raise HubAuditError(
            "this session has no audit chain: open the hub database with open_database()"
        )
    return chain


# The statements of an append, built once: one UPDATE both takes the write lock (SQLite) or
# row lock (PostgreSQL) and reads the head it moves (RETURNING the new seq, the old hash), so
# no other append can slip between the read and the write. Core statements, no ORM objects: the
# ORM's load of the head row and its unit of work were half the CPU of an answer's audit record.
_HEAD = cast(Table, AuditHeadRow.__table__)
_TAKE_SEQ = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=_HEAD.c.seq + 1)
    .returning(_HEAD.c.seq, _HEAD.c.hash)
)
_SET_HASH = update(_HEAD).where(_HEAD.c.id == 1).values(hash=bindparam("new_hash"))
_AUDIT = cast(Table, AuditRow.__table__)
_ADD_RECORD = insert(_AUDIT)
# PostgreSQL: the record and the head's new hash in one statement (a data-modifying WITH), one
# round trip fewer for every record; SQLite has no such WITH and runs the two above.
_ADDED = ("at", "hash", *_STORED)
# the record's parameters are prefixed: SQLAlchemy keeps the outer UPDATE's column names (`seq`,
# `hash`) for that UPDATE's own parameters, so the inserted row's may not use them
_ADD_RECORD_SET_HASH = _SET_HASH.add_cte(
    insert(_AUDIT)
    .values({c: bindparam(f"r_{c}", type_=_AUDIT.c[c].type) for c in _ADDED})
    .cte("added")
)


def append(s: Session, actor: str, action: str, detail: dict[str, Any]) -> dict[str, Any]:
    """Chain one record to the last, inside the caller's transaction (it is kept or dropped with
    the change it records); the head file moves once the transaction commits."""
    chain = chain_of(s)
    taken = s.execute(_TAKE_SEQ).one_or_none()
    if taken is None:
        raise HubAuditError("the audit_head row is missing: the audit table was tampered with")
    seq, prev = taken
    at = utcnow()
    body = content(seq, at, actor[:120], action[:60], clean_detail(detail), prev)
    digest = record_mac(chain.key, body)
    record = {"at": at, "hash": digest, **{k: body[k] for k in _STORED}}
    if chain.one_statement:
        s.execute(
            _ADD_RECORD_SET_HASH, {f"r_{k}": v for k, v in record.items()} | {"new_hash": digest}
        )
    else:
        s.execute(_ADD_RECORD, record)
        s.execute(_SET_HASH, {"new_hash": digest})
    s.info[PENDING] = Head(seq, digest)
    return {**body, "hash": digest}


def audited_sessions(engine: Engine, chain: AuditChain) -> sessionmaker[Session]:
    """Sessions of `engine` whose appends go to `chain`, its head anchored at each commit."""
    sessions = sessionmaker(engine, expire_on_commit=False, info={INFO: chain})
    event.listen(sessions, "after_commit", after_commit)
    event.listen(sessions, "after_rollback", after_rollback)
    return sessions


def after_commit(s: Session) -> None:
    """Session event: anchor the head this transaction appended (if it did)."""
    pending = s.info.pop(PENDING, None)
    if isinstance(pending, Head):
        chain_of(s).anchor(pending)


def after_rollback(s: Session) -> None:
    """Session event: a rolled-back append never happened; do not anchor it."""
    s.info.pop(PENDING, None)


def records(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Every record in chain order, as hashed (plus `hash` and the row `id`)."""
    with sessions() as s:
        rows = s.scalars(select(AuditRow).order_by(AuditRow.seq, AuditRow.id)).all()
        return [
            {
                **content(r.seq, r.at, r.actor, r.action, r.detail, r.prev),
                "hash": r.hash,
                "id": r.id,
            }
            for r in rows
        ]


@dataclass(frozen=True)
class Verified:
    """The outcome of `verify`: the chain's head, the anchor checked against, the first fault."""

    records: int
    head: Head
    anchor: Head | None
    error: ChainBroken | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "head": {"seq": self.head.seq, "hash": self.head.hash},
            "anchor": ({"seq": self.anchor.seq, "hash": self.anchor.hash} if self.anchor else None),
            "first_bad_seq": self.error.seq if self.error else None,
            "reason": self.error.why if self.error else None,
        }


def verify(sessions: sessionmaker[Session]) -> Verified:
    """Walk the whole chain, then check it reaches the `audit_head` row and the head file."""
    chain = chain_of(sessions)
    recs = [{k: v for k, v in r.items() if k != "id"} for r in records(sessions)]
    with sessions() as s:
        row = s.get(AuditHeadRow, 1)
        db_head = Head(row.seq, row.hash) if row is not None else None
    anchor = chain.anchored()
    error: ChainBroken | None = None
    head = Head(0, GENESIS)
    try:
        head = walk(recs, chain.key)
        if db_head is None:
            raise ChainBroken(head.seq + 1, "the audit_head row is missing")
        check_anchor(recs, db_head, "the audit_head row", "in the audit_head row")
        if db_head.seq != head.seq:
            raise ChainBroken(
                db_head.seq + 1,
                f"{head.seq} record(s) but the audit_head row says {db_head.seq}",
            )
        if anchor is not None:
            check_anchor(recs, anchor, f"the head file {chain.head_path}", "in the head file")
        elif recs and chain.head_path is not None:
            raise ChainBroken(
                head.seq,
                f"the head file {chain.head_path} is missing ({len(recs)} record(s)): "
                "a cut tail could not be seen",
            )
    except ChainBroken as exc:
        error = exc
    return Verified(len(recs), head, anchor, error)
