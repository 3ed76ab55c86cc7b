"""Open the hub's database; bring its schema up to date with the migrations in the package.

SQLite by default (embedded, nothing to install); PostgreSQL with `postgresql+psycopg://…` (a plain
`postgresql://` URL is taken to mean the psycopg 3 driver, the one ccdp installs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from ccdp.errors import CcdpError
from ccdp.federation.hub import audit as hub_audit
from ccdp.federation.hub.models import AuditHeadRow
from ccdp.federation.hub.tokenbook import CONNECTIONS as TOKEN_CONNECTIONS
from ccdp.federation.hub.urls import normalise_url
from ccdp.federation.hub.wakeup import wake_after_commit

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_DB = "sqlite:///ccdp-hub.db"
# Connections kept open: as many as the threads that may read at once (uvicorn runs a plain
# route in a pool of 40 threads; most wait on the event loop, not the database). A checkout
# beyond the kept ones opens a connection that is closed again at checkin: under 50 clients
# with only 10 kept, most requests paid a new PostgreSQL backend (a fork) or SQLite's pragmas.
POOL_SIZE = 20
MAX_OVERFLOW = 10
IDLE_PING = 10.0  # seconds a pooled PostgreSQL connection may idle before it is pinged
CHECKIN = "ccdp_checkin"  # pool record info key: when the connection was last given back
HEADROOM = 10  # connections left for the CLI, backups and monitoring beside N hub workers
MIN_POOL = 4  # the fewest connections a worker serves with (requests, runner, keeper)
READ_ONLY = "-c default_transaction_read_only=on"  # libpq options: the lists' connections
LIST_CONNECTIONS = 2  # PostgreSQL connections each worker's loop reads the lists on (loopreads)
MIGRATE_LOCK = 0x63636470_6D696772  # the advisory lock N hub workers take around `migrate`


class HubDatabaseError(CcdpError):
    """The hub database URL is unusable or its schema cannot be brought up to date."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets the CLI (add-node, import) write while the hub serves; busy_timeout waits."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL never corrupts the database; it only skips an fsync per commit, so a
    # power cut may lose the last commits (nodes re-post answers they could not confirm).
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, pool: tuple[int, int] | None = None) -> Engine:
    """An engine for `url`, with the settings the hub's threads need; `pool` (kept, overflow)
    replaces POOL_SIZE and MAX_OVERFLOW (N workers share the server's connections)."""
    kept, overflow = pool or (POOL_SIZE, MAX_OVERFLOW)
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise HubDatabaseError(f"bad database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        sizes = {} if in_memory else {"pool_size": kept, "max_overflow": overflow}
        args = {"check_same_thread": False, "timeout": 10}
        engine = create_engine(url, connect_args=args, **sizes)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=kept, max_overflow=overflow)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    event.listen(engine, "checkin", _stamp_checkin)
    event.listen(engine, "checkout", _ping_if_idle(engine))


def read_only_options(url: URL) -> tuple[URL, str]:
    """`url` without its libpq `options`, and those options with read-only added
    (`default_transaction_read_only`): the lists' connections (loopreads.py) keep a search path
    or a statement timeout the URL gives, and cannot write."""
    given = url.query.get("options", "")
    options = " ".join([*([given] if isinstance(given, str) else given), READ_ONLY]).strip()
    return url.difference_update_query(["options"]), options


