"""Dashboard sessions: a signed-in browser holds a random session id in a cookie, never the token.

The hub token a person signs in with stays in the hub's memory, keyed by the session id; the
cookie is HttpOnly and SameSite=Strict, so no script and no other site can use it. A session
ends after `idle` seconds without a request or `lifetime` seconds in all, whichever comes first,
and on sign-out; a hub restart ends every session (they are not written anywhere). Time is read
from the store's clock (`utcnow` unless a test hands in one it moves).
Each session has its own CSRF token, which every form carries and every POST must echo.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime

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


class Sessions:
    """The hub's live sessions (thread-safe: pages run in FastAPI's thread pool too)."""

    def __init__(
        self, idle: float = IDLE, lifetime: float = LIFETIME, clock: Clock = utcnow
    ) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.clock = clock
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, token: str, name: str, role: str) -> tuple[str, Session]:
        """A new session (a new id each sign-in: no fixation); returns its id and itself."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(token=token, name=name, role=role, created=now, seen=now)
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
        with self._lock:
            self._by_id.pop(sid or "", None)

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
