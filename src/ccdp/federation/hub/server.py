"""Run the hub with uvicorn (plain HTTP or TLS), as one process or as N workers on one socket.

N workers (`ccdp hub serve --workers N`) need PostgreSQL: the database is what they share
(sign-in sessions, study leases, the audit chain), and LISTEN/NOTIFY carries wake-ups between
them (wakeup.py). The parent migrates the database once, binds the socket, and supervises N
spawned workers that all accept on it; a worker that dies is replaced, and SIGTERM/SIGINT stops
them all. A SQLite hub is one process (its one writer is the file lock).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from ccdp.errors import CcdpError
from ccdp.federation.hub.db import LIST_CONNECTIONS, HubDatabaseError, open_database, worker_pools
from ccdp.federation.hub.leases import LEASE
from ccdp.federation.hub.runner import StudyExecutor
from ccdp.federation.hub.tokenbook import CONNECTIONS as TOKEN_CONNECTIONS
from ccdp.federation.hub.urls import normalise_url

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from fastapi import FastAPI

log = logging.getLogger("ccdp.hub")

MAX_RESTARTS = 10  # worker deaths per minute before the supervisor gives up
# Seconds an idle keep-alive connection stays open. It must outlast every client's own idle
# limit, or the hub closes a connection just as the client reuses it (a ReadError on the
# request: uvicorn's default of 5 s equals httpx's pool expiry, and 0.1-0.5% of requests failed
# so under load). A TLS proxy in front keeps its upstream connections up to 60 s (nginx's
# keepalive_timeout; docs/deploy.md sets Caddy's too), and proxy_read_timeout is 75 s there.
KEEP_ALIVE = 75


class HubServeError(CcdpError):
    """The hub cannot start (bad TLS files, port in use, N workers on SQLite...)."""


@dataclass(frozen=True)
class ServeSettings:
    """Everything a worker needs to build the hub's app (picklable: spawned workers get it)."""

    db_url: str
    host: str
    port: int
    certfile: Path | None
    keyfile: Path | None
    executor: StudyExecutor | None
    poll: float
    log_level: str
    max_body: int | None
    max_answer_body: int | None
    open_studies: bool
    audit_key: Path | None
    dashboard: Callable[[FastAPI], None] | None
    study_lease: float
    pool: tuple[int, int] | None = None  # each worker's (kept, overflow): db.worker_pools


def check_workers(db_url: str, workers: int) -> None:
    """N workers share state only through PostgreSQL: refuse them on SQLite (one line)."""
    if workers < 1:
        raise HubServeError(f"--workers must be at least 1, not {workers}")
    backend = make_url(normalise_url(db_url)).get_backend_name()
    if workers > 1 and backend != "postgresql":
        raise HubServeError(
            f"--workers {workers} needs a PostgreSQL database (--db postgresql+psycopg://…); "
            f"a {backend} hub runs one worker"
        )


def serve(
    db_url: str,
    host: str = "127.0.0.1",
    port: int = 8700,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    executor: StudyExecutor | None = None,
    poll: float = 0.5,
    log_level: str = "warning",
    max_body: int | None = None,
    max_answer_body: int | None = None,
    open_studies: bool = False,
    audit_key: Path | None = None,
    dashboard: Callable[[FastAPI], None] | None = None,
    workers: int = 1,
    study_lease: float = LEASE,
) -> None:
    """Open (and migrate) the database, then serve until interrupted; the body limits (bytes)
    default to create_app's; `audit_key` is the file of the audit-log key (see audit.py);
    `dashboard` mounts the web pages (see create_app); `workers` processes share the socket
    (PostgreSQL only); `study_lease` is how long a dead worker's study waits to be taken over."""
    if (certfile is None) != (keyfile is None):
        raise HubServeError("TLS needs both --certfile and --keyfile")
    for f in (certfile, keyfile):
        if f is not None and not f.is_file():
            raise HubServeError(f"TLS file not found: {f}")
    check_workers(db_url, workers)
    if study_lease <= 0:
        raise HubServeError(f"--study-lease must be positive, not {study_lease}")
    settings = ServeSettings(
        db_url, host, port, certfile, keyfile, executor, poll, log_level, max_body,
        max_answer_body, open_studies, audit_key, dashboard, study_lease,
    )  # fmt: skip
    scheme = "https" if certfile else "http"
    if workers == 1:
        server = build_server(settings)
        print(f"ccdp hub listening on {scheme}://{host}:{port} (db {db_url})", flush=True)
        server.run()
        return
    migrated = open_database(db_url, audit_key)  # migrate once, here, before any worker starts
    migrated.kw["bind"].dispose()  # the supervisor keeps no connection the workers could use
    try:
        pool = worker_pools(db_url, workers)
    except HubDatabaseError as exc:
        raise HubServeError(str(exc)) from None
    settings = replace(settings, pool=pool)
    sock = bind(host, port)
    print(
        f"ccdp hub listening on {scheme}://{host}:{port} with {workers} workers (db {db_url}; "
        f"up to {pool[0] + pool[1] + 1 + TOKEN_CONNECTIONS + LIST_CONNECTIONS} connections each)",
        flush=True,
    )
    Supervisor(settings, sock, workers).run()


