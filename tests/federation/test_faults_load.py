"""Faults under load (issue 27): `serve --workers 2` on PostgreSQL with three node agents, a
researcher submitting a study every 1.5 s (5 s in the node test) and three more reading the
API, when PostgreSQL is restarted, a worker is SIGKILLed, or a node agent is stopped and
restarted mid-round. Each test's docstring is its defined outcome (docs/deploy.md, "What
happens when").

The hub is the production `serve` (the function `ccdp hub serve` runs: supervisor, workers,
leases, LISTEN/NOTIFY) with the stand-in analysis of tests/federation/standin.py, whose study
total weights round k by k+1: a round counted twice, or one node's answer taken twice, changes
the total. The nodes are the production NodeAgent over the stand-in data. The database's own
account (answers per task, audit records per answer) is checked beside the totals.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
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
    assert_every_study_done_once,
    auth,
    drain,
    fleet,
    plain,
    private_postgres,
    studies,
    submit,
    unfinished,
)
from tests.federation.netutil import kill, wait_until
from tests.federation.pg import temporary_database
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


def long_polls_wake_together(f: Fleet, polls: int = 6, wait: float = 30) -> list[float]:
    """`polls` researchers long-poll one new study at once (the kernel spreads their
    connections over both workers); the worker that finishes it wakes its own, NOTIFY the
    other's: all end within 5 s of each other, done. A worker whose listener did not
    reconnect would hold its polls to `wait` and answer `running`. Returns each poll's
    seconds."""
    sid = submit(f, "wake check", timeout=60)
    took: list[float] = []
    ended: list[float] = []
    got: list[dict[str, Any]] = []

    def poll() -> None:
        t0 = time.monotonic()
        body = httpx.get(
            f"{f.url}/api/studies/{sid}",
            params={"wait": wait},
            headers=auth(f.user),
            timeout=wait + 30,
        ).json()
        ended.append(time.monotonic())
        took.append(ended[-1] - t0)
        got.append(body)

    threads = [threading.Thread(target=poll) for _ in range(polls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(wait + 40)
    assert [b["status"] for b in got] == ["done"] * polls, got
    assert all(b["result"]["result"]["total"] == TOTAL for b in got)
    assert max(ended) - min(ended) < 5, took  # woken together, whichever worker held them
    return took


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
            took = long_polls_wake_together(f)
        during = [h for h in load.hits if down <= h.at and h.at + h.seconds <= up]
        refused = [h for h in load.hits if h.status == 503]
        print(
            f"requests {len(load.hits)}, during the outage {len(during)} ({len(refused)} 503), "
            f"served again {back:.1f} s after the start; studies {len(load.submitted)} "
            f"({len(in_flight)} running at the stop); 503 after the restart at once: "
            f"{sum(1 for h in refused if h.at >= again)}; "
            f"wake polls took {sorted(round(t, 1) for t in took)} s"
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
