"""The hub's own work per round, in one process: what a round costs the hub's CPU, apart from
HTTP, the node agents and the scheduling of 21 processes on two cores.

A hub database (SQLite file, or a fresh PostgreSQL database) with `--nodes` nodes and one
running study; each round opens a task per node, then for each node: its look for tasks (which
delivers the task), its answer (a count summary), its next look (which finds nothing), and
the runner's check of the round; then the round is closed. CPU time (`time.process_time`) per
round and per answer, median of `--repeat` batches; on PostgreSQL also the database server's
CPU per answer (its processes, from /proc: the server shares the hub's cores, and every
statement the hub saves is work it does not do). Run it with `PYTHONPATH=OTHER/src` to time
another tree (e.g. a `git archive` of an older commit) in the same conditions.

    python benchmarks/bench_hub_rounds.py --nodes 20 --rounds 30 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # benchmarks.load; the hub's code from PYTHONPATH or the install

from benchmarks.procstat import cpu_seconds, database_pids  # noqa: E402

import ccdp  # noqa: E402
from ccdp.federation.hub.app import Hub  # noqa: E402
from ccdp.federation.hub.db import open_database  # noqa: E402
from ccdp.wire.protocol import Answer, Task  # noqa: E402


@contextmanager
def database(choice: str) -> Iterator[str]:
    if choice == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            yield f"sqlite:///{Path(d) / 'hub.db'}"
        return
    from benchmarks.load.bench_load import fresh_database

    with fresh_database(choice) as url:
        yield url


def one_batch(
    hub: Hub, study: str, nodes: dict[str, int], first: int, rounds: int
) -> tuple[float, float]:
    """CPU seconds of `rounds` rounds: this process's, and the PostgreSQL server's (0 on
    SQLite: its work is in this process)."""
    postgres = hub.sessions.kw["bind"].dialect.name == "postgresql"
    server_pids = database_pids() if postgres else []
    t0, db0 = time.process_time(), cpu_seconds(server_pids)
    for r in range(first, first + rounds):
        task = Task(task_id="x", study_id=study, round=r, analysis="rounds")
        round_id = hub.open_round(study, r, task, list(nodes), 3600)
        for name, node_id in nodes.items():
            (got,) = hub.pending_tasks(node_id)
            answer = Answer(task_id=got.task_id, node=name, status="refused", reason="bench")
            hub.record_answer(node_id, answer)
            assert hub.pending_tasks(node_id) == []
            hub.round_state(round_id)
        hub.close_round(round_id)
    return time.process_time() - t0, cpu_seconds(server_pids) - db0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=30, help="rounds per batch")
    ap.add_argument("--repeat", type=int, default=5, help="batches (the first is a warm-up)")
    ap.add_argument("--db", default="sqlite", help="sqlite, or a PostgreSQL admin URL")
    args = ap.parse_args()
    with database(args.db) as url:
        hub = Hub(open_database(url), open_studies=True)
        nodes = {}
        for i in range(args.nodes):
            name = f"N{i:02d}"
            node = hub.authenticate(hub.add_node(name, "FR"))
            assert node is not None
            nodes[name] = node.id
        owner = hub.authenticate(hub.add_user("bench", "researcher"))
        study = hub.create_study(
            {"analysis": "count"},
            analysis="count",
            title="bench",
            nodes=list(nodes),
            min_nodes=1,
            timeout=3600,
            owner=owner,
        )
        hub.set_study_status(study, "running")
        batches = [
            one_batch(hub, study, nodes, b * args.rounds, args.rounds)
            for b in range(args.repeat + 1)
        ][1:]
        hub.sessions.kw["bind"].dispose()
    spent = [hub_cpu for hub_cpu, _ in batches]
    per_round = statistics.median(spent) / args.rounds
    db_per_answer = statistics.median(db for _, db in batches) / args.rounds / args.nodes
    print(f"hub code from {Path(ccdp.__file__).parent}; database {url.split(':')[0]}")
    print(
        f"{args.nodes} nodes: hub CPU per round {1000 * per_round:.1f} ms, per answer "
        f"(look, answer: refused, look, round check) {1000 * per_round / args.nodes:.2f} ms "
        f"(median of {args.repeat} batches of {args.rounds} rounds; "
        f"all: {', '.join(f'{1000 * x / args.rounds:.1f}' for x in spent)} ms per round)"
    )
    if url.startswith("postgresql"):
        print(
            f"database server CPU per answer {1000 * db_per_answer:.2f} ms (median of the batches)"
        )


if __name__ == "__main__":
    main()
