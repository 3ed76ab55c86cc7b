"""Study leases: which hub worker drives a study, so that N workers never run one twice.

A worker claims a study by writing (or taking over) its row in `study_leases` with an upsert
that succeeds only if the study has no lease, its lease ran out, or the worker already holds it;
the scan for studies to claim reads them `FOR UPDATE SKIP LOCKED` (PostgreSQL), so two workers
scanning at once never wait on, or both take, the same study. The driving worker renews its
leases every third of a lease; a worker killed mid-round stops renewing, and once its lease runs
out another worker claims the study and replays it from what the database holds (runner.py).
A SQLite hub is one process (server.py refuses more), so there a lease held by any other owner
is a previous run's: the worker takes it at once and a restarted hub resumes without waiting.
Leases are measured on the wall clock (`utcnow`), not the hub's clock a test may move: they are
about processes being alive, not about a study's deadlines.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, false, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ccdp.federation.hub.models import StudyLeaseRow, StudyRow, one_of
from ccdp.wire.protocol import utcnow

LEASE = 15.0  # seconds a claim lasts unless renewed (`ccdp hub serve --study-lease`)
UNFINISHED = ("queued", "running")


def worker_id() -> str:
    """This worker's name in `study_leases.owner`: host, pid and a random tag (a pid reused
    after a restart is a different worker)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_pid(owner: str) -> int | None:
    """The pid in a `worker_id` (operators and tests find the process driving a study)."""
    parts = owner.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def single_worker(s: Session) -> bool:
    """Whether this database admits one hub worker only (SQLite): other leases are stale."""
    return s.get_bind().dialect.name != "postgresql"


def _take(s: Session, study_id: str, owner: str, now: datetime, lease: float) -> bool:
    """Upsert the lease in `s`'s transaction if it is free, run out, or already ours."""
    until = now + timedelta(seconds=lease)
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    # on a single-worker database any lease, however recent, is a previous run's
    mine_or_run_out = or_(StudyLeaseRow.until < now, StudyLeaseRow.owner == owner)
    taken = None if single_worker(s) else mine_or_run_out
    stmt = (
        dialect.insert(StudyLeaseRow)
        .values(study_id=study_id, owner=owner, until=until)
        .on_conflict_do_update(
            index_elements=[StudyLeaseRow.study_id],
            set_={"owner": owner, "until": until},
            where=taken,
        )
        .returning(StudyLeaseRow.study_id)
    )
    return s.execute(stmt).first() is not None


def claim(sessions: sessionmaker[Session], study_id: str, owner: str, lease: float) -> bool:
    """Claim one unfinished study for `owner`; False if another worker holds it (or is
    claiming it this instant) or the study is finished."""
    with sessions.begin() as s:
        found = s.scalar(
            select(StudyRow.id)
            .where(StudyRow.id == study_id, one_of(StudyRow.status, UNFINISHED))
            .with_for_update(skip_locked=True)
        )
        return found is not None and _take(s, study_id, owner, utcnow(), lease)


def claim_free(
    sessions: sessionmaker[Session], owner: str, lease: float, skip: Iterable[str] = ()
) -> list[str]:
    """Claim every unfinished study that has no live lease (or whose lease is ours), oldest
    first, except `skip` (the studies this worker is driving already)."""
    now = utcnow()
    skipped = list(skip)
    with sessions.begin() as s:
        free = or_(
            StudyLeaseRow.study_id.is_(None),
            StudyLeaseRow.until < now,
            StudyLeaseRow.owner == owner,
            true() if single_worker(s) else false(),
        )
        stmt = (
            select(StudyRow.id)
            .outerjoin(StudyLeaseRow, StudyLeaseRow.study_id == StudyRow.id)
            .where(one_of(StudyRow.status, UNFINISHED), free)
            .order_by(StudyRow.created_at)
            .limit(100)
            .with_for_update(skip_locked=True, of=StudyRow)
        )
        if skipped:
            stmt = stmt.where(StudyRow.id.not_in(skipped))

        ids = list(s.scalars(stmt))
        return [i for i in ids if _take(s, i, owner, now, lease)]


def renew(
    sessions: sessionmaker[Session], owner: str, study_ids: Iterable[str], lease: float
) -> set[str]:
    """Extend `owner`'s leases on `study_ids`; returns those it still held (a study missing
    from the answer was taken over: its thread must stop driving it)."""
    ids = list(study_ids)
    if not ids:
        return set()
    with sessions.begin() as s:
        stmt = (
            update(StudyLeaseRow)
            .where(StudyLeaseRow.owner == owner, StudyLeaseRow.study_id.in_(ids))
            .values(until=utcnow() + timedelta(seconds=lease))
            .returning(StudyLeaseRow.study_id)
        )
        return set(s.scalars(stmt))


def held(s: Session, study_id: str, owner: str) -> bool:
    """In `s`'s transaction, the lease row locked until it ends: whether `owner` holds it. A
    write fenced by this check cannot interleave with a takeover (the claim's upsert waits on
    the lock), so a worker whose lease was taken while it computed writes nothing."""
    row = s.get(StudyLeaseRow, study_id, with_for_update=True)
    return row is not None and row.owner == owner


def holder(sessions: sessionmaker[Session], study_id: str) -> str | None:
    """The worker holding a study's lease, if any."""
    with sessions() as s:
        row = s.get(StudyLeaseRow, study_id)
        return row.owner if row is not None else None


def release(sessions: sessionmaker[Session], owner: str, study_id: str | None = None) -> None:
    """Give up `owner`'s lease on `study_id` (every lease of `owner` when None): another
    worker may claim it at once instead of waiting for it to run out."""
    stmt = delete(StudyLeaseRow).where(StudyLeaseRow.owner == owner)
    if study_id is not None:
        stmt = stmt.where(StudyLeaseRow.study_id == study_id)
    with sessions.begin() as s:
        s.execute(stmt)
