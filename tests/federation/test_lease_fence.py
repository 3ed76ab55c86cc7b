"""A study's result is written under its lease (a fencing check, issue 27): a worker whose lease
was taken over while it computed (a long pause, a stalled process) writes nothing, the worker
that took it over writes the result once, and a finished study is never written again, so two
workers never both finish one study. Real databases: SQLite and a fresh PostgreSQL database."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ccdp.federation.hub import leases
from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.db import open_database
from ccdp.federation.hub.models import AuditRow, StudyRow
from tests.federation.pg import temporary_database
from tests.federation.test_workers import study_in

A, B = "host:1:aaaa", "host:2:bbbb"


def finished(hub: Hub, sid: str) -> tuple[str, object, list[str]]:
    with hub.sessions() as s:
        row = s.get(StudyRow, sid)
        assert row is not None
        actions = [a for a in s.scalars(select(AuditRow.action)) if a.startswith("study-")]
        return row.status, row.result, actions


def stale_writer_writes_nothing(hub: Hub, lease: float) -> None:
    sid = study_in(hub)
    assert leases.claim(hub.sessions, sid, A, lease)
    assert hub.set_study_status(sid, "running", owner=A)
    time.sleep(lease + 0.2)  # A stalls mid-study; its lease runs out
    assert leases.claim_free(hub.sessions, B, 30.0) == [sid]  # B takes the study over
    assert not hub.set_study_status(sid, "done", result={"by": "A"}, owner=A)
    assert finished(hub, sid)[0] == "running"
    assert hub.set_study_status(sid, "done", result={"by": "B"}, owner=B)
    # written once: neither worker (nor anyone without a lease) rewrites a finished study
    assert not hub.set_study_status(sid, "done", result={"by": "B again"}, owner=B)
    assert not hub.set_study_status(sid, "failed", error="late", owner=A)
    assert not hub.set_study_status(sid, "failed", error="by hand")
    status, result, actions = finished(hub, sid)
    assert (status, result) == ("done", {"by": "B"})
    assert actions.count("study-done") == 1 and "study-failed" not in actions


def test_sqlite_a_stale_worker_writes_nothing(tmp_path: Path) -> None:
    hub = Hub(open_database(f"sqlite:///{tmp_path / 'hub.db'}"), open_studies=True)
    stale_writer_writes_nothing(hub, 0.3)


def test_postgres_a_stale_worker_writes_nothing(tmp_path: Path) -> None:
    with temporary_database() as db:
        hub = Hub(open_database(db, tmp_path / "k"), open_studies=True)
        stale_writer_writes_nothing(hub, 0.3)
        hub.context.sessions.kw["bind"].dispose()


def test_postgres_no_takeover_between_the_check_and_the_write(tmp_path: Path) -> None:
    """While the holder's fenced write is in its transaction, a takeover cannot slip in: the
    claim skips the locked study, and once the write commits the study is finished."""
    with temporary_database() as db:
        hub = Hub(open_database(db, tmp_path / "k"), open_studies=True)
        sid = study_in(hub)
        assert leases.claim(hub.sessions, sid, A, 0.2)
        time.sleep(0.4)  # A's lease has run out, but no one has taken the study yet
        with hub.sessions.begin() as s:
            row = s.get(StudyRow, sid, with_for_update=True)
            assert row is not None and leases.held(s, sid, A)
            got: dict[str, object] = {}
            taker = threading.Thread(
                target=lambda: got.update(
                    one=leases.claim(hub.sessions, sid, B, 30.0),
                    free=leases.claim_free(hub.sessions, B, 30.0),
                )
            )
            taker.start()
            taker.join(10)
            row.status, row.result = "done", {"by": "A"}
        assert got == {"one": False, "free": []}
        assert not leases.claim(hub.sessions, sid, B, 30.0)  # finished: nothing to claim
        assert finished(hub, sid)[:2] == ("done", {"by": "A"})
        hub.context.sessions.kw["bind"].dispose()


@pytest.mark.parametrize("status", ["running", "done"])
def test_a_write_without_a_lease_is_refused_when_another_holds_it(
    tmp_path: Path, status: str
) -> None:
    hub = Hub(open_database(f"sqlite:///{tmp_path / 'hub.db'}"), open_studies=True)
    sid = study_in(hub)
    assert leases.claim(hub.sessions, sid, B, 30.0)
    assert not hub.set_study_status(sid, status, owner=A)
    assert finished(hub, sid)[0] == "queued"
