"""Wake-ups: `Waker` in one process; `PgWaker` across hub workers that share one PostgreSQL
database (LISTEN/NOTIFY).

A wake in one worker (an answer posted, a round opened, a study finished) must also release a
long-poll or a study runner waiting in another worker. `PgWaker.wake` wakes its own process, then
publishes the keys with `pg_notify`; each serving worker keeps one psycopg connection in a thread
that LISTENs and wakes its own waiters. A notification is only a hint (every waiter looks at the
database again), so one lost while the listener reconnects costs nothing: after each (re)connect
the listener wakes everyone once.

A wake that follows a write is announced inside the writing session (`announce`): this
process's waiters are woken once it commits (a session hook, `wake_after_commit`), and
PostgreSQL sends the notification when the transaction commits and drops it if it rolls back.
That saves the pooled connection, the statement and the commit a separate `publish` costs for
every answer and every round. (PostgreSQL refuses a commit that notifies only when its
notification queue is full, which a listener holding no transaction, as ours, never lets
happen.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("ccdp.hub")

CHANNEL = "ccdp_hub_wake"
MAX_PAYLOAD = 7000  # bytes; PostgreSQL refuses a NOTIFY payload of 8000 or more
RECONNECT_CAP = 5.0  # seconds between attempts while the database is away
_NOTIFY = "SELECT pg_notify(%s, %s)"  # psycopg's own parameter marks (exec_driver_sql)
_HOOKED = "ccdp.wake.hooked"  # Session.info: its factory wakes announced keys at commit
_ANNOUNCED = "ccdp.wake.announced"  # Session.info: (waker, keys) to wake once it commits


class WakeNotHooked(RuntimeError):
    """`announce` on a session whose commits nobody hooked: its wake would be lost."""


def wake_after_commit(sessions: sessionmaker[Session]) -> None:
    """Let `announce` be used on these sessions: what a transaction announced wakes this
    process's waiters once it commits, and never if it rolls back. The mark goes in the
    factory's `info`, which SQLAlchemy copies into every session it makes."""
    sessions.kw.setdefault("info", {})[_HOOKED] = True
    event.listen(sessions, "after_commit", _woken_at_commit)
    event.listen(sessions, "after_rollback", _dropped_at_rollback)


def _woken_at_commit(s: Session) -> None:
    for waker, keys in s.info.pop(_ANNOUNCED, ()):
        waker.wake_local(keys)


def _dropped_at_rollback(s: Session) -> None:
    s.info.pop(_ANNOUNCED, None)


def payloads(origin: str, keys: Iterable[str]) -> Iterator[str]:
    """`origin key key …` strings, each under MAX_PAYLOAD bytes (a round to many nodes)."""
    line = origin
    for key in keys:
        if len(line) + 1 + len(key.encode()) > MAX_PAYLOAD and line != origin:
            yield line
            line = origin
        line += " " + key
    if line != origin:
        yield line


