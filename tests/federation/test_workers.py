"""N hub workers on one PostgreSQL database (issue 27): two real hub processes, each on its own
port so the test knows which one it talks to, over one fresh database.

A sign-in made on one is valid on the other (sessions in the database); a long-poll on one is
woken by what happens on the other (LISTEN/NOTIFY); a worker killed with SIGKILL mid-round loses
nothing and counts nothing twice (study leases); the database refusing connections gives 503s,
then the workers recover; and both started at once migrate the fresh database once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from ccdp.federation.hub import leases
from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.db import open_database
from ccdp.federation.hub.models import AnswerRow, AuditRow, RoundRow, TaskRow
from ccdp.wire.summary import AggregatePart, Summary
from tests.federation.netutil import HubProcess, processes, spawn, wait_http, wait_until
from tests.federation.pg import ADMIN_URL, temporary_database

XS = {"A": [1.0, 2.0, 3.0], "B": [10.0, 20.0]}
LEASE = 2.0  # seconds: a killed worker's study is taken over this long after it died


def standin_hub(db: str, key: Path, log: Path, *extra: str) -> HubProcess:
    proc = HubProcess(db, log)
    proc.args = [
        *("-m", "tests.federation.standin", "hub", "--db", db, "--port", str(proc.port)),
        *("--audit-key", str(key), "--study-lease", str(LEASE), "--dashboard", *extra),
    ]
    return proc


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Workers A and B started at once on a fresh database (they race to migrate it), nodes
    A and B registered, researcher ana."""
    key = tmp_path / "hub.audit.key"
    with temporary_database() as db, processes() as procs:
        workers = {w: standin_hub(db, key, tmp_path / f"hub-{w}.log") for w in "ab"}
        for w in workers.values():
            w.proc = spawn(w.args, w.log)
            procs.append(w.proc)
        for w in workers.values():
            try:
                wait_http(w.url, 90)
            except AssertionError:
                raise AssertionError(w.log.read_text()) from None
        hub = Hub(open_database(db, key))
        tokens = {n: hub.add_node(n, "DE") for n in XS}
        for n, xs in XS.items():
            (tmp_path / f"{n}.json").write_text(json.dumps(xs))
        user = hub.add_user("ana", "researcher")
        yield {"db": db, "hub": hub, "tokens": tokens, "user": user, "procs": procs, **workers}
        for w in workers.values():
            w.stop()
        hub.context.sessions.kw["bind"].dispose()


