"""The hub under load: node agents and researchers against `ccdp hub serve` on PostgreSQL.

One run, on 127.0.0.1 only, bounded in time (`--duration`, then at most `--drain` seconds for
the studies still running):

1. a fresh PostgreSQL database (created here, dropped at the end, also on SIGTERM),
   `--agents` node stores (DuckDB, `--patients` each; ten built from random registries, the
   rest copies of them; policy written out: `counts: perturbed`, `exact_release: any`,
   `require_project: false`), the nodes and `--researchers` users registered;
2. `ccdp hub serve --db postgresql+psycopg://… --open` (`--workers N` passed only when N > 1);
3. the node agents: `--agent-mode real` starts one `ccdp node run --open` process per node;
   `--agent-mode light` (the default) runs the same `NodeAgent` + `LocalNode` in threads, a
   share of the nodes in each of `--agent-procs` processes (see agents.py for why);
4. baseline: each route asked alone, one request at a time, and one count study alone;
5. load: the researchers (researchers.py: dashboard pages, study submissions, result reads)
   for `--duration` seconds, while the hub's resident memory (its process and any workers)
   is sampled from /proc every second;
6. drain, then the checks: every submitted study done or failed with a reason, no 5xx, no
   node answer accepted twice (the agents' own record and the hub's database).

    python benchmarks/load/bench_load.py --agents 50 --researchers 200 --duration 180
    python benchmarks/load/bench_load.py --duration 1800            # the 30-minute soak
    python benchmarks/load/bench_load.py --workers 4                # once serve has --workers
    python benchmarks/load/bench_load.py --workers 2 --private-pg --kill-worker-at 20 \
        --kill-agents-at 40 --restart-db-at 60                      # faults under load

Faults (off unless asked; the "what happens when" of docs/deploy.md): `--kill-worker-at S`
SIGKILLs one hub worker S seconds into the load, `--kill-agents-at S` SIGKILLs the first agent
process and starts it again `--agents-away` seconds later, `--restart-db-at S` stops PostgreSQL
for `--db-down` seconds, which only a cluster of the run's own allows (`--private-pg`: initdb
and pg_ctl on a free port, tests/federation/pgcluster.py), never the shared server.

Prints a markdown table per route (p50/p95/p99 under load beside the unloaded baseline),
throughput, error rate, hub memory and studies submitted against completed; `--json PATH`
writes all of it for a test to check. Exits 0 whatever it measured: the CI test decides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(HERE)]

from benchmarks.procstat import cpu_seconds, with_descendants  # noqa: E402
from researchers import Record, Researcher, Studied, drain, note, run_researchers  # noqa: E402
from tests.storekit import build_store, random_registry  # noqa: E402

ADMIN_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
POLICY = {"min_cell": 5, "counts": "perturbed", "exact_release": "any", "require_project": False}
COUNTRIES = ["FR", "DE", "IT", "PL", "BR", "KE", "ES", "NL", "SE", "PT"]


# -- set-up ----------------------------------------------------------------------------------
@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new PostgreSQL database for this run (SQLAlchemy URL); dropped afterwards."""
    import psycopg

    name = f"ccdp_load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def build_stores(work: Path, n: int, patients: int, distinct: int = 10) -> list[tuple[str, Path]]:
    """`n` node stores: `distinct` built from random registries (one per country), the rest
    copies of them (store and policy file), which is all a node agent's work needs and keeps
    the set-up to seconds."""
    from ccdp.disclosure.policy import policy_path

    out: list[tuple[str, Path]] = []
    for i in range(n):
        name, path = f"N{i:02d}", work / f"N{i:02d}.duckdb"
        if i < distinct:
            country = COUNTRIES[i % len(COUNTRIES)]
            build_store(path, random_registry(100 + i, patients, country, name), policy=POLICY)
        else:
            source = out[i % distinct][1]
            shutil.copyfile(source, path)
            shutil.copyfile(policy_path(source), policy_path(path))
        out.append((name, path))
    return out