def worker_pools(url: str, workers: int) -> tuple[int, int]:
    """Each of N workers' pool (kept, overflow), sized so that all of them, with a listening
    connection and the token checks' connections each, fit in the server's `max_connections` beside
    its reserved slots and HEADROOM for the CLI, backups and monitoring: 4 workers at the default
    pool would open up to 124 connections, and PostgreSQL's default 100 refused the rest (503s under
    load)."""
    engine = make_engine(url, (1, 0))
    try:
        with engine.connect() as conn:
            most = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
            reserved = int(conn.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one())
    finally:
        engine.dispose()
    # each worker also keeps one LISTEN connection, the token checks' own (tokenbook.py) and
    # the lists' (loopreads.py)
    each = (most - reserved - HEADROOM) // workers - 1 - TOKEN_CONNECTIONS - LIST_CONNECTIONS
    if each < MIN_POOL:
        raise HubDatabaseError(
            f"PostgreSQL's max_connections = {most} leaves {max(each, 0)} connections for each of "
            f"{workers} hub workers (at least {MIN_POOL} needed): raise max_connections or run "
            "fewer workers (docs/deploy.md)"
        )
    kept = min(POOL_SIZE, max(2, each * 2 // 3))
    return kept, min(MAX_OVERFLOW, each - kept)


_last_outage = [float("-inf")]  # when this process last found the database away (monotonic)


def saw_database_away() -> None:
    """The database was found away (a 503 answered): every connection pooled before now is
    pinged at its next checkout, however recently it was used, so that once the server is back
    no request fails on a connection the outage broke."""
    _last_outage[0] = time.monotonic()


def _stamp_checkin(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
    record.info[CHECKIN] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Callable[[Any, ConnectionPoolEntry, Any], None]:
    """A pool checkout event: a connection idle for over IDLE_PING seconds, or pooled before the
    database was last found away (`saw_database_away`), is pinged first, and replaced if the
    server dropped it (a restart, an idle timeout).

    `pool_pre_ping` did this on every checkout: a round trip to the server per query, as
    much as the token check's query itself. A connection in steady use needs no ping; one
    broken under load fails its request once, and SQLAlchemy then replaces the whole pool."""

    def ping(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.get(CHECKIN)
        if since is None:
            return
        if time.monotonic() - since < IDLE_PING and since > _last_outage[0]:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the driver's own error for a dead socket
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc
        if not alive:
            raise DisconnectionError("idle connection failed its ping")

    return ping


def migrate(engine: Engine, chain: hub_audit.AuditChain | None = None) -> None:
    """Run the packaged Alembic migrations up to head (idempotent); `chain` holds the audit key
    that chains the records of a database written before the audit chain (0003)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["audit_chain"] = chain
    try:
        with engine.begin() as conn:
            lock_for_migration(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except Exception as exc:
        raise HubDatabaseError(f"cannot migrate hub database {engine.url!r}: {exc}") from exc


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def lock_for_migration(conn: Connection) -> None:
    """On PostgreSQL, N workers starting at once migrate one after the other: each waits for
    this transaction-scoped advisory lock, so the first upgrades and the rest find it at head
    (SQLite's own write lock already serialises its one writer)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK})


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached right now (down, restarting, refusing
    connections, the connection cut): a 503 to retry, not a bug."""
    return isinstance(exc, OperationalError | InterfaceError)


def open_database(
    url: str, audit_key: Path | str | None = None, pool: tuple[int, int] | None = None
) -> sessionmaker[Session]:
    """Engine + migrations + session factory: everything a hub command needs. Its sessions
    append to the audit chain keyed by the file `audit_key` (default: see audit.py); `pool`:
    see make_engine."""
    engine = make_engine(url, pool)
    # the head file is fsynced only where the commits it anchors are (audit.py)
    durable = engine.dialect.name != "sqlite"
    chain = hub_audit.AuditChain(
        hub_audit.key_path_for(url, audit_key),
        durable=durable,
        one_statement=engine.dialect.name == "postgresql",
    )
    had_key = chain.has_key()
    migrate(engine, chain)
    sessions = hub_audit.audited_sessions(engine, chain)
    wake_after_commit(sessions)
    if not had_key:
        with sessions() as s:
            row = s.get(AuditHeadRow, 1)
            seq, digest = (row.seq, row.hash) if row is not None else (0, "")
        if chain.has_key() and seq:  # the upgrade just chained the records written before
            chain.anchor(hub_audit.Head(seq, digest))
        elif seq:
            raise hub_audit.HubAuditError(
                f"the hub's audit key {chain.key_path} is missing but its log holds {seq} "
                f"record(s): restore the key file (or point ${hub_audit.ENV_KEY} at it)"
            )
        else:
            chain.key  # noqa: B018 - create the key now, 0600, before the first record
    return sessions