class Watch:
    """One thread's interest in some keys (see `Waker.watch`): take `seen()` before looking at
    the database, then `wait(seen, …)` returns as soon as one of its keys (or everyone) was
    woken since, so a wake between the look and the wait is not lost."""

    def __init__(self, lock: threading.RLock, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self._cond = threading.Condition(lock)
        self._count = 0  # wakes received; only read and moved under the waker's lock

    def seen(self) -> int:
        with self._cond:
            return self._count

    def wait(self, since: int, timeout: float) -> int:
        """Block until a wake came after `seen()` returned `since`, or `timeout` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self._count != since, timeout=max(0.0, timeout))
            return self._count

    def notify(self) -> None:
        """Under the waker's lock."""
        self._count += 1
        self._cond.notify_all()


class Waker:
    """Wakes waiters when something changes: threads (study runners) and asyncio long-polls.

    A thread waits for its own keys only (`watch`): each answer wakes the one study thread
    whose round it answers, not every study in flight, which would each look at the database
    again (work per answer growing with the studies running). A keyless wake still reaches
    every waiter. This one wakes only its own process (SQLite: one hub process); `PgWaker`
    carries each wake to every hub worker sharing a PostgreSQL database."""

    def __init__(self, auto: bool = False) -> None:
        """`auto`: made by HubContext's default, which swaps in the waker its database needs."""
        self.auto = auto
        # re-entrant: `close` may run in a signal handler on a thread that holds it
        self._lock = threading.RLock()
        self._watches: dict[str, set[Watch]] = {}  # a key's entry goes with its last watch
        self._all: set[Watch] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self.closing = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def event(self, key: str) -> asyncio.Event:
        """Called on the event loop: the event set at the next `wake(key)`."""
        ev = self._events.get(key)
        if ev is None:
            ev = self._events[key] = asyncio.Event()
        if self.closing:
            ev.set()
        return ev

    @contextmanager
    def watch(self, *keys: str) -> Iterator[Watch]:
        """Thread-safe: a `Watch` woken by `wake` of any of `keys` and by keyless wakes, for
        the time of the `with` block (then no entry of it is left)."""
        w = Watch(self._lock, keys)
        with self._lock:
            self._all.add(w)
            for key in keys:
                self._watches.setdefault(key, set()).add(w)
        try:
            yield w
        finally:
            with self._lock:
                self._all.discard(w)
                for key in keys:
                    watching = self._watches.get(key)
                    if watching is not None:
                        watching.discard(w)
                        if not watching:
                            del self._watches[key]

    def watching(self) -> int:
        """Keys some thread watches now (tests: no entry outlives its watches)."""
        with self._lock:
            return len(self._watches)

    def close(self) -> None:
        """Thread- and signal-safe: the hub is stopping, so every long-poll returns now (the
        node asks again of the next hub) instead of holding the shutdown for its timeout."""
        self.closing = True
        self.wake_everyone()

    def wake_everyone(self) -> None:
        """Thread-safe: wake every waiter, whatever it waits for (each looks again at the
        database): after closing, or when wake-ups from other workers may have been missed."""
        with self._lock:
            for w in list(self._all):
                w.notify()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._set_all)
            except RuntimeError:
                return

    def _set_all(self) -> None:
        for key in list(self._events):
            self._set(key)

    def _set(self, key: str) -> None:
        ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()

    def wake(self, *keys: str) -> None:
        """Thread-safe: wake the threads and long-polls waiting on `keys` (no key: every
        thread, as when the runner stops)."""
        self.wake_local(keys)

    def announce(self, s: Session, keys: Iterable[str]) -> None:
        """Inside a writing transaction of `s`: wake the waiters on `keys` once it commits, in
        every worker (here one process: `wake_after_commit` wakes them), none if it rolls back."""
        if not s.info.get(_HOOKED):
            raise WakeNotHooked("announce needs sessions set up by wake_after_commit")
        keys = list(keys)
        self._announce_elsewhere(s, keys)
        s.info.setdefault(_ANNOUNCED, []).append((self, keys))

    def _announce_elsewhere(self, s: Session, keys: list[str]) -> None:
        """Tell the other workers, in `s`'s transaction (none here)."""

    def wake_local(self, keys: Iterable[str]) -> None:
        """Wake this process's waiters only: those watching one of `keys` (none: all threads)."""
        keys = list(keys)
        with self._lock:
            woken: set[Watch] = set() if keys else set(self._all)
            for key in keys:
                woken.update(self._watches.get(key, ()))
            for w in woken:
                w.notify()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for key in keys:
                try:
                    loop.call_soon_threadsafe(self._set, key)
                except RuntimeError:  # loop closed between the check and the call
                    return


class PgWaker(Waker):
    """A Waker whose wakes reach every worker of the database (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.listening = threading.Event()  # set while LISTEN is in force (tests wait on it)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """A serving worker: wake this loop's long-polls, and start listening for the others."""
        super().bind(loop)
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="hub-listen", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stopped.set()
        super().close()

    def wake(self, *keys: str) -> None:
        self.wake_local(keys)
        self.publish(keys)

    def publish(self, keys: Iterable[str]) -> None:
        """NOTIFY the other workers; never raises (a lost hint only delays a waiter to its
        next poll, and the database being away is reported by the request that needs it)."""
        notes = list(payloads(self.origin, keys))
        if not notes:  # a keyless wake (shutdown) is for this process's threads only
            return
        try:
            with self.engine.connect() as conn:
                for payload in notes:
                    conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})
                conn.commit()
        except SQLAlchemyError as exc:
            log.debug("wake-up not published: %s", exc)

    def _announce_elsewhere(self, s: Session, keys: list[str]) -> None:
        """`pg_notify` in the caller's transaction: sent at its commit, dropped if it rolls
        back. A database error here is the transaction's own, raised as any statement's."""
        notes = list(payloads(self.origin, keys))
        if notes:
            conn = s.connection()
            for payload in notes:
                conn.exec_driver_sql(_NOTIFY, (CHANNEL, payload))

    def _stopping(self) -> bool:
        loop = self._loop
        return self._stopped.is_set() or (loop is not None and loop.is_closed())

    def _listen(self) -> None:
        """The listener thread: connect, LISTEN, wake on each notification; reconnect."""
        delay = 0.2
        while not self._stopping():
            try:
                self._listen_once()
                delay = 0.2
            except Exception as exc:  # psycopg errors, the server going away: try again
                self.listening.clear()
                log.info("wake-up listener lost its connection (%s); retrying", exc)
                self._stopped.wait(delay)
                delay = min(delay * 2, RECONNECT_CAP)

    def _listen_once(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            self.wake_everyone()  # whatever was published while we were not listening
            while not self._stopping():
                for note in conn.notifies(timeout=1.0):
                    origin, _, keys = note.payload.partition(" ")
                    if origin != self.origin:
                        self.wake_local(keys.split())
        self.listening.clear()


def waker_for(sessions: sessionmaker[Session]) -> Waker:
    """The waker a hub over `sessions` needs: `PgWaker` on PostgreSQL, else in-process."""
    engine = sessions.kw.get("bind")
    if isinstance(engine, Engine) and engine.dialect.name == "postgresql":
        return PgWaker(engine)
    return Waker()
