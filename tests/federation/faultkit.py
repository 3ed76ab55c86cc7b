"""Faults under load (issue 27): a private PostgreSQL cluster the test may stop and restart, a
`--workers 2` hub with node agents on it, researchers reading and submitting in threads, and
the hub database's own account of what happened (studies, answers per task, audit records).

The private cluster (pgcluster.py) is a real `initdb` + `pg_ctl` server in a temporary folder
on its own port: the shared server on 5432 must never be restarted. Without the PostgreSQL
binaries the test skips, except under CI, where that is a failure (tests/federation/pg.py's
`unavailable`, the rule for a missing server too).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.federation.netutil import kill, processes, spawn, wait_http, wait_until
from tests.federation.pg import unavailable
from tests.federation.pgcluster import NoPostgresBinaries, PrivatePostgres
from tests.federation.test_workers import children, listeners, standin_hub

XS = {"A": [1.0, 2.0, 3.0], "B": [10.0, 20.0], "C": [100.0]}  # sum 136
ROUNDS = 3  # round k weights by k+1: a study's total is 136 * (1+2+3) unless counted twice
TOTAL = 136.0 * 6


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private cluster, started; skipped without the binaries, a failure under CI."""
    try:
        cluster = PrivatePostgres()
    except NoPostgresBinaries as exc:
        unavailable(str(exc))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


# -- the hub, its nodes ----------------------------------------------------------------------
@dataclass
class Fleet:
    """A `--workers 2` hub (the production `serve`, stand-in analysis), its nodes and a user."""

    db: str
    url: str
    supervisor: subprocess.Popen
    log: Path
    tokens: dict[str, str]
    user: str
    procs: list[subprocess.Popen]
    work: Path
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def workers(self) -> list[int]:
        return sorted(children(self.supervisor.pid))

    def start_node(self, name: str, delay: float, tag: str = "") -> subprocess.Popen:
        args = ["-m", "tests.federation.standin", "node", "--hub", self.url]
        args += ["--token", self.tokens[name], "--data", str(self.work / f"{name}.json")]
        proc = spawn([*args, "--delay", str(delay)], self.work / f"node-{name}{tag}.log")
        self.procs.append(proc)
        self.nodes[name] = proc
        return proc


def register(db: str, key: Path) -> tuple[dict[str, str], str]:
    """Nodes A, B, C and researcher ana, written before the hub serves."""
    from ccdp.federation.hub.app import Hub
    from ccdp.federation.hub.db import open_database

    sessions = open_database(db, key)
    hub = Hub(sessions)
    tokens = {n: hub.add_node(n, "DE") for n in XS}
    user = hub.add_user("ana", "researcher")
    sessions.kw["bind"].dispose()
    return tokens, user


@contextmanager
def fleet(db: str, work: Path, delays: dict[str, float] | None = None) -> Iterator[Fleet]:
    """The hub with 2 workers on `db` (study lease 2 s), and one agent per node, all seen."""
    key = work / "hub.audit.key"
    tokens, user = register(db, key)
    for n, xs in XS.items():
        (work / f"{n}.json").write_text(json.dumps(xs))
    with processes() as procs:
        hub = standin_hub(db, key, work / "hub.log", "--workers", "2")
        hub.proc = spawn(hub.args, hub.log)
        procs.append(hub.proc)
        try:
            wait_http(hub.url, 120)
        except AssertionError:
            raise AssertionError(hub.log.read_text()) from None
        f = Fleet(db, hub.url, hub.proc, hub.log, tokens, user, procs, work)
        wait_until(lambda: len(f.workers()) == 2, 60, 0.2)
        wait_until(lambda: listeners(db) == 2, 90, 0.2)
        for n in XS:
            f.start_node(n, (delays or {}).get(n, 0.1))
        wait_until(lambda: nodes_seen(f) == set(XS), 90, 0.2)
        yield f
        kill(hub.proc)


