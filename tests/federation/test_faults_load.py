"""Faults under load (issue 27): `serve --workers 2` on PostgreSQL with three node agents, a
researcher submitting a study every 1.5 s (5 s in the node test) and three more reading the
API, when PostgreSQL is restarted (or stays down past a round's deadline), a worker is
SIGKILLed, or a node agent is stopped and restarted mid-round. Each test's docstring is its
defined outcome (docs/deploy.md, "What happens when").

The hub is the production `serve` (the function `ccdp hub serve` runs: supervisor, workers,
leases, LISTEN/NOTIFY) with the stand-in analysis of tests/federation/standin.py, whose study
total weights round k by k+1: a round counted twice, or one node's answer taken twice, changes
the total. The nodes are the production NodeAgent over the stand-in data. The database's own
account (answers per task, audit records per answer) is checked beside the totals.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.federation.faultkit import (
    TOTAL,
    XS,
    Fleet,
    Researchers,
    answer_counts,
    assert_every_study_done_once,
    auth,
    drain,
    fleet,
    plain,
    private_postgres,
    studies,
    submit,
    unfinished,
    worker_of,
)
from tests.federation.netutil import kill, wait_until
from tests.federation.pg import temporary_database
from tests.federation.pgcluster import PrivatePostgres
from tests.federation.test_workers import listeners

BOUND = 20.0  # seconds a request may take beyond its long-poll: never a hung connection


def served(f: Fleet, times: int = 10) -> bool:
    """`times` requests in a row answered 200 (whichever worker accepted each)."""
    try:
        return all(
            httpx.get(f.url + "/api/nodes", headers=auth(f.user), timeout=10).status_code == 200
            for _ in range(times)
        )
    except httpx.HTTPError:
        return False


def connections_on_both_workers(
    f: Fleet, timeout: float, least: int = 6, most: int = 60
) -> list[tuple[http.client.HTTPConnection, int]]:
    """Connections to the hub, each with the worker pid that accepted it, opened until both
    workers hold some (and at least `least` in all): the kernel hands each to whichever worker
    accepts first, so a fixed number could all land on one. Fails if `most` do not reach both."""
    host, port = f.url.split("//", 1)[1].rsplit(":", 1)
    held: list[tuple[http.client.HTTPConnection, int]] = []
    while len(held) < most:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        conn.connect()
        client = conn.sock.getsockname()[1]
        held.append((conn, wait_until(partial(worker_of, f, client), 10, 0.01)))
        if len(held) >= least and {pid for _, pid in held} == set(f.workers()):
            return held
    raise AssertionError(f"{most} connections, all accepted by {held[0][1]}")


def long_polls_wake_together(f: Fleet, wait: float = 30) -> tuple[list[float], dict[int, int]]:
    """Researchers long-poll one new study at once over connections held by both workers
    (asserted, not left to chance), node C frozen (SIGSTOP) so that the study cannot end
    before every poll waits; C let go (SIGCONT), the worker that finishes the study wakes its
    own polls, NOTIFY the other's: all end within 5 s of each other, none before C was let
    go, done. A worker whose listener did not reconnect would hold its polls to `wait` and
    answer `running`. Returns each poll's seconds and the polls per worker pid."""
    held = connections_on_both_workers(f, wait + 30)
    c = f.nodes["C"]
    os.kill(c.pid, signal.SIGSTOP)
    try:
        sid = submit(f, "wake check", timeout=60)
        took: list[float] = []
        ended: list[float] = []
        got: list[dict[str, Any]] = []

        def poll(conn: http.client.HTTPConnection) -> None:
            t0 = time.monotonic()
            conn.request("GET", f"/api/studies/{sid}?wait={wait:g}", headers=auth(f.user))
            body = json.loads(conn.getresponse().read())
            ended.append(time.monotonic())
            took.append(ended[-1] - t0)
            got.append(body)

        threads = [threading.Thread(target=poll, args=(conn,)) for conn, _ in held]
        for t in threads:
            t.start()
        time.sleep(2.0)  # every poll is waiting now: C has not answered round 0
        assert ended == [], "a poll ended before the study could"
        let_go = time.monotonic()
    finally:
        os.kill(c.pid, signal.SIGCONT)
    for t in threads:
        t.join(wait + 40)
    for conn, _ in held:
        conn.close()
    assert [b["status"] for b in got] == ["done"] * len(held), got
    assert all(b["result"]["result"]["total"] == TOTAL for b in got)
    assert min(ended) > let_go and max(ended) - min(ended) < 5, took  # woken together
    per_worker: dict[int, int] = {}
    for _, pid in held:
        per_worker[pid] = per_worker.get(pid, 0) + 1
    return took, per_worker


