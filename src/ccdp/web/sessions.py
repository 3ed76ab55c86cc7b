"""Dashboard sessions: a signed-in browser holds a random session id in a cookie, never the token.

The hub token a person signs in with stays in the hub's memory, keyed by the session id; the
cookie is HttpOnly and SameSite=Strict, so no script and no other site can use it. A session
ends after `idle` seconds without a request or `lifetime` seconds in all, whichever comes first,
and on sign-out; a hub restart ends every session (they are not written anywhere).
Each session has its own CSRF token, which every form carries and every POST must echo.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

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
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


class Sessions:
    """The hub's live sessions (thread-safe: pages run in FastAPI's thread pool too)."""

    def __init__(self, idle: float = IDLE, lifetime: float = LIFETIME) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, token: str, name: str, role: str) -> tuple[str, Session]:
        """A new session (a new id each sign-in: no fixation); returns its id and itself."""
        sid = secrets.token_urlsafe(32)
        session = Session(token=token, name=name, role=role)
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
        now = time.monotonic()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if now - session.seen > self.idle or now - session.created > self.lifetime:
                del self._by_id[sid]
                return None
            session.seen = now
            return session

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def _sweep(self) -> None:
        now = time.monotonic()
        dead = [
            k
            for k, s in self._by_id.items()
            if now - s.seen > self.idle or now - s.created > self.lifetime
        ]
        for k in dead:
            del self._by_id[k]