def build_server(settings: ServeSettings) -> Any:
    """The uvicorn server of one worker: the hub's app over its own connection pool."""
    import uvicorn

    from ccdp.federation.hub.app import MAX_ANSWER_BODY, MAX_BODY, Hub, create_app

    executor = settings.executor
    if executor is None:
        from ccdp.federation.hub.studies import SpecExecutor

        executor = SpecExecutor()
    sessions = open_database(settings.db_url, settings.audit_key, settings.pool)
    hub = Hub(sessions, open_studies=settings.open_studies)
    app = create_app(
        hub,
        executor,
        poll=settings.poll,
        max_body=settings.max_body or MAX_BODY,
        max_answer_body=settings.max_answer_body or MAX_ANSWER_BODY,
        dashboard=settings.dashboard,
    )
    app.state.runner.lease = settings.study_lease
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.certfile) if settings.certfile else None,
        ssl_keyfile=str(settings.keyfile) if settings.keyfile else None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=3,
        timeout_keep_alive=KEEP_ALIVE,
    )

    class HubServer(uvicorn.Server):
        """On SIGTERM/SIGINT, first release the long-polls, so shutdown takes well under a
        second instead of waiting out the graceful timeout and cancelling them (tracebacks)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            hub.waker.close()
            super().handle_exit(sig, frame)

    return HubServer(config)


def bind(host: str, port: int) -> socket.socket:
    """The one listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HubServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def worker_main(settings: ServeSettings, sock: socket.socket) -> None:
    """A spawned worker: serve on the inherited socket until SIGTERM, or until the supervisor
    is gone (killed outright, it cannot stop its workers: they must not hold the port)."""
    parent = os.getppid()
    watch = threading.Thread(target=exit_with, args=(parent,), name="supervisor", daemon=True)
    watch.start()
    build_server(settings).run(sockets=[sock])


def exit_with(parent: int, every: float = 1.0) -> None:
    """SIGTERM this worker (a clean stop) once its parent process has gone."""
    while os.getppid() == parent:
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Keeps N workers alive on one socket; stops them all on SIGTERM/SIGINT."""

    def __init__(self, settings: ServeSettings, sock: socket.socket, workers: int) -> None:
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")
        self.settings = settings
        self.sock = sock
        self.n = workers
        self.procs: list[BaseProcess] = []
        self.deaths: list[float] = []
        self.stopping = False

    def spawn(self) -> BaseProcess:
        proc = self.ctx.Process(
            target=worker_main, args=(self.settings, self.sock), name="ccdp-hub-worker"
        )
        proc.start()
        return proc

    def run(self) -> None:
        def on_signal(_sig: int, _frame: Any) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.procs = [self.spawn() for _ in range(self.n)]
        try:
            while not self.stopping:
                time.sleep(0.2)
                self.replace_dead()
        finally:
            self.stop_all()

    def replace_dead(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.is_alive() or self.stopping:
                continue
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < 60] + [now]
            if len(self.deaths) > MAX_RESTARTS:
                raise HubServeError(f"hub workers died {len(self.deaths)} times in a minute")
            print(f"hub worker {proc.pid} exited ({proc.exitcode}); starting another", flush=True)
            self.procs[i] = self.spawn()

    def stop_all(self, timeout: float = 10.0) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker releases its long-polls and leases
        end = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.1, end - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)
        self.sock.close()
