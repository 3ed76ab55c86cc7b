"""Dashboard sessions: a signed-in browser holds a random session id in a cookie, never the token.

The cookie is HttpOnly and SameSite=Strict, so no script and no other site can use it. A session
ends after `idle` seconds without a request or `lifetime` seconds in all, whichever comes first,
and on sign-out. Time is read from the store's clock (`utcnow` unless a test hands in one it
moves). Each session has its own CSRF token, which every form carries and every POST must echo.

The hub's sessions live in its database (table `web_sessions`), so every hub worker knows every
signed-in browser and a restart signs no one out. A row is keyed by the SHA-256 of the session id
and holds the hub token sealed (AES-GCM) with a key derived from the id: the id exists only in
the browser's cookie, so the table (a backup, a DBA) alone signs no one in. Without a database
(`db=None`: tests of the windows) the sessions are kept in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from ccdp.federation.hub.models import WebSessionRow
from ccdp.wire.protocol import Clock, utcnow

COOKIE = "ccdp_session"
PRE_COOKIE = "ccdp_signin"  # double-submit CSRF token of the sign-in form (before a session)
IDLE = 30 * 60.0
LIFETIME = 8 * 3600.0
MAX_SESSIONS = 10_000  # a flood of sign-ins cannot grow the hub's memory without bound


@dataclass
class Session:
    """One signed-in person: who the hub says they are, and the token their pages call with."""

    token: str
    name: str
    role: str
    created: datetime
    seen: datetime
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


def id_hash(sid: str) -> str:
    """What the table keys a session by: the id's SHA-256 (the id is 256 random bits)."""
    return hashlib.sha256(sid.encode()).hexdigest()


def _box(sid: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ccdp dashboard token")
    return AESGCM(hkdf.derive(sid.encode()))


def seal(sid: str, token: str) -> bytes:
    """The token encrypted under a key only the session id gives (nonce first)."""
    nonce = os.urandom(12)
    return nonce + _box(sid).encrypt(nonce, token.encode(), id_hash(sid).encode())


def unseal(sid: str, sealed: bytes) -> str | None:
    """The token back, or None if `sealed` was not sealed for this id (an edited row)."""
    try:
        return _box(sid).decrypt(sealed[:12], sealed[12:], id_hash(sid).encode()).decode()
    except (InvalidTag, ValueError):
        return None


class Sessions:
    """The hub's live sessions (thread-safe: pages run in FastAPI's thread pool too); in the
    hub's database when `db` is given, else in this process's memory."""

    def __init__(
        self,
        idle: float = IDLE,
        lifetime: float = LIFETIME,
        clock: Clock = utcnow,
        db: sessionmaker[DbSession] | None = None,
    ) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.clock = clock
        self.db = db
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, token: str, name: str, role: str) -> tuple[str, Session]:
        """A new session (a new id each sign-in: no fixation); returns its id and itself."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(token=token, name=name, role=role, created=now, seen=now)
        if self.db is not None:
            self._db_open(self.db, sid, session)
            return sid, session
        with self._lock:
            self._sweep()
            if len(self._by_id) >= MAX_SESSIONS:
                oldest = min(self._by_id, key=lambda k: self._by_id[k].seen)
                del self._by_id[oldest]
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session for `sid`, touched; None when unknown or expired (and then gone)."""
        if not sid:
            return None
        now = self.clock()
        if self.db is not None:
            return self._db_get(self.db, sid, now)
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if self._expired(session, now):
                del self._by_id[sid]
                return None
            session.seen = now
            return session

    def close(self, sid: str | None) -> None:
        """Sign-out: the session is deleted (from the database too)."""
        if self.db is not None and sid:
            with self.db.begin() as s:
                s.execute(delete(WebSessionRow).where(WebSessionRow.id_hash == id_hash(sid)))
        with self._lock:
            self._by_id.pop(sid or "", None)

    # ---- in the hub's database ---------------------------------------------------------
    def _db_open(self, db: sessionmaker[DbSession], sid: str, session: Session) -> None:
        with db.begin() as s:
            self._db_sweep(s, session.created)
            held = s.scalar(select(func.count()).select_from(WebSessionRow)) or 0
            if held >= MAX_SESSIONS:
                oldest = select(WebSessionRow.id_hash).order_by(WebSessionRow.seen).limit(1)
                s.execute(delete(WebSessionRow).where(WebSessionRow.id_hash.in_(oldest)))
            s.add(
                WebSessionRow(
                    id_hash=id_hash(sid),
                    sealed_token=seal(sid, session.token),
                    name=session.name,
                    role=session.role,
                    csrf=session.csrf,
                    created=session.created,
                    seen=session.seen,
                )
            )

    def _db_get(self, db: sessionmaker[DbSession], sid: str, now: datetime) -> Session | None:
        with db.begin() as s:
            row = s.get(WebSessionRow, id_hash(sid))
            if row is None:
                return None
            token = unseal(sid, row.sealed_token)
            held = Session(
                token=token or "", name=row.name, role=row.role, created=row.created, seen=row.seen
            )
            if token is None or self._expired(held, now):
                s.delete(row)
                return None
            row.seen = held.seen = now
            held.csrf = row.csrf
            return held

    def _db_sweep(self, s: DbSession, now: datetime) -> None:
        """Delete every expired session (a sign-in pays for it; the index on `seen` helps)."""
        idle_before = now - timedelta(seconds=self.idle)
        born_before = now - timedelta(seconds=self.lifetime)
        s.execute(
            delete(WebSessionRow).where(
                or_(WebSessionRow.seen < idle_before, WebSessionRow.created < born_before)
            )
        )

    def _expired(self, session: Session, now: datetime) -> bool:
        """Idle longer than `idle`, or older than `lifetime` (a session exactly at either
        bound is still live: it ends when the clock passes it)."""
        idle = (now - session.seen).total_seconds()
        age = (now - session.created).total_seconds()
        return idle > self.idle or age > self.lifetime

    def _sweep(self) -> None:
        now = self.clock()
        dead = [k for k, s in self._by_id.items() if self._expired(s, now)]
        for k in dead:
            del self._by_id[k]