@pytest.mark.slow
@pytest.mark.postgres
def test_postgresql_restarted_under_load(tmp_path: Path) -> None:
    """PostgreSQL stopped (`pg_ctl stop -m fast`) for 4 s with studies running, then started,
    then restarted at once (`pg_ctl restart -m fast`), while studies are submitted and
    researchers read. Defined outcome: while it is down every request is answered, by 503 with
    `Retry-After: 2`, never a 500, never a connection held past its long-poll plus 20 s; once
    it is back the same two workers serve (no worker restarted), both LISTEN again (long-polls
    spread over both workers all wake together when a study ends on one of them), and every
    study submitted before the outage, running through it, or after it ends done with its
    exact total: nothing lost, no answer counted twice, nothing stored that was refused."""
    with private_postgres() as pg:
        db = pg.create_database("hub")
        with fleet(db, tmp_path) as f:
            before = f.workers()
            with Researchers(f.url, f.user, readers=3, every=1.5) as load:
                wait_until(lambda: len(load.submitted) >= 3, 90, 0.2)
                in_flight = wait_until(lambda: unfinished(db), 60, 0.05)
                pg.stop("fast")
                down = time.monotonic()  # from here until `up`, no server at all
                time.sleep(4)  # the researchers and the agents keep asking meanwhile
                up = time.monotonic()
                pg.start()
                wait_until(lambda: served(f), 60, 0.5)
                wait_until(lambda: listeners(db) == 2, 60, 0.2)
                back = time.monotonic() - up
                again = time.monotonic()
                pg.restart("fast")  # and once more, at once: every pooled connection is dead
                wait_until(lambda: served(f), 60, 0.5)
                wait_until(lambda: listeners(db) == 2, 60, 0.2)
                n_before = len(load.submitted)
                wait_until(lambda: len(load.submitted) >= n_before + 2, 60, 0.2)
                load.submitting.clear()
                drain(db, 120)
            assert f.workers() == before  # the same processes: nothing restarted a worker
            took, per_worker = long_polls_wake_together(f)
        during = [h for h in load.hits if down <= h.at and h.at + h.seconds <= up]
        refused = [h for h in load.hits if h.status == 503]
        print(
            f"requests {len(load.hits)}, during the outage {len(during)} ({len(refused)} 503), "
            f"served again {back:.1f} s after the start; studies {len(load.submitted)} "
            f"({len(in_flight)} running at the stop); 503 after the restart at once: "
            f"{sum(1 for h in refused if h.at >= again)}; "
            f"wake polls took {sorted(round(t, 1) for t in took)} s, per worker {per_worker}"
        )
        assert refused and {h.retry_after for h in refused} == {"2"}
        assert during and [h for h in during if h.status != 503] == []
        assert load.server_errors() == []
        assert [h for h in load.hits if h.status == 0] == []
        assert load.overdue(BOUND) == []
        counts = assert_every_study_done_once(db, load.submitted)
        assert counts["studies"] == len(load.submitted) + 1  # and the wake check's


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_killed_under_load(tmp_path: Path) -> None:
    """One of the two workers SIGKILLed while studies run and researchers read. Defined
    outcome: the supervisor starts another (two workers, both listening, again); a request the
    dead worker held fails at the connection level (no answer), never with a 5xx; the studies
    it drove are taken over by the other worker when their lease (2 s here) runs out, and every
    study ends done once with its exact total, no answer counted twice."""
    with temporary_database() as db, fleet(db, tmp_path) as f:
        before = f.workers()
        with Researchers(f.url, f.user, readers=3, every=1.5) as load:
            wait_until(lambda: len(load.submitted) >= 4, 90, 0.2)
            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            wait_until(lambda: f"hub worker {victim} exited" in f.log.read_text(), 30, 0.1)
            now = wait_until(lambda: len(f.workers()) == 2 and victim not in f.workers(), 60)
            wait_until(lambda: listeners(db) == 2, 90, 0.2)
            replaced = time.monotonic() - killed
            n_before = len(load.submitted)
            wait_until(lambda: len(load.submitted) >= n_before + 2, 60, 0.2)
            load.submitting.clear()
            drain(db, 120)
        assert now
        lost = [h for h in load.hits if h.status == 0]
        print(
            f"requests {len(load.hits)}, no answer {len(lost)}; replaced and listening "
            f"{replaced:.1f} s after the kill; studies {len(load.submitted)}"
        )
        assert [h for h in load.hits if h.status >= 500] == []
        assert load.overdue(BOUND) == []
        assert_every_study_done_once(db, load.submitted)


