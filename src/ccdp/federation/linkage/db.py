"""Open the linkage service's database (SQLite by default, PostgreSQL by URL), with the hub's
engine settings and the hub's keyed audit chain (same code, its own key and tables)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ccdp.errors import CcdpError
from ccdp.federation.hub import audit as hub_audit
from ccdp.federation.hub.db import make_engine
from ccdp.federation.hub.urls import normalise_url
from ccdp.federation.linkage.models import AuditHeadRow, AuditRow, Base
from ccdp.governance.chain import GENESIS

ENV_KEY = "CCDP_LINKAGE_AUDIT_KEY"
DEFAULT_DB = "sqlite:///ccdp-linkage.db"


class LinkageDatabaseError(CcdpError):
    """The service's database URL or audit key is unusable."""


def audit_key_path(url: str, explicit: Path | str | None = None) -> Path | None:
    """The audit key's file: `explicit`, else $CCDP_LINKAGE_AUDIT_KEY, else beside a SQLite file
    (`linkage.db` -> `linkage.audit.key`); None for an in-memory database. A server database
    (PostgreSQL) needs one of the first two: the key must not live in the database it guards."""
    chosen = explicit or os.environ.get(ENV_KEY)
    if chosen:
        return Path(chosen).expanduser().resolve()
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite":
        raise LinkageDatabaseError(
            f"give the audit key's file with --audit-key or ${ENV_KEY} for {parsed.drivername}"
        )
    if not parsed.database or parsed.database == ":memory:":
        return None
    db = Path(parsed.database).resolve()
    return db.with_name(f"{db.stem}.audit.key")


def _secure_delete(dbapi_conn: Any, _record: Any) -> None:
    """SQLite overwrites deleted rows with zeros: a deleted encoding leaves no bytes behind in
    the file's free pages (scrub() empties the write-ahead log too)."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


SCRUBBED = frozenset({"linkage_clks", "linkage_results"})
log = logging.getLogger("ccdp.linkage.service")


def scrub(sessions: sessionmaker[Session], *tables: str) -> None:
    """After rows were deleted from `tables`, leave none of their bytes in the database files.
    SQLite (secure_delete on) has zeroed the deleted rows; the write-ahead log still holds the
    pages as they were, so it is checkpointed and truncated. PostgreSQL keeps dead tuples in
    the table's pages until they are overwritten (a plain VACUUM frees the space without
    clearing it), so each table is rewritten with VACUUM FULL; a failure is logged and the next
    scrub tries again."""
    engine = sessions.kw["bind"]
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    if engine.dialect.name != "postgresql":
        return
    unknown = set(tables) - SCRUBBED
    if unknown:
        raise ValueError(f"scrub: {sorted(unknown)} are not the service's scrubbed tables")
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            _wait_for_older_transactions(conn)
            for table in tables:
                conn.exec_driver_sql(f"VACUUM FULL {table}")
    except SQLAlchemyError as exc:
        log.warning("VACUUM FULL failed (tried again when a run is done): %s", type(exc).__name__)


def _wait_for_older_transactions(conn: Any, timeout: float = 10.0) -> None:
    """VACUUM FULL copies a deleted row into the new table while a transaction that began
    before the delete could still see it: wait (bounded) until every other transaction of
    this database that began before now has ended."""
    started = conn.execute(text("SELECT clock_timestamp()")).scalar()
    older = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start < :t"
    )
    end = time.monotonic() + timeout
    while conn.execute(older, {"t": started}).scalar():
        if time.monotonic() >= end:
            log.warning("VACUUM FULL after %g s of waiting on older transactions", timeout)
            return
        time.sleep(0.05)


def _upgrade(engine: Any) -> None:
    """What create_all cannot do to tables that exist: the keep rule's last-contact year (a
    column added since), and runs named in the states before linking moved to a worker
    (`open` is now `uploading`)."""
    cols = {c["name"] for c in inspect(engine).get_columns("linkage_results")}
    with engine.begin() as conn:
        if "last_year" not in cols:
            conn.exec_driver_sql("ALTER TABLE linkage_results ADD COLUMN last_year INTEGER")
        conn.exec_driver_sql("UPDATE linkage_runs SET state = 'uploading' WHERE state = 'open'")


def open_database(url: str, audit_key: Path | str | None = None) -> sessionmaker[Session]:
    """Engine, tables (created if absent) and a session factory whose sessions append to the
    service's audit chain."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _secure_delete)
    try:
        Base.metadata.create_all(engine)
        _upgrade(engine)
        AuditRow.__table__.create(engine, checkfirst=True)  # type: ignore[attr-defined]
        AuditHeadRow.__table__.create(engine, checkfirst=True)  # type: ignore[attr-defined]
    except SQLAlchemyError as exc:
        raise LinkageDatabaseError(f"cannot create the tables of {url!r}: {exc}") from exc
    chain = hub_audit.AuditChain(
        audit_key_path(url, audit_key), one_statement=engine.dialect.name == "postgresql"
    )
    sessions = hub_audit.audited_sessions(engine, chain)
    with sessions.begin() as s:
        if s.scalar(select(AuditHeadRow).where(AuditHeadRow.id == 1)) is None:
            if s.scalar(select(AuditRow.id).limit(1)) is not None:
                raise LinkageDatabaseError(f"{url}: audit records without their head row")
            s.add(AuditHeadRow(id=1, seq=0, hash=GENESIS))
    chain.key  # noqa: B018 - create the key now, 0600, before the first record
    return sessions
