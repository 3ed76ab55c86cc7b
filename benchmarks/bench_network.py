"""Network round trips: a real hub and N `ccdp node run` processes on loopback.

1. A count study answered by `--nodes` node agents: submit → result (median, min, max) over
   `--repeat` studies after a warm-up one. Baseline in the same run: the same study in one
   process (`run_study` over InProcessTransport on the same stores, nodes kept warm), i.e. what
   the network adds.
2. `--cox-fits` Cox models over `--cox-nodes` agents, each a normal fit run to convergence (one
   that does not converge is refused, so rounds are never forced): the time of each round, from
   the hub's record of when it opened the round to when it opened the next (the last: to the
   study's end), so a round is the nodes' work, both HTTP legs and the hub's combine. Round 0
   reads each node's data; the later rounds are the iteration cost, reported per round. Same
   per-round timing in one process (InProcessTransport, timed at each `ask`).
3. The CPU seconds each count study and each Cox fit cost the hub (every worker), the node
   agents and, on PostgreSQL, the database server (from /proc), and this process in the
   one-process runs: on a loaded machine steadier than the wall times.

    python benchmarks/bench_network.py --nodes 20 --repeat 15 --cox-nodes 10 --cox-fits 5
    python benchmarks/bench_network.py --db postgresql://postgres@127.0.0.1:5432/postgres \
        --workers 2   # the hub as N worker processes sharing PostgreSQL

The studies name no project, so the hub runs with `--open` and every node agent with `--open`
(answer tasks without a project); each node's policy is written out (`counts`, `exact_release:
any`), not left to the defaults.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.procstat import cpu_seconds, database_pids, ticks, with_descendants  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402
from tests.storekit import build_store, random_registry  # noqa: E402

from ccdp.federation.client import HubClient  # noqa: E402
from ccdp.federation.hub.app import Hub  # noqa: E402
from ccdp.federation.hub.db import open_database  # noqa: E402
from ccdp.federation.hub.models import RoundRow, StudyRow  # noqa: E402
from ccdp.federation.inprocess import InProcessTransport  # noqa: E402
from ccdp.federation.study import run_study  # noqa: E402
from ccdp.wire.protocol import Answer, Task  # noqa: E402

COUNT = {"analysis": "count", "by": ["iccc_group"]}


def cox_spec(nodes: list[str]) -> dict[str, Any]:
    """A Cox model that converges in a few rounds (one that does not is refused, so rounds are
    timed one by one, never forced by an unreachable tolerance)."""
    return {
        "analysis": "cox",
        "outcome": "os",
        "covariates": ["sex", "age_at_diagnosis"],
        "nodes": nodes,
        "min_nodes": len(nodes),
    }


def write_policy(store: Path, counts: str) -> None:
    """The policy the bench measures, its release keys set explicitly."""
    text = f"min_cell: 5\ncounts: {counts}\nexact_release: any\nrequire_project: false\n"
    store.with_name(f"{store.stem}.policy.yaml").write_text(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


class TimedTransport:
    """InProcessTransport that notes when each round is asked: the in-process round times,
    measured as the hub's are (from one round's start to the next's)."""

    def __init__(self, inner: InProcessTransport) -> None:
        self.inner = inner
        self.starts: list[float] = []

    def nodes(self) -> list[str]:
        return self.inner.nodes()

    def ask(self, task: Task, nodes: list[str]) -> dict[str, Answer]:
        self.starts.append(time.perf_counter())
        return self.inner.ask(task, nodes)


def round_times(starts: list[float], end: float) -> list[float]:
    """Each round's seconds: to the next round's start, the last to `end`."""
    bounds = [*starts, end]
    return [b - a for a, b in itertools.pairwise(bounds)]


def hub_round_times(sessions: sessionmaker[Session], study_id: str) -> list[float]:
    """A finished study's round times as the hub recorded them (rounds' opening times)."""
    with sessions() as s:
        opened = list(
            s.scalars(
                select(RoundRow.created_at)
                .where(RoundRow.study_id == study_id)
                .order_by(RoundRow.round_no)
            )
        )
        study = s.get(StudyRow, study_id)
        assert study is not None and study.finished_at is not None
        end: datetime = study.finished_at
    return round_times([t.timestamp() for t in opened], end.timestamp())