def start_node(pair: dict[str, Any], tmp_path: Path, name: str, at: str, delay: float) -> None:
    args = ["-m", "tests.federation.standin", "node", "--hub", pair[at].url]
    args += ["--token", pair["tokens"][name], "--data", str(tmp_path / f"{name}.json")]
    pair["procs"].append(spawn([*args, "--delay", str(delay)], tmp_path / f"node-{name}.log"))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(url: str, user: str, **spec: Any) -> str:
    r = httpx.post(url + "/api/studies", json={"spec": spec}, headers=auth(user), timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def sign_in(url: str, token: str) -> str:
    """The dashboard's sign-in over HTTP; returns the session cookie's value."""
    with httpx.Client(base_url=url, timeout=30) as web:
        form = web.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        r = web.post("/signin", data={"token": token, "csrf": csrf, "next": "/studies"})
        assert r.status_code == 303, r.text
        return web.cookies["ccdp_session"]


def page(url: str, sid: str, path: str = "/studies") -> httpx.Response:
    return httpx.get(url + path, cookies={"ccdp_session": sid}, timeout=30)


def audit_actions(hub: Hub, study_id: str) -> list[str]:
    with hub.sessions() as s:
        rows = s.scalars(select(AuditRow).order_by(AuditRow.seq))
        return [r.action for r in rows if (r.detail or {}).get("study") == study_id]


def test_both_workers_migrated_one_database_and_listen(pair):
    """Started at once on an empty database, both came up at the same schema (the advisory
    lock made the second wait for the first's upgrade), and each holds a LISTEN connection."""
    with psycopg.connect(pair["db"].replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0010",)]
    wait_until(lambda: listeners(pair["db"]) == 2, 30, 0.2)  # each connects once it serves


def test_a_sign_in_on_one_worker_is_valid_on_the_other_until_sign_out(pair):
    sid = sign_in(pair["a"].url, pair["user"])
    on_b = page(pair["b"].url, sid)
    assert on_b.status_code == 200 and "Sign out" in on_b.text, on_b.text[:300]
    # the table holds the id's hash and the token sealed, neither in the clear
    with psycopg.connect(pair["db"].replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT id_hash, sealed_token, name FROM web_sessions").fetchone()
    assert row is not None and row[2] == "ana"
    assert row[0] != sid and pair["user"].encode() not in bytes(row[1])
    # sign out on B (with the session's CSRF token): A no longer knows the session either
    found = re.search(r'name="csrf" value="([^"]+)"', on_b.text)
    assert found is not None, on_b.text[:300]
    csrf = found.group(1)
    out = httpx.post(
        pair["b"].url + "/signout", data={"csrf": csrf}, cookies={"ccdp_session": sid}, timeout=30
    )
    assert out.status_code == 303
    again = page(pair["a"].url, sid)
    assert again.status_code == 303 and again.headers["location"].startswith("/?next=")


def test_a_long_poll_on_one_worker_is_woken_by_an_answer_posted_to_the_other(pair):
    """Node A long-polls its tasks on worker A while the study is submitted on worker B; the
    researcher long-polls the study on A while the nodes answer on B. Each returns within a
    couple of seconds, not at its 30 s timeout."""
    hub, user, node = pair["hub"], pair["user"], pair["tokens"]["A"]
    url_a, url_b = pair["a"].url, pair["b"].url
    with httpx.Client(timeout=60) as c:
        c.get(url_a + "/api/node/tasks", headers=auth(node))  # warm up the worker
        import threading

        got: dict[str, Any] = {}

        def poll_tasks() -> None:
            t0 = time.monotonic()
            r = c.get(url_a + "/api/node/tasks?wait=30", headers=auth(node))
            got["tasks"], got["after"] = r.json()["tasks"], time.monotonic() - t0

        poller = threading.Thread(target=poll_tasks)
        poller.start()
        time.sleep(1.0)  # the poll is waiting on A
        t_submit = time.monotonic()
        sid = submit(url_b, user, rounds=1, nodes=["A", "B"], timeout=60)
        poller.join(40)
        woke = time.monotonic() - t_submit
        assert got["tasks"] and got["tasks"][0]["study_id"] == sid
        assert woke < 5.0, f"tasks long-poll woke {woke:.2f} s after the submit on B"
        tasks = {n: c.get(url_b + "/api/node/tasks", headers=auth(t)).json()["tasks"]
                 for n, t in pair["tokens"].items() if n == "B"}  # fmt: skip
        tasks["A"] = got["tasks"]

        def answer(name: str) -> None:
            task = tasks[name][0]
            part = AggregatePart(n=len(XS[name]), n_params=1, values={"sum": sum(XS[name])})
            summary = Summary(parts={"s": part}).to_dict()
            body = {
                "task_id": task["task_id"],
                "node": name,
                "status": "answered",
                "summary": summary,
            }
            r = c.post(url_b + "/api/node/answers", json=body, headers=auth(pair["tokens"][name]))
            assert r.status_code == 200, r.text

        answer("A")
        study: dict[str, Any] = {}

        def poll_study() -> None:
            r = c.get(f"{url_a}/api/studies/{sid}?wait=30", headers=auth(user))
            study.update(r.json())

        waiter = threading.Thread(target=poll_study)
        waiter.start()
        time.sleep(1.0)  # the study's long-poll is waiting on A
        t_answer = time.monotonic()
        answer("B")  # the last answer, posted to B
        waiter.join(40)
        woke = time.monotonic() - t_answer
    assert study["status"] == "done", study
    assert study["result"]["result"]["total"] == 36.0
    assert woke < 5.0, f"study long-poll woke {woke:.2f} s after the answer on B"
    assert hub.study(sid)["status"] == "done"


def rounds_seen(hub: Hub, study_id: str) -> list[int]:
    with hub.sessions() as s:
        return list(s.scalars(select(RoundRow.round_no).where(RoundRow.study_id == study_id)))


def answers_per_task(hub: Hub, study_id: str) -> list[int]:
    with hub.sessions() as s:
        rows = s.execute(
            select(func.count(AnswerRow.id))
            .select_from(TaskRow)
            .join(RoundRow, TaskRow.round_id == RoundRow.id)
            .outerjoin(AnswerRow, AnswerRow.task_id == TaskRow.id)
            .where(RoundRow.study_id == study_id)
            .group_by(TaskRow.id)
        ).all()
    return [n for (n,) in rows]


@pytest.mark.slow
def test_a_worker_killed_mid_round_loses_nothing_and_counts_nothing_twice(pair, tmp_path):
    """The worker driving a 4-round study is SIGKILLed while round 1 is open; the other worker
    takes the study over once its lease runs out and replays it from the database: the total
    (which weights round k by k+1) is exact, each node answered each round once, and the
    study finished once."""
    hub = pair["hub"]
    for n in XS:
        start_node(pair, tmp_path, n, "b", delay=0.5)  # the nodes talk to the survivor
    wait_until(lambda: all(n["last_seen"] for n in hub.nodes()), 60, 0.1)
    sid = submit(pair["a"].url, pair["user"], rounds=4, timeout=60)
    owner = wait_until(lambda: leases.holder(hub.sessions, sid), 30)
    assert leases.owner_pid(owner) == pair["a"].proc.pid  # submitted on A: A drives it
    wait_until(lambda: 1 in rounds_seen(hub, sid), 60)
    pair["a"].stop(signal.SIGKILL)  # mid-round: no goodbye, the lease simply stops moving
    assert hub.study(sid)["status"] == "running"
    killed_at = time.monotonic()

    def holder_pid() -> int | None:
        return leases.owner_pid(leases.holder(hub.sessions, sid) or "")

    taken = wait_until(lambda: holder_pid() != pair["a"].proc.pid and holder_pid(), 30)
    assert taken == pair["b"].proc.pid
    # taken over after the lease ran out, not before (the lease was renewed until the kill)
    assert time.monotonic() - killed_at < LEASE + 10
    study = wait_until(
        lambda: hub.study(sid) if hub.study(sid)["status"] != "running" else None, 90
    )
    assert study["status"] == "done", study
    # rounds k=0..3 weight by 1..4: 36 * 10; a recounted round would change it
    assert study["result"]["result"] == {"analysis": "rounds", "total": 360.0, "n": 5, "rounds": 4}
    assert sorted(rounds_seen(hub, sid)) == [0, 1, 2, 3]
    assert answers_per_task(hub, sid) == [1] * 8  # 4 rounds x 2 nodes, one answer each
    actions = audit_actions(hub, sid)
    assert actions.count("study-done") == 1 and actions.count("open-round") == 4
    assert actions.count("answer") == 8
    assert hub.verify_audit().ok


def set_connections(db: str, allow: bool) -> None:
    """The database refuses (or again takes) new connections; refusing also cuts the hub's
    open ones. This is how the test makes PostgreSQL unavailable without stopping the server
    every other test on the machine shares (stopping it needs the service account)."""
    name = db.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


@pytest.mark.slow
def test_the_database_away_gives_503_then_both_workers_recover(pair, tmp_path):
    hub, user = pair["hub"], pair["user"]
    urls = [pair["a"].url, pair["b"].url]
    for url in urls:
        assert httpx.get(url + "/api/nodes", headers=auth(user), timeout=30).status_code == 200
    hub.context.sessions.kw["bind"].dispose()  # the test's own connections go too
    set_connections(pair["db"], False)
    try:
        for url in urls:
            r = httpx.get(url + "/api/nodes", headers=auth(user), timeout=30)
            assert r.status_code == 503, r.text
            assert r.json()["detail"].startswith("the hub's database is unavailable")
            assert r.headers["retry-after"] == "2"
    finally:
        set_connections(pair["db"], True)

    def served() -> bool:
        """Both workers serve again, on each of their paths to the database: the lists and
        token checks on the loop's own connections, and the threads' pool (/api/catalogues).
        A pooled connection the outage broke fails its next request once (503, Retry-After),
        which makes the pool drop every connection older than the failure."""
        return all(
            httpx.get(u + path, headers=auth(user), timeout=30).status_code == 200
            for u in urls
            for path in ("/api/nodes", "/api/catalogues")
        )

    wait_until(served, 30, 0.2)
    # the wake-up listeners reconnected too: a cross-worker long-poll still wakes at once
    wait_until(lambda: listeners(pair["db"]) == 2, 30, 0.2)  # a fresh snapshot each time
    for n in XS:
        start_node(pair, tmp_path, n, "a", delay=0.0)
    sid = submit(pair["b"].url, user, rounds=2, timeout=60)
    r = httpx.get(f"{pair['a'].url}/api/studies/{sid}?wait=50", headers=auth(user), timeout=70)
    assert r.json()["status"] == "done" and r.json()["result"]["result"]["total"] == 108.0


def study_in(hub: Hub) -> str:
    hub.add_node("N", "DE")
    return hub.create_study(
        {}, analysis="rounds", title="t", nodes=None, min_nodes=None, timeout=5, owner=None
    )


def test_a_lease_is_one_workers_until_it_runs_out_on_postgres(tmp_path):
    with temporary_database() as db:
        hub = Hub(open_database(db, tmp_path / "k"), open_studies=True)
        sid = study_in(hub)
        assert leases.claim(hub.sessions, sid, "h:1:a", 0.5)
        assert not leases.claim(hub.sessions, sid, "h:2:b", 0.5)  # held
        assert leases.claim_free(hub.sessions, "h:2:b", 0.5) == []
        assert leases.renew(hub.sessions, "h:1:a", [sid], 0.5) == {sid}
        time.sleep(0.7)  # a's lease runs out (a was killed)
        assert leases.claim_free(hub.sessions, "h:2:b", 5.0) == [sid]
        assert leases.renew(hub.sessions, "h:1:a", [sid], 0.5) == set()  # a learns it lost it
        assert leases.owner_pid(leases.holder(hub.sessions, sid) or "") == 2
        hub.set_study_status(sid, "done")
        assert not leases.claim(hub.sessions, sid, "h:2:b", 5.0)  # finished: nothing to claim
        hub.context.sessions.kw["bind"].dispose()


def test_a_sqlite_hub_takes_over_a_previous_runs_lease_at_once(tmp_path):
    """SQLite admits one worker: a restarted hub resumes its studies without waiting."""
    hub = Hub(open_database(f"sqlite:///{tmp_path / 'hub.db'}"), open_studies=True)
    sid = study_in(hub)
    assert leases.claim(hub.sessions, sid, "h:1:a", 60)
    assert leases.claim_free(hub.sessions, "h:2:b", 60) == [sid]


def children(pid: int) -> list[int]:
    """The live hub workers `pid` spawned (Linux /proc; not multiprocessing's resource tracker)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmd:
            out.append(int(stat.parent.name))
    return out


def listeners(db: str) -> int:
    """Connections in LISTEN now (autocommit: pg_stat_activity is a snapshot per transaction)."""
    with psycopg.connect(db.replace("+psycopg", ""), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'"
            " AND datname = current_database()"
        ).fetchone()
    return row[0] if row else 0


@pytest.mark.slow
def test_the_supervisor_replaces_a_killed_worker(tmp_path):
    """`--workers 2`: SIGKILL one worker; the supervisor starts another, the port keeps
    answering, and two workers listen for wake-ups again. SIGKILL the supervisor: its workers
    notice and stop (none is left holding the port)."""
    with temporary_database() as db, processes() as procs:
        hub = standin_hub(db, tmp_path / "k", tmp_path / "hub.log", "--workers", "2")
        hub.proc = spawn(hub.args, hub.log)
        procs.append(hub.proc)
        wait_http(hub.url, 120)
        workers = wait_until(lambda: len(children(hub.proc.pid)) >= 2 and children(hub.proc.pid))
        wait_until(lambda: listeners(db) == 2, 60, 0.2)
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: f"hub worker {victim} exited" in hub.log.read_text(), 30, 0.1)
        wait_until(lambda: victim not in children(hub.proc.pid), 30, 0.1)
        wait_until(lambda: len(children(hub.proc.pid)) == 2, 30, 0.1)
        wait_until(lambda: listeners(db) == 2, 90, 0.2)
        for _ in range(10):  # whichever worker accepts, the port answers
            assert httpx.get(hub.url + "/api/health", timeout=30).status_code == 200
        last = children(hub.proc.pid)
        hub.proc.kill()  # the supervisor killed outright: its workers stop by themselves
        hub.proc.wait(10)
        wait_until(lambda: all(not Path(f"/proc/{w}/stat").exists() for w in last), 30, 0.2)
        assert last