def nodes_seen(f: Fleet) -> set[str]:
    r = httpx.get(f.url + "/api/nodes", headers=auth(f.user), timeout=30)
    return {n["name"] for n in r.json() if n.get("last_seen")} if r.status_code == 200 else set()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(f: Fleet, title: str, timeout: float, **spec: Any) -> str:
    """A stand-in study of ROUNDS rounds submitted by the fleet's researcher (outside the
    load's record, for a test's own check), with any further `spec` keys; its id."""
    r = httpx.post(
        f.url + "/api/studies",
        json={"spec": {"rounds": ROUNDS, "timeout": timeout, "title": title, **spec}},
        headers=auth(f.user),
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def worker_of(f: Fleet, client_port: int) -> int | None:
    """The worker pid that accepted the connection from 127.0.0.1:`client_port` to the hub
    (Linux /proc: the server side's socket inode among a worker's open files); None while
    the connection waits in the accept queue. The hub says in no header which worker served
    a request: this is how a test knows both were exercised."""
    hub_port = int(f.url.rsplit(":", 1)[1])
    want = (f"{hub_port:04X}", f"{client_port:04X}")
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local, remote = cols[1].split(":")[1], cols[2].split(":")[1]
        if (local, remote) == want and cols[9] != "0":
            inode = f"socket:[{cols[9]}]"
    if inode is None:
        return None
    for pid in f.workers():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == inode:
                    return pid
            except OSError:
                continue
    return None


# -- researchers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    """One request as the researcher saw it: status 0 is no answer (connection level)."""

    route: str
    status: int
    seconds: float
    at: float
    wait: float = 0.0
    retry_after: str | None = None
    error: str | None = None


class Researchers:
    """`readers` threads reading the API (lists, nodes, a study's long-poll) and one thread
    submitting a study every `every` seconds, until stopped; every request recorded."""

    def __init__(
        self, url: str, token: str, readers: int = 3, every: float = 1.0, timeout: float = 60
    ) -> None:
        self.url, self.token, self.readers, self.every = url, token, readers, every
        self.study_timeout = timeout
        self.hits: list[Hit] = []
        self.submitted: list[str] = []
        self.halt = threading.Event()
        self.submitting = threading.Event()
        self.submitting.set()
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Researchers:
        self.threads = [threading.Thread(target=self._submit, daemon=True)]
        self.threads += [
            threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(self.readers)
        ]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        for t in self.threads:
            t.join(90)

    def follow(self, *ids: str) -> None:
        """Have the readers long-poll these studies too (submitted by the test itself)."""
        with self._lock:
            self.submitted += ids

    def call(
        self, http: httpx.Client, method: str, path: str, route: str, **kw: Any
    ) -> httpx.Response | None:
        """One request, recorded; None when no answer came."""
        wait = float(kw.get("params", {}).get("wait", 0))
        t0 = time.monotonic()
        try:
            r = http.request(method, path, headers=auth(self.token), **kw)
        except httpx.HTTPError as exc:
            self._record(Hit(route, 0, time.monotonic() - t0, t0, wait, error=type(exc).__name__))
            return None
        err = None if r.status_code < 400 else r.text[:200]
        after = r.headers.get("retry-after")
        self._record(Hit(route, r.status_code, time.monotonic() - t0, t0, wait, after, err))
        return r

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def _submit(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self.halt.wait(self.every):
                if not self.submitting.is_set():
                    continue
                spec = {"rounds": ROUNDS, "timeout": self.study_timeout, "title": "under load"}
                r = self.call(
                    http, "POST", "/api/studies", "POST /api/studies", json={"spec": spec}
                )
                if r is not None and r.status_code == 201:
                    with self._lock:
                        self.submitted.append(r.json()["id"])

    def _read(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self.halt.wait(rng.uniform(0.05, 0.3)):
                with self._lock:
                    mine = list(self.submitted[-5:])
                roll = rng.random()
                if mine and roll < 0.4:
                    sid = rng.choice(mine)
                    params = {"wait": rng.choice([3, 20])}  # one held across a fault
                    self.call(http, "GET", f"/api/studies/{sid}", "GET /api/studies/{id}?wait=",
                              params=params)  # fmt: skip
                else:
                    path = rng.choice(["/api/studies", "/api/nodes", "/api/catalogues"])
                    self.call(http, "GET", path, f"GET {path}")

    def server_errors(self) -> list[Hit]:
        """Every 5xx but the database-away 503."""
        return [h for h in self.hits if h.status >= 500 and h.status != 503]

    def overdue(self, bound: float) -> list[Hit]:
        """Requests that took longer than their long-poll plus `bound` seconds."""
        return [h for h in self.hits if h.seconds > h.wait + bound]


# -- what the hub's database says ------------------------------------------------------------
def plain(db: str) -> str:
    return db.replace("+psycopg", "")


def studies(db: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(plain(db), connect_timeout=5) as conn:
        rows = conn.execute("SELECT id, status, result, error FROM studies").fetchall()
    return {
        i: {"status": st, "result": json.loads(r) if isinstance(r, str) else r, "error": e}
        for i, st, r, e in rows
    }


def unfinished(db: str) -> list[str]:
    return [i for i, s in studies(db).items() if s["status"] not in ("done", "failed")]


def answer_counts(db: str, studies_: set[str]) -> dict[str, Any]:
    """For these studies: tasks with their number of answers, and `answer` audit records per
    node and round (each accepted answer writes one): counted twice shows up in either."""
    with psycopg.connect(plain(db), connect_timeout=5) as conn:
        per_task = conn.execute(
            "SELECT r.study_id, t.id, count(a.id) FROM tasks t"
            " JOIN rounds r ON t.round_id = r.id LEFT JOIN answers a ON a.task_id = t.id"
            " GROUP BY r.study_id, t.id"
        ).fetchall()
        audited = conn.execute(
            "SELECT actor, detail FROM audit WHERE action IN ('answer', 'answer-late')"
        ).fetchall()
        rounds = conn.execute("SELECT study_id, count(*) FROM rounds GROUP BY 1").fetchall()
    tasks_audited: dict[str, int] = {}
    for actor, detail in audited:  # one node's answer to one study's round
        d = json.loads(detail) if isinstance(detail, str) else detail
        if d["study"] in studies_:
            key = f"{actor} {d['study']} {d['round']}"
            tasks_audited[key] = tasks_audited.get(key, 0) + 1
    return {
        "answers_per_task": {t: n for sid, t, n in per_task if sid in studies_},
        "audit_answers": sum(tasks_audited.values()),
        "audited_twice": {k: v for k, v in tasks_audited.items() if v > 1},
        "rounds_per_study": {sid: n for sid, n in rounds if sid in studies_},
    }


def assert_every_study_done_once(
    db: str, submitted: list[str], apart: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Every study the hub holds (but those `apart`, which the test judges itself) ended done
    with the exact total (a round counted twice, or a node's answer taken twice, would change
    it), three rounds each, one answer per task and one audit record per answer. Returns the
    counts for the test's report."""
    held = {i: s for i, s in studies(db).items() if i not in apart}
    assert set(submitted) - apart <= set(held), set(submitted) - set(held)
    bad = {i: s for i, s in held.items() if s["status"] != "done"}
    assert not bad, bad
    wrong = {
        i: s["result"]["result"] for i, s in held.items() if s["result"]["result"]["total"] != TOTAL
    }
    assert not wrong, wrong
    counts = answer_counts(db, set(held))
    assert set(counts["answers_per_task"].values()) == {1}, counts["answers_per_task"]
    assert counts["audited_twice"] == {}
    assert counts["audit_answers"] == len(counts["answers_per_task"])
    assert set(counts["rounds_per_study"].values()) == {ROUNDS}
    assert len(counts["answers_per_task"]) == len(held) * ROUNDS * len(XS)
    return {"studies": len(held), "answers": counts["audit_answers"]}


def drain(db: str, timeout: float) -> None:
    wait_until(lambda: not unfinished(db), timeout, 0.5)