class Cpu:
    """CPU seconds of the hub (all its workers), the node agents, the database server
    (PostgreSQL: its processes alive at both marks; SQLite: inside the hub) and this process,
    between marks."""

    def __init__(self, hub: list[int], nodes: list[int], database: bool) -> None:
        self.hub, self.nodes, self.database = hub, nodes, database
        self.spent: dict[str, list[float]] = {}

    def _database(self) -> dict[int, int]:
        if not self.database:
            return {}
        used = {pid: ticks(pid) for pid in database_pids()}
        return {pid: t for pid, t in used.items() if t is not None}

    @contextmanager
    def measure(self, what: str, per: int):
        """Adds (hub, agents, database, here) CPU seconds per unit of `per` spent in the
        block."""
        start = (cpu_seconds(self.hub), cpu_seconds(self.nodes), time.process_time())
        db_start = self._database()
        yield
        db_end = self._database()
        end = (cpu_seconds(self.hub), cpu_seconds(self.nodes), time.process_time())
        db = sum(db_end[p] - t for p, t in db_start.items() if p in db_end)
        spent = [(b - a) / per for a, b in zip(start, end, strict=True)]
        spent.insert(2, db / os.sysconf("SC_CLK_TCK") / per)
        self.spent[what] = spent


@contextmanager
def network(
    work: Path,
    stores: dict[str, Path],
    db: str,
    tokens: dict[str, str],
    user: str,
    workers: int = 1,
):
    """A hub (`workers` processes) and one `ccdp node run --open` process per store, torn down
    at the end: yields the researcher's client and the CPU meter of the processes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "ccdp"]
    hub_cmd = [*cli, "hub", "serve", "--db", db, "--port", str(port), "--open"]
    hub_cmd += ["--workers", str(workers)] if workers > 1 else []
    procs = [_spawn(hub_cmd, work / "hub.log")]
    try:
        client = HubClient(url, user)
        _wait(lambda: _up(client), 60)
        for n, store in stores.items():
            node_cmd = [*cli, "node", "run", "--store", str(store), "--hub", url]
            node_cmd += ["--token", tokens[n], "--poll", "20", "--open"]
            procs.append(_spawn(node_cmd, work / f"node-{n}.log"))
        _wait(lambda: all(x["last_seen"] for x in client.nodes()), 180)
        # every worker up before its CPU is metered (the supervisor spawns them at start)
        _wait(lambda: workers == 1 or len(with_descendants(procs[0].pid)) > workers, 60)
        hub = with_descendants(procs[0].pid)
        yield client, Cpu(hub, [p.pid for p in procs[1:]], not db.startswith("sqlite"))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )


def time_counts(
    client: HubClient, cpu: Cpu, stores: list[Path], repeat: int
) -> tuple[list[float], list[float]]:
    """Submit → result of `repeat` count studies over the network, and in one process."""
    client.wait(client.submit(COUNT), 120)  # warm-up: every node imports the analysis code
    net = []
    with cpu.measure("count", repeat):
        for _ in range(repeat):
            t0 = time.perf_counter()
            study = client.wait(client.submit(COUNT), 120)
            net.append(time.perf_counter() - t0)
            assert study["status"] == "done", study
            assert all(s["status"] == "answered" for s in study["result"]["nodes"].values())
    transport = InProcessTransport(stores)
    run_study(COUNT, transport)  # the same warm-up
    local = []
    with cpu.measure("count, one process", repeat):
        for _ in range(repeat):
            t0 = time.perf_counter()
            run_study(COUNT, transport)
            local.append(time.perf_counter() - t0)
    return net, local


def time_cox(
    client: HubClient,
    cpu: Cpu,
    sessions: sessionmaker[Session],
    stores: list[Path],
    nodes: list[str],
    fits: int,
) -> tuple[list[list[float]], list[list[float]]]:
    """Each fit's round times over the network and in one process; the fits agree."""
    spec = cox_spec(nodes)
    net, local = [], []
    study: dict[str, Any] = {}
    with cpu.measure("cox fit", fits):
        for _ in range(fits):
            study_id = client.submit(spec)
            study = client.wait(study_id, 300)
            assert study["status"] == "done", study
            net.append(hub_round_times(sessions, study_id))
    transport = TimedTransport(InProcessTransport(stores))
    with cpu.measure("cox fit, one process", fits):
        for _ in range(fits):
            transport.starts = []
            result = run_study(spec, transport)
            local.append(round_times(transport.starts, time.perf_counter()))
    net_coefs = [c["coef"] for c in study["result"]["result"]["coefficients"]]
    loc_coefs = [c.coef for c in result.result.coefficients]  # type: ignore[union-attr]
    assert max(abs(a - b) for a, b in zip(net_coefs, loc_coefs, strict=True)) < 1e-12
    assert [len(r) for r in net] == [len(r) for r in local]
    return net, local


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--cox-nodes", type=int, default=10)
    ap.add_argument("--cox-fits", type=int, default=5, help="Converging Cox fits, timed by round.")
    ap.add_argument("--patients", type=int, default=400, help="Patients per node store.")
    ap.add_argument("--counts", choices=["exact", "perturbed"], default="exact")
    ap.add_argument(
        "--db",
        default="sqlite",
        help="The hub's database: sqlite (a file, the default) or a PostgreSQL admin URL "
        "(postgresql://postgres@127.0.0.1:5432/postgres), on which a fresh database is made "
        "for the run and dropped after it.",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Hub worker processes (`ccdp hub serve --workers N`; above 1, PostgreSQL only).",
    )
    args = ap.parse_args()
    if args.workers > 1 and args.db == "sqlite":
        ap.error("--workers above 1 needs --db postgresql://...: SQLite is one process")
    with hub_database(args.db) as db:
        run(args, db)