def delivered_to(db: str, node: str) -> list[str]:
    """The tasks delivered to `node` and not answered yet (the agent works on them in turn)."""
    with psycopg.connect(plain(db), connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT t.id FROM tasks t JOIN nodes n ON t.node_id = n.id"
            " LEFT JOIN answers a ON a.task_id = t.id"
            " WHERE n.name = %s AND t.status = 'delivered' AND a.id IS NULL",
            (node,),
        ).fetchall()
    return [r[0] for r in rows]


def answers_to(db: str, task: str) -> int:
    with psycopg.connect(plain(db), connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM answers WHERE task_id = %s", (task,)).fetchone()
    return row[0] if row else 0


def all_answered(db: str, tasks: list[str]) -> Callable[[], bool]:
    return lambda: all(answers_to(db, t) for t in tasks)


def stop_mid_task(f: Fleet, db: str, sig: signal.Signals, before: list[str]) -> list[str]:
    """Stop C with `sig` while it works on a task of this run (not one the previous C left
    behind), and start it again a second later; the tasks whose answers never left. If C
    happened to post its last answer just before the signal, it is tried again (at most 3)."""
    for attempt in range(3):
        wait_until(lambda: set(delivered_to(db, "C")) - set(before), 90, 0.05)
        kill(f.nodes["C"], sig)
        cut = [t for t in delivered_to(db, "C") if t not in before]
        time.sleep(1.0)
        f.start_node("C", 0.6, tag=f"-{sig.name}-{attempt}")
        if cut:
            return cut
    raise AssertionError(f"C answered each time before {sig.name} reached it")


@pytest.mark.slow
@pytest.mark.postgres
def test_a_node_agent_stopped_and_restarted_mid_round_under_load(tmp_path: Path) -> None:
    """Node C (0.6 s per answer) stopped while it works on a task, once with SIGTERM and once
    with SIGKILL (the agent has no handler: either ends it at once, its answer unsent), and
    started again a second later, while studies run and researchers read. Defined outcome:
    the restarted agent asks for its delivered tasks again and answers the interrupted one
    once; every study ends done with its exact total, no answer counted twice. C stopped and
    kept away past a round's deadline (a study with 5 s rounds): that study ends done over A
    and B, C reported `failed` "no answer within the study timeout (5 s)", minimum not met."""
    with temporary_database() as db, fleet(db, tmp_path, delays={"C": 0.6}) as f:
        interrupted: list[str] = []
        with Researchers(f.url, f.user, readers=3, every=5.0) as load:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                interrupted += stop_mid_task(f, db, sig, interrupted)
                answered = all_answered(db, list(interrupted))
                wait_until(answered, 90, 0.2)
            load.submitting.clear()
            drain(db, 120)
            # C away past a round's deadline
            kill(f.nodes["C"], signal.SIGKILL)
            away = submit(f, "C away", timeout=5)
            drain(db, 60)
            f.start_node("C", 0.2, tag="-back")
        print(f"requests {len(load.hits)}; studies {len(load.submitted)}")
        assert [h for h in load.hits if h.status >= 500 or h.status == 0] == []
        assert load.overdue(BOUND) == []
        assert interrupted and {answers_to(db, t) for t in interrupted} == {1}
        assert_every_study_done_once(db, load.submitted, apart=frozenset({away}))
        study = studies(db)[away]
        nodes = study["result"]["nodes"]
        assert study["status"] == "done"
        assert study["result"]["result"]["total"] == (TOTAL / 136) * sum(XS["A"] + XS["B"])
        assert {n: s["status"] for n, s in nodes.items()} == {
            "A": "answered",
            "B": "answered",
            "C": "failed",
        }
        assert "no answer within the study timeout (5 s)" in nodes["C"]["reason"]
        assert study["result"]["min_nodes_met"] is False


def round_zero(db: str, study: str) -> tuple[datetime, datetime | None, dict[str, str]]:
    """Round 0 of `study`: its deadline, when it closed, and each node's task status."""
    with psycopg.connect(plain(db), connect_timeout=5) as conn:
        deadline, closed = conn.execute(
            "SELECT deadline, closed_at FROM rounds WHERE study_id = %s AND round_no = 0",
            (study,),
        ).fetchone() or (None, None)
        tasks = conn.execute(
            "SELECT n.name, t.status FROM tasks t JOIN nodes n ON t.node_id = n.id"
            " JOIN rounds r ON t.round_id = r.id WHERE r.study_id = %s AND r.round_no = 0",
            (study,),
        ).fetchall()
    return deadline, closed, dict(tasks)


ANSWERED = {"A": "answered", "B": "answered"}


def utcnow() -> datetime:
    """The wall clock, as the hub stores a round's deadline (UTC, with its zone)."""
    return datetime.now(UTC)


def waits_on_c(db: str, study: str) -> bool:
    """Round 0 of `study` answered by A and B, not C (stopped: its task pending, or delivered
    on the long-poll the hub had not yet seen cut)."""
    tasks = round_zero(db, study)[2]
    return tasks.pop("C", None) in ("pending", "delivered") and tasks == ANSWERED


def outage_past_deadline(f: Fleet, pg: PrivatePostgres, load: Researchers) -> dict[str, Any]:
    """C stopped; two studies (8 s rounds) whose round 0 A and B answer; PostgreSQL stopped
    until a second past that round's deadline (a study submitted meanwhile: 503), started.
    Returns the studies and the outage's times (monotonic for the load's record, wall clock
    for the hub's)."""
    kill(f.nodes["C"], signal.SIGKILL)
    met = submit(f, "outage, 2 needed", timeout=8, min_nodes=2)
    short = submit(f, "outage, 3 needed", timeout=8)
    load.follow(met, short)  # the readers long-poll them across the outage
    for sid in (met, short):
        wait_until(partial(waits_on_c, f.db, sid), 30, 0.05)
    deadline = max(round_zero(f.db, sid)[0] for sid in (met, short))
    assert [round_zero(f.db, sid)[1] for sid in (met, short)] == [None, None]
    pg.stop("fast")
    down = time.monotonic()
    refused = httpx.post(
        f.url + "/api/studies",
        json={"spec": {"rounds": 1, "title": "in the outage"}},
        headers=auth(f.user),
        timeout=30,
    )
    past = (deadline - utcnow()).total_seconds() + 1.0
    time.sleep(max(past, 4.0))  # the round's deadline passes with no database
    up, up_wall = time.monotonic(), utcnow()
    pg.start()
    return {"met": met, "short": short, "refused": refused, "down": down, "up": up,
            "up_wall": up_wall, "deadline": deadline}  # fmt: skip


def assert_ended_without_c(db: str, sid: str, need: int, met: bool, o: dict[str, Any]) -> None:
    """Done over A and B, C `failed` "no answer within the study timeout (8 s)", its round-0
    task a timeout, the round closed after PostgreSQL was back; `min_nodes_met` as `need`
    and the two answering nodes say."""
    study = studies(db)[sid]
    assert study["status"] == "done", study
    result = study["result"]
    assert result["result"]["total"] == (TOTAL / 136) * sum(XS["A"] + XS["B"])
    assert {n: s["status"] for n, s in result["nodes"].items()} == {
        "A": "answered",
        "B": "answered",
        "C": "failed",
    }
    assert "no answer within the study timeout (8 s)" in result["nodes"]["C"]["reason"]
    assert (result["min_nodes"], result["min_nodes_met"]) == (need, met)
    deadline, closed, tasks = round_zero(db, sid)
    assert tasks == {"A": "answered", "B": "answered", "C": "timeout"}
    assert closed is not None and closed >= o["up_wall"] > deadline  # closed once it was back


@pytest.mark.slow
@pytest.mark.postgres
def test_a_round_deadline_passing_while_postgresql_is_down(tmp_path: Path) -> None:
    """Node C stopped; two studies with 8 s rounds (one needing 2 nodes, one all 3) wait on C
    in round 0 when PostgreSQL is stopped, and stay stopped until past that round's deadline,
    then started, while researchers read and long-poll them. Defined outcome: the studies do
    not stay `running`: once the server is back the round closes with C's task a timeout, and
    each study ends done over A and B with C `failed`, "no answer within the study timeout
    (8 s)", `min_nodes_met` true for the one needing 2, false for the one needing 3; no
    answer counted twice; the audit chain verifies; each study's thread paused when the
    database went (none died: no traceback in the hub's log), and the same two workers serve
    and drive a later study to done, both listening again; every request during the
    outage got 503 with `Retry-After: 2` (a study submitted then was not stored), none a 500."""
    from ccdp.federation.hub import audit
    from ccdp.federation.hub.db import open_database

    with private_postgres() as pg:
        db = pg.create_database("hub")
        with fleet(db, tmp_path) as f:
            before = f.workers()
            load = Researchers(f.url, f.user, readers=3)
            load.submitting.clear()  # the readers only: C is away, the test submits its own
            with load:
                o = outage_past_deadline(f, pg, load)
                wait_until(lambda: served(f), 60, 0.5)
                drain(db, 60)
            assert f.workers() == before  # the same processes: nothing restarted a worker
            wait_until(lambda: listeners(db) == 2, 60, 0.2)
            f.start_node("C", 0.1, tag="-back")
            took, per_worker = long_polls_wake_together(f)  # a later study, on both workers
        during = [h for h in load.hits if o["down"] <= h.at and h.at + h.seconds <= o["up"]]
        print(
            f"requests {len(load.hits)}, during the outage {len(during)}; down "
            f"{o['up'] - o['down']:.1f} s; wake polls took {sorted(round(t, 1) for t in took)}"
            f" s, per worker {per_worker}"
        )
        log = f.log.read_text()  # a study thread met the outage mid-round and paused; none died
        assert all(
            f"study {sid} paused: database unavailable" in log for sid in (o["met"], o["short"])
        )
        assert "Exception in thread" not in log and "Traceback" not in log
        assert o["refused"].status_code == 503 and o["refused"].headers["retry-after"] == "2"
        assert during and {(h.status, h.retry_after) for h in during} == {(503, "2")}
        assert load.server_errors() == []
        assert [h for h in load.hits if h.status == 0] == []
        assert load.overdue(BOUND) == []
        assert_ended_without_c(db, o["met"], 2, True, o)
        assert_ended_without_c(db, o["short"], 3, False, o)
        assert len(studies(db)) == 3  # the two and the later one: none from the outage
        counts = answer_counts(db, {o["met"], o["short"]})
        assert sorted(counts["answers_per_task"].values()) == [0, 0] + [1] * 12
        assert counts["audited_twice"] == {} and counts["audit_answers"] == 12
        sessions = open_database(db, tmp_path / "hub.audit.key")
        try:
            checked = audit.verify(sessions)
        finally:
            sessions.kw["bind"].dispose()
        assert checked.ok, checked.to_json()