def register(db: str, key: Path, nodes: list[tuple[str, Path]], users: int) -> tuple[dict, list]:
    """Node and user tokens, written to the hub's database before it serves."""
    from ccdp.federation.hub.app import Hub
    from ccdp.federation.hub.db import open_database

    sessions = open_database(db, key)
    hub = Hub(sessions)
    countries = {n: COUNTRIES[i % len(COUNTRIES)] for i, (n, _) in enumerate(nodes)}
    node_tokens = {n: hub.add_node(n, countries[n]) for n, _ in nodes}
    user_tokens = [hub.add_user(f"researcher{i:03d}", "researcher") for i in range(users)]
    sessions.kw["bind"].dispose()
    return node_tokens, user_tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


LAUNCHED: dict[int, tuple[list[str], Path, dict[str, str]]] = {}  # pid: how to start it again


def spawn(cmd: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd,
        env=child_env(**env),
        stdout=log.with_suffix(".out").open("wb"),
        stderr=log.open("wb"),
        start_new_session=True,
    )
    LAUNCHED[proc.pid] = (cmd, log, env)
    return proc


def start_hub(db: str, key: Path, port: int, workers: int, work: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ccdp", "hub", "serve", "--db", db, "--port", str(port)]
    cmd += ["--open", "--audit-key", str(key)]
    if workers > 1:  # the option lands with the workers branch; one worker needs no flag
        cmd += ["--workers", str(workers)]
    return spawn(cmd, work / "hub.log")


def start_agents(
    mode: str,
    url: str,
    stores: list[tuple[str, Path]],
    tokens: dict,
    procs: int,
    poll: float,
    work: Path,
) -> list[subprocess.Popen]:
    if mode == "real":
        cli = [sys.executable, "-m", "ccdp", "node", "run"]
        return [
            spawn(
                [*cli, "--store", str(s), "--hub", url, "--poll", str(poll), "--open"],
                work / f"node-{n}.log",
                CCDP_NODE_TOKEN=tokens[n],
            )
            for n, s in stores
        ]
    out = []
    for k in range(procs):
        share = [{"store": str(s), "token": tokens[n]} for n, s in stores[k::procs]]
        config = work / f"agents-{k}.json"
        config.write_text(json.dumps(share))
        cmd = [sys.executable, str(HERE / "agents.py"), "--hub", url, "--config", str(config)]
        cmd += ["--out", str(work / f"posted-{k}.json"), "--poll", str(poll)]
        out.append(spawn(cmd, work / f"agents-{k}.log"))
    return out


def wait_until(cond: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if cond():
                return time.monotonic() - t0
        except Exception:  # the hub may not answer yet
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")


def nodes_seen(url: str, token: str, n: int) -> bool:
    import httpx

    got = httpx.get(f"{url}/api/nodes", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return sum(1 for x in got.json() if x.get("last_seen")) >= n


# -- hub memory ------------------------------------------------------------------------------
def rss_mib(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class MemorySampler(threading.Thread):
    """The hub's RSS (all its processes) every `every` seconds, from /proc."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        super().__init__(daemon=True, name="rss")
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float, int]] = []  # (t, MiB, processes)
        self.cpu: list[tuple[float, float]] = []  # (t, CPU seconds so far)
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.halt.is_set():
            pids = with_descendants(self.pid)
            now = time.monotonic() - self.t0
            self.samples.append((now, rss_mib(pids), len(pids)))
            self.cpu.append((now, cpu_seconds(pids)))
            self.halt.wait(self.every)


# -- faults (off unless asked) ---------------------------------------------------------------
class Faults(threading.Thread):
    """During the load, at the seconds asked: SIGKILL one hub worker (the supervisor replaces
    it); SIGKILL the first agent process and start it again `--agents-away` seconds later;
    stop the private PostgreSQL cluster and start it again `--db-down` seconds later. Each
    event is written down with its time since the load began."""

    def __init__(self, args: argparse.Namespace, hub: subprocess.Popen, agents: list, pg: Any):
        super().__init__(daemon=True, name="faults")
        self.args, self.hub, self.agents, self.pg = args, hub, agents, pg
        self.events: list[dict[str, Any]] = []
        self.t0 = time.monotonic()

    def plan(self) -> list[tuple[float, Any]]:
        a = self.args
        steps = [(a.kill_worker_at, self.kill_worker), (a.kill_agents_at, self.kill_agents)]
        steps.append((a.restart_db_at, self.restart_db))
        return sorted((at, do) for at, do in steps if at is not None)

    def note(self, what: str, **detail: Any) -> None:
        self.events.append({"at": round(time.monotonic() - self.t0, 2), "what": what, **detail})

    def run(self) -> None:
        for at, do in self.plan():
            time.sleep(max(0.0, self.t0 + at - time.monotonic()))
            try:
                do()
            except Exception as exc:  # written down: the report says the fault did not happen
                self.note("fault failed", error=f"{type(exc).__name__}: {exc}")

    def kill_worker(self) -> None:
        workers = hub_workers(self.hub.pid)
        if not workers:
            raise RuntimeError("no hub worker to kill (--workers 1?)")
        os.kill(workers[0], signal.SIGKILL)
        self.note("hub worker SIGKILLed", pid=workers[0])
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            now = hub_workers(self.hub.pid)
            if len(now) == self.args.workers and workers[0] not in now:
                self.note("hub worker replaced", pid=sorted(set(now) - set(workers)))
                return
            time.sleep(0.2)

    def kill_agents(self) -> None:
        victim = self.agents[0]
        cmd, log, env = LAUNCHED[victim.pid]
        victim.kill()
        victim.wait()
        self.note("agent process SIGKILLed", pid=victim.pid)
        time.sleep(self.args.agents_away)
        if "--out" in cmd:  # a light pool's record of what the hub accepted: a new file
            i = cmd.index("--out") + 1
            cmd = [*cmd[:i], cmd[i].replace(".json", "-again.json"), *cmd[i + 1 :]]
        self.agents[0] = spawn(cmd, log.with_name(log.stem + "-again.log"), **env)
        self.note("agent process started again", pid=self.agents[0].pid)

    def restart_db(self) -> None:
        if self.pg is None:
            raise RuntimeError("--restart-db-at needs --private-pg (never the shared server)")
        self.pg.stop("fast")
        self.note("PostgreSQL stopped")
        time.sleep(self.args.db_down)
        self.pg.start()
        self.note("PostgreSQL started")


def hub_workers(pid: int) -> list[int]:
    """The hub supervisor's worker processes (multiprocessing spawns, not its tracker)."""
    out = []
    for p in with_descendants(pid):
        if p == pid:
            continue
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(p)
    return sorted(out)


# -- phases ----------------------------------------------------------------------------------
def baseline(url: str, token: str, repeat: int) -> tuple[Record, float]:
    """Each route asked alone (one request at a time), and one count study submit → result."""

    async def go() -> tuple[Record, float]:
        rec = Record()
        one = Researcher(0, url, token, rec, think=0.0, seed=0)
        try:
            await one.sign_in()
            t0 = time.monotonic()
            resp = await one.call(
                "POST",
                "/api/studies",
                "POST /api/studies",
                json={"spec": {"analysis": "count", "by": ["country"], "title": "baseline"}},
            )
            assert resp is not None and resp.status_code == 201, resp
            seen = Studied(resp.json()["id"], "count", t0, token)
            one.mine.append(seen.study_id)
            while seen.status not in ("done", "failed"):
                await one.check(seen, wait=10)
            alone = time.monotonic() - t0
            for _ in range(repeat):
                for path in ("/studies", "/network", "/resources", "/feasibility"):
                    await one.call("GET", path, f"GET {path} (page)", bearer=False)
                await one.call(
                    "GET", f"/studies/{seen.study_id}", "GET /studies/{id} (page)", bearer=False
                )
                for path in ("/api/studies", "/api/nodes", "/api/catalogues"):
                    await one.call("GET", path, f"GET {path}")
                await one.check(seen, wait=0)
                resp = await one.call(
                    "POST",
                    "/api/studies",
                    "POST /api/studies",
                    json={"spec": {"analysis": "count", "by": ["sex"], "title": "baseline"}},
                )
                if resp is not None and resp.status_code == 201:
                    rec.studies[resp.json()["id"]] = Studied(
                        resp.json()["id"], "count", time.monotonic(), token
                    )
            rec.studies[seen.study_id] = seen
            return rec, alone
        finally:
            await one.close()

    return asyncio.run(go())


def load(args: argparse.Namespace, url: str, tokens: list[str]) -> tuple[Record, float]:
    """The researchers for `--duration` seconds; then the drain. Returns their record and
    the seconds the drain took."""

    async def go() -> tuple[Record, float]:
        rec = await run_researchers(
            url, tokens, args.duration, args.think, args.submit, study_timeout=args.study_timeout
        )
        t0 = time.monotonic()
        await drain(url, rec, args.drain)
        return rec, time.monotonic() - t0

    return asyncio.run(go())


def warm_up(url: str, token: str, nodes: int) -> float:
    """Until every node's catalogue is in (each agent publishes it at start) and one count
    study has run: each node's first answer pays for its imports and its view."""
    import httpx

    t0 = time.monotonic()
    auth = {"Authorization": f"Bearer {token}"}

    def catalogues_in() -> bool:
        got = httpx.get(f"{url}/api/catalogues", headers=auth, timeout=30).json()
        return len(got.get("catalogues", got) if isinstance(got, dict) else got) >= nodes

    wait_until(catalogues_in, 300, "every node's catalogue")
    spec = {"analysis": "count", "by": ["country"], "title": "warm-up"}
    sid = httpx.post(f"{url}/api/studies", headers=auth, json={"spec": spec}, timeout=30)
    study_id = sid.json()["id"]
    wait_until(
        lambda: (
            httpx.get(
                f"{url}/api/studies/{study_id}", headers=auth, params={"wait": 10}, timeout=30
            ).json()["status"]
            in ("done", "failed")
        ),
        300,
        "the warm-up study",
    )
    return time.monotonic() - t0


def final_statuses(db: str, ids: list[str]) -> dict[str, str]:
    """Each study's status as the hub's database holds it after the drain."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    try:
        with engine.connect() as c:
            rows = c.execute(text("SELECT id, status FROM studies")).all()
    finally:
        engine.dispose()
    held = {i: st for i, st in rows}
    return {i: held.get(i, "missing") for i in ids}


# -- checks ----------------------------------------------------------------------------------
def database_checks(db: str) -> dict[str, Any]:
    """What the hub's database says: studies by status, failed ones without a reason, and
    node answers recorded more than once for one round."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    try:
        with engine.connect() as c:
            rows = c.execute(text("SELECT status, count(*) FROM studies GROUP BY 1")).all()
            by_status = {status: n for status, n in rows}
            no_reason = c.scalar(
                text("SELECT count(*) FROM studies WHERE status = 'failed' AND error IS NULL")
            )
            twice = c.scalar(
                text(
                    "SELECT count(*) FROM (SELECT t.round_id, t.node_id FROM answers a "
                    "JOIN tasks t ON t.id = a.task_id GROUP BY t.round_id, t.node_id "
                    "HAVING count(*) > 1) d"
                )
            )
            answers = c.scalar(text("SELECT count(*) FROM answers"))
            answer_rows = c.execute(
                text("SELECT status, min(reason), count(*) FROM answers GROUP BY status")
            ).all()
            late = c.scalar(text("SELECT count(*) FROM answers WHERE late"))
            tasks = c.scalar(text("SELECT count(*) FROM tasks"))
            open_tasks = c.execute(
                text(
                    "SELECT t.id, n.name, t.status, t.delivered_at, r.study_id, r.round_no, "
                    "r.created_at, r.deadline, r.closed_at FROM tasks t "
                    "JOIN rounds r ON r.id = t.round_id JOIN nodes n ON n.id = t.node_id "
                    "JOIN studies s ON s.id = r.study_id "
                    "WHERE s.status NOT IN ('done', 'failed') AND t.status IN "
                    "('pending', 'delivered') ORDER BY r.created_at LIMIT 50"
                )
            ).all()
    finally:
        engine.dispose()
    return {
        "studies_by_status": by_status,
        "failed_without_reason": no_reason,
        "answers_recorded_twice": twice,
        "answers": answers,
        "answers_by_status": {st: {"n": n, "a_reason": why} for st, why, n in answer_rows},
        "late_answers": late,
        "tasks": tasks,
        "unanswered_tasks_of_unfinished_studies": [
            dict(zip(UNANSWERED, map(str, row), strict=True)) for row in open_tasks
        ],
    }


UNANSWERED = ("task", "node", "status", "delivered_at", "study", "round", "opened", "deadline")
UNANSWERED += ("closed",)


def agent_posts(mode: str, work: Path) -> dict[str, Any]:
    """How often the hub said `accepted` to one node's answer to one task (should be once)."""
    accepted: Counter[tuple[str, str]] = Counter()
    statuses: Counter[str] = Counter()
    events: list[str] = []
    seen: set[tuple[str, str]] = set()
    outbox: set[tuple[str, str]] = set()
    if mode == "real":
        for log in work.glob("node-*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if "posted" in line and " for task " in line:
                    tid, _, status = line.split(" for task ", 1)[1].partition(": ")
                    statuses[status.split()[0]] += 1
                    if status.startswith("accepted"):
                        accepted[(log.stem, tid)] += 1
    else:
        for out in work.glob("posted-*.json"):
            body = json.loads(out.read_text())
            events += body["events"]
            for p in body["posted"]:
                statuses[p["hub"]] += 1
                if p["hub"] == "accepted":
                    accepted[(p["node"], p["task_id"])] += 1
            for name, held in body["agents"].items():
                seen.update((name, t) for t in held["seen"])
                outbox.update((name, t) for t in held["outbox"])
    return {
        "posted_by_hub_status": dict(statuses),
        "accepted_twice": sum(1 for v in accepted.values() if v > 1),
        "agent_events": events[:50],
        "seen": seen,
        "outbox": outbox,
    }


def hub_log_problems(work: Path) -> list[str]:
    text = (work / "hub.log").read_text(errors="replace")
    return [ln for ln in text.splitlines() if "Traceback" in ln or "ERROR" in ln][:20]


# -- report ----------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def route_table(rec: Record, base: Record) -> dict[str, dict[str, Any]]:
    by: dict[str, list] = defaultdict(list)
    for s in rec.samples:
        by[s.route].append(s)
    base_by: dict[str, list[float]] = defaultdict(list)
    for s in base.samples:
        if s.error is None:
            base_by[s.route].append(s.seconds)
    out = {}
    for route, samples in sorted(by.items()):
        ok = [s.seconds for s in samples if s.error is None] or [float("nan")]
        out[route] = {
            "n": len(samples),
            "errors": sum(1 for s in samples if s.error is not None),
            "5xx": sum(1 for s in samples if s.status >= 500),
            "no_answer": sum(1 for s in samples if s.status == 0),
            "p50": pct(ok, 50),
            "p95": pct(ok, 95),
            "p99": pct(ok, 99),
            "baseline_p50": statistics.median(base_by[route]) if base_by[route] else None,
            "first_errors": [s.error for s in samples if s.error is not None][:3],
        }
    return out


def studies_summary(rec: Record, base: Record) -> dict[str, Any]:
    all_ = list(rec.studies.values())
    done = [s for s in all_ if s.status == "done"]
    failed = [s for s in all_ if s.status == "failed"]
    lost = [s for s in all_ if s.status not in ("done", "failed")]
    took = [s.finished_at - s.submitted_at for s in done if s.finished_at is not None]
    return {
        "submitted": len(all_),
        "refused_at_submission": rec.refused_submissions,
        "done": len(done),
        "failed": len(failed),
        "failed_reasons": sorted({str(s.error)[:160] for s in failed})[:5],
        "lost": len(lost),
        "lost_ids": [s.study_id for s in lost][:20],
        "by_analysis": dict(Counter(s.analysis for s in all_)),
        "submit_to_result_p50": pct(took, 50) if took else None,
        "submit_to_result_p95": pct(took, 95) if took else None,
        "submit_to_result_max": max(took) if took else None,
        "done_with_no_node_answering": dict(
            Counter(s.analysis for s in done if s.nodes_answered == 0)
        ),
        "baseline_nodes_answered": [s.nodes_answered for s in base.studies.values()][:1],
    }


def memory_summary(sampler: MemorySampler, load_from: float) -> dict[str, Any]:
    during = [m for t, m, _ in sampler.samples if t >= load_from]
    before = [m for t, m, _ in sampler.samples if t < load_from]
    step = max(1, len(sampler.samples) // 120)  # about 120 points of the series in the JSON
    cpu_in = [c for t, c in sampler.cpu if t >= load_from]
    cpu_before = [c for t, c in sampler.cpu if t < load_from]
    return {
        "hub_cpu_s_during_load": cpu_in[-1] - cpu_before[-1] if cpu_in and cpu_before else None,
        "before_load_mib": before[-1] if before else None,
        "p50_mib": statistics.median(during) if during else None,
        "max_mib": max(during) if during else None,
        "end_mib": during[-1] if during else None,
        "processes": max((k for _, _, k in sampler.samples), default=0),
        "series": [(round(t, 1), round(m, 1)) for t, m, _ in sampler.samples[::step]],
    }


def ms(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x * 1000:.0f}"


def print_report(r: dict[str, Any]) -> None:
    a = r["args"]
    print(
        f"hub under load: {a['agents']} node agents ({a['agent_mode']}), {a['researchers']} "
        f"researchers, {a['duration']:g} s, {a['workers']} worker(s), PostgreSQL"
    )
    print()
    print("| route | requests | errors | p50 ms | p95 ms | p99 ms | baseline p50 ms (alone) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for route, x in r["routes"].items():
        print(
            f"| `{route}` | {x['n']} | {x['errors']} | {ms(x['p50'])} | {ms(x['p95'])} "
            f"| {ms(x['p99'])} | {ms(x['baseline_p50'])} |"
        )
    t = r["totals"]
    print()
    print(
        f"requests {t['requests']}, throughput {t['rps']:.1f} req/s, errors {t['errors']} "
        f"({t['error_rate'] * 100:.2f}%), 5xx {t['5xx']}, no answer {t['no_answer']}"
    )
    s = r["studies"]
    print(
        f"studies: submitted {s['submitted']} ({s['submitted'] / a['duration'] * 60:.1f}/min), "
        f"at the hub after the drain ({t['drain_s']:.0f} s): {r['hub_final_status']}; "
        f"submit → result p50 {ms(s['submit_to_result_p50'])} ms, p95 "
        f"{ms(s['submit_to_result_p95'])} ms (one count study alone: {ms(r['count_alone'])} ms)"
    )
    print(
        f"CPU during load + drain ({t['load_and_drain_s']:.0f} s): hub "
        f"{r['memory']['hub_cpu_s_during_load']:.0f} s, node agents {t['agents_cpu_s']:.0f} s, "
        f"researchers (this process) {t['researchers_cpu_s']:.0f} s; "
        f"machine load average {t['machine_load_avg_1min'][0]:.1f} → "
        f"{t['machine_load_avg_1min'][1]:.1f} (2 cores, shared)"
    )
    m = r["memory"]
    print(
        f"hub RSS ({m['processes']} process(es)): {m['before_load_mib']:.0f} MiB before load, "
        f"median {m['p50_mib']:.0f}, max {m['max_mib']:.0f}, end {m['end_mib']:.0f} MiB"
    )
    d, p = r["database"], r["agents_posted"]
    print(
        f"database: studies {d['studies_by_status']}, answers {d['answers']} for {d['tasks']} "
        f"tasks, late {d['late_answers']}, recorded twice {d['answers_recorded_twice']}; "
        f"agents: hub said {p['posted_by_hub_status']}, accepted twice {p['accepted_twice']}"
    )
    for t in d["unanswered_tasks_of_unfinished_studies"][:10]:
        print("unanswered task of an unfinished study:", t)
    if r["faults"]:
        print(f"faults (s into the load), {r['503']} requests answered 503:")
        for e in r["faults"]:
            print("  ", json.dumps(e))
    if r["hub_log_problems"]:
        print("hub log:", *r["hub_log_problems"], sep="\n  ")


# -- main ------------------------------------------------------------------------------------
def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=50, help="Node agents (one store each).")
    ap.add_argument("--researchers", type=int, default=200)
    ap.add_argument("--duration", type=float, default=180, help="Seconds of load (1800: soak).")
    ap.add_argument("--workers", type=int, default=1, help="Hub workers (passed when > 1).")
    ap.add_argument("--agent-mode", choices=["light", "real"], default="light")
    ap.add_argument("--agent-procs", type=int, default=2, help="Processes for light agents.")
    ap.add_argument("--patients", type=int, default=200, help="Patients per node store.")
    ap.add_argument("--think", type=float, default=10.0, help="Mean think time (s).")
    ap.add_argument(
        "--submit", type=float, default=0.1, help="Share of actions that submit a study."
    )
    ap.add_argument("--poll", type=float, default=20.0, help="Agents' long-poll seconds.")
    ap.add_argument("--drain", type=float, default=120.0, help="Most seconds to finish studies.")
    ap.add_argument(
        "--study-timeout",
        type=float,
        help="Seconds per round in the researchers' studies (default: the hub's, 300): with "
        "a drain longer than this, a study still running after the drain is lost, not slow.",
    )
    ap.add_argument("--baseline-repeat", type=int, default=5)
    ap.add_argument("--pg", default=ADMIN_PG, help="Admin URL of the PostgreSQL server.")
    ap.add_argument(
        "--private-pg",
        action="store_true",
        help="Run on a PostgreSQL cluster of the run's own (initdb, pg_ctl; needed by "
        "--restart-db-at), not --pg.",
    )
    ap.add_argument("--kill-worker-at", type=float, help="Seconds into the load: SIGKILL a worker.")
    ap.add_argument(
        "--kill-agents-at", type=float, help="Seconds into the load: SIGKILL an agent process."
    )
    ap.add_argument("--agents-away", type=float, default=3.0, help="Then restart it after this.")
    ap.add_argument(
        "--restart-db-at", type=float, help="Seconds into the load: stop PostgreSQL (private)."
    )
    ap.add_argument("--db-down", type=float, default=4.0, help="Then start it after this.")
    ap.add_argument("--json", type=Path, help="Write every figure here.")
    ap.add_argument("--keep", action="store_true", help="Keep the work folder (logs).")
    return ap.parse_args()


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main() -> None:
    args = parse()
    # a test's timeout (or Ctrl-C's cousin) stops the run through its `finally`s: the hub and
    # the agents stopped, the database dropped, nothing left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    clock = time.monotonic()
    given = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report: dict[str, Any] = {"args": given}
    pg = None
    try:
        if args.private_pg:
            from tests.federation.pgcluster import PrivatePostgres

            pg = PrivatePostgres()
            pg.start()
            args.pg = pg.admin_url
        with fresh_database(args.pg) as db:
            report.update(run(args, db, work, pg))
        report["seconds_in_all"] = time.monotonic() - clock
        print_report(report)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, default=str))
    finally:
        if pg is not None:
            pg.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}")


def run(args: argparse.Namespace, db: str, work: Path, pg: Any = None) -> dict[str, Any]:
    t0 = time.monotonic()
    stores = build_stores(work, args.agents, args.patients)
    key = work / "hub.audit.key"
    node_tokens, user_tokens = register(db, key, stores, args.researchers + 1)
    setup = {"stores_and_registration_s": time.monotonic() - t0}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hub = start_hub(db, key, port, args.workers, work)
    agents: list[subprocess.Popen] = []
    sampler = MemorySampler(hub.pid)
    try:
        from ccdp.federation.client import wait_for_hub

        # a 2-worker hub on the loaded 2-core machine once took over 60 s to answer
        setup["hub_start_s"] = wait_for_hub(url, 180)
        sampler.start()
        agents = start_agents(
            args.agent_mode, url, stores, node_tokens, args.agent_procs, args.poll, work
        )
        admin_like = user_tokens[-1]
        setup["agents_connected_s"] = wait_until(
            lambda: nodes_seen(url, admin_like, args.agents), 300, "every node agent"
        )
        setup["warm_up_s"] = warm_up(url, admin_like, args.agents)
        base, alone = baseline(url, admin_like, args.baseline_repeat)
        for seen in base.studies.values():  # the baseline's own studies end before the load
            if seen.status not in ("done", "failed"):
                asyncio.run(_finish(url, seen))
        load_from = time.monotonic() - sampler.t0
        agent_cpu0 = cpu_seconds([p for a in agents for p in with_descendants(a.pid)])
        own_cpu0 = time.process_time()
        load0 = os.getloadavg()[0]
        t_load = time.monotonic()
        faults = Faults(args, hub, agents, pg)
        if faults.plan():
            faults.start()
        rec, drain_s = load(args, url, user_tokens[: args.researchers])
        load_s = time.monotonic() - t_load
        agent_cpu = cpu_seconds([p for a in agents for p in with_descendants(a.pid)]) - agent_cpu0
        own_cpu = time.process_time() - own_cpu0
        load1 = os.getloadavg()[0]
        held = final_statuses(db, list(rec.studies))
    finally:
        stop(agents)
        sampler.halt.set()
        stop([hub])
    samples = [s for s in rec.samples if s.at <= t_load + args.duration + 60]
    checks = database_checks(db)
    posts = agent_posts(args.agent_mode, work)
    seen, outbox = posts.pop("seen"), posts.pop("outbox")
    for t in checks["unanswered_tasks_of_unfinished_studies"]:  # slow, or lost on the way?
        key = (t["node"], t["task"])
        t["agent_saw_it"] = key in seen if args.agent_mode == "light" else "unknown"
        t["in_agent_outbox"] = key in outbox if args.agent_mode == "light" else "unknown"
    errors = sum(1 for s in samples if s.error is not None)
    return {
        "setup": setup,
        "routes": route_table(rec, base),
        "totals": {
            "requests": len(rec.samples),
            "rps": len(samples) / args.duration,
            "errors": errors,
            "error_rate": errors / max(1, len(samples)),
            "5xx": sum(1 for s in rec.samples + base.samples if s.status >= 500),
            "no_answer": sum(1 for s in rec.samples if s.status == 0),
            "load_and_drain_s": load_s,
            "drain_s": drain_s,
            "actions_cut_short": rec.cut_short,
            "agents_cpu_s": agent_cpu,
            "researchers_cpu_s": own_cpu,
            "machine_load_avg_1min": [load0, load1],
        },
        "hub_final_status": dict(Counter(held.values())),
        "hub_lost_ids": [i for i, st in held.items() if st not in ("done", "failed")][:20],
        "studies": studies_summary(rec, base),
        "baseline_studies_lost": sum(
            1 for s in base.studies.values() if s.status not in ("done", "failed")
        ),
        "count_alone": alone,
        "memory": memory_summary(sampler, load_from),
        "database": checks,
        "agents_posted": posts,
        "hub_log_problems": hub_log_problems(work),
        "faults": faults.events,
        "503": sum(1 for s in rec.samples if s.status == 503),
    }


async def _finish(url: str, seen: Studied) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(30):
            resp = await http.get(
                f"/api/studies/{seen.study_id}",
                headers={"Authorization": f"Bearer {seen.token}"},
                params={"wait": 5},
            )
            note(seen, resp.json())
            if seen.status in ("done", "failed"):
                return


if __name__ == "__main__":
    main()