@contextmanager
def hub_database(choice: str) -> Iterator[str]:
    """The hub's database URL for this run: a SQLite file in the work folder (made by `run`),
    or a fresh PostgreSQL database, dropped afterwards."""
    if choice == "sqlite":
        yield ""
        return
    from benchmarks.load.bench_load import fresh_database

    with fresh_database(choice) as url:
        yield url


def run(args: argparse.Namespace, db_url: str) -> None:
    """Build the stores and the hub's members, then time the counts and the Cox fits."""

    work = Path(tempfile.mkdtemp(prefix="bench-network-"))
    names = [f"N{i:02d}" for i in range(args.nodes)]
    stores = {
        n: build_store(work / f"{n}.duckdb", random_registry(100 + i, args.patients, "FR", n))
        for i, n in enumerate(names)
    }
    for store in stores.values():
        write_policy(store, args.counts)
    db = db_url or f"sqlite:///{work / 'hub.db'}"
    sessions = open_database(db)
    hub = Hub(sessions)
    tokens = {n: hub.add_node(n, "FR") for n in names}
    user = hub.add_user("bench", "researcher")
    cox_nodes = names[: args.cox_nodes]
    load = os.getloadavg()[0]
    with network(work, stores, db, tokens, user, args.workers) as (client, cpu):
        count_net, count_local = time_counts(client, cpu, list(stores.values()), args.repeat)
        cox_net, cox_local = time_cox(
            client, cpu, sessions, [stores[n] for n in cox_nodes], cox_nodes, args.cox_fits
        )
    report(args, count_net, count_local, cox_net, cox_local)
    report_cpu(cpu)
    print(f"load average (1 min) at the start {load:.1f}, at the end {os.getloadavg()[0]:.1f}")


def report(
    args: argparse.Namespace,
    count_net: list[float],
    count_local: list[float],
    cox_net: list[list[float]],
    cox_local: list[list[float]],
) -> None:
    def spread(xs: list[float], unit: float = 1.0, fmt: str = ".3f") -> str:
        med, lo, hi = statistics.median(xs) * unit, min(xs) * unit, max(xs) * unit
        return f"{med:{fmt}} (min {lo:{fmt}}, max {hi:{fmt}})"

    later_net = [t for fit in cox_net for t in fit[1:]]
    later_local = [t for fit in cox_local for t in fit[1:]]
    rounds = sum(len(f) for f in cox_net)
    hub = f"{args.workers} hub workers, " if args.workers > 1 else ""
    print(f"| what | {hub}{args.nodes} count / {args.cox_nodes} cox node agents | one process |")
    print("|---|---|---|")
    print(
        f"| count, submit → result, s (median of {args.repeat}) "
        f"| {spread(count_net)} | {spread(count_local)} |"
    )
    print(
        f"| cox round 1 (reads the data), ms (median of {args.cox_fits} fits) "
        f"| {spread([f[0] for f in cox_net], 1000, '.0f')} "
        f"| {spread([f[0] for f in cox_local], 1000, '.0f')} |"
    )
    if later_net:
        print(
            f"| cox later rounds, ms per round (median of {len(later_net)}; "
            f"{args.cox_fits} fits, {rounds} rounds in all) "
            f"| {spread(later_net, 1000, '.0f')} | {spread(later_local, 1000, '.0f')} |"
        )
    med = statistics.median(count_net)
    cox = statistics.median(later_net) if later_net else float("nan")
    print(
        f"targets: count median < 0.3 s: {'met' if med < 0.3 else 'NOT met'}; "
        f"cox round <= 50 ms: {'met' if cox <= 0.05 else 'NOT met'}"
    )


def report_cpu(cpu: Cpu) -> None:
    """CPU seconds per count study and per Cox fit: the hub's (every worker), the node agents'
    (all of them), the PostgreSQL server's, and this process's (the researcher's client; in the
    one-process runs, everything)."""
    print("| CPU ms | hub | node agents | PostgreSQL server | this process |")
    print("|---|---|---|---|---|")
    for what, spent in cpu.spent.items():
        hub, nodes, db, here = (f"{x * 1000:.0f}" for x in spent)
        db = db if cpu.database else "(in the hub)"
        print(f"| {what} | {hub} | {nodes} | {db} | {here} |")


def _up(client: HubClient) -> bool:
    try:
        client.nodes()
        return True
    except Exception:
        return False


def _wait(cond: Callable[[], bool], timeout: float) -> None:
    """Set-up only (processes starting), never on a timed path."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout} s")


if __name__ == "__main__":
    main()
