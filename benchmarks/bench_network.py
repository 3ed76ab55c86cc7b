"""Network round trips: a real hub and N `ccdp node run` processes on loopback.

1. A count study answered by `--nodes` node agents: median time from submit to result over
   `--repeat` studies. Baseline in the same run: the same study in one process (`run_study` over
   InProcessTransport on the same stores), i.e. what the network adds.
2. Cox models over `--cox-nodes` nodes, fitted one after another until `--cox-rounds` rounds
   in all (a fit converges in a few rounds; one that does not is refused, so rounds cannot be
   forced), submit to result; same in-process baseline.

    python benchmarks/bench_network.py --nodes 20 --repeat 15 --cox-nodes 10 --cox-rounds 20

The studies name no project, so the hub runs with `--open` and every node agent with `--open`
(answer tasks without a project); each node's policy is written out (`counts`, `exact_release:
any`), not left to the defaults.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.storekit import build_store, random_registry  # noqa: E402

from ccdp.federation.client import HubClient  # noqa: E402
from ccdp.federation.hub.app import Hub  # noqa: E402
from ccdp.federation.hub.db import open_database  # noqa: E402
from ccdp.federation.inprocess import InProcessTransport  # noqa: E402
from ccdp.federation.study import run_study  # noqa: E402

COUNT = {"analysis": "count", "by": ["iccc_group"]}


def cox_spec(nodes: list[str]) -> dict:
    """A Cox model that converges (a fit that does not is refused, so rounds cannot be forced
    by an unreachable tolerance): `--cox-rounds` are reached by running it several times."""
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--cox-nodes", type=int, default=10)
    ap.add_argument("--cox-rounds", type=int, default=20)
    ap.add_argument("--patients", type=int, default=400, help="Patients per node store.")
    ap.add_argument("--counts", choices=["exact", "perturbed"], default="exact")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-network-"))
    names = [f"N{i:02d}" for i in range(args.nodes)]
    stores = {
        n: build_store(work / f"{n}.duckdb", random_registry(100 + i, args.patients, "FR", n))
        for i, n in enumerate(names)
    }
    for store in stores.values():
        write_policy(store, args.counts)
    db = f"sqlite:///{work / 'hub.db'}"
    hub = Hub(open_database(db))
    tokens = {n: hub.add_node(n, "FR") for n in names}
    user = hub.add_user("bench", "researcher")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "ccdp"]
    procs = [
        subprocess.Popen(
            [*cli, "hub", "serve", "--db", db, "--port", str(port), "--open"],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=(work / "hub.log").open("wb"),
            start_new_session=True,
        )
    ]
    try:
        client = HubClient(url, user)
        _wait(lambda: _up(client), 60)
        for n in names:
            procs.append(
                subprocess.Popen(
                    [
                        *cli,
                        "node",
                        "run",
                        "--store",
                        str(stores[n]),
                        "--hub",
                        url,
                        "--token",
                        tokens[n],
                        "--poll",
                        "20",
                        "--open",
                    ],
                    env=env(),
                    stdout=subprocess.DEVNULL,
                    stderr=(work / f"node-{n}.log").open("wb"),
                    start_new_session=True,
                )
            )
        _wait(lambda: all(x["last_seen"] for x in client.nodes()), 180)
        time.sleep(1.0)

        # warm-up: the first study makes every node import the analysis code
        client.wait(client.submit(COUNT), 120)
        count_times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            study = client.wait(client.submit(COUNT), 120)
            count_times.append(time.perf_counter() - t0)
            assert study["status"] == "done", study
            assert all(s["status"] == "answered" for s in study["result"]["nodes"].values())
        transport = InProcessTransport(list(stores.values()))
        local_times = []
        for _ in range(max(3, args.repeat // 3)):
            t0 = time.perf_counter()
            run_study(COUNT, transport)
            local_times.append(time.perf_counter() - t0)

        cox_nodes = names[: args.cox_nodes]
        spec = cox_spec(cox_nodes)
        cox_net, rounds, studies = 0.0, 0, 0
        while rounds < args.cox_rounds:  # converging fits, one after another
            t0 = time.perf_counter()
            study = client.wait(client.submit(spec), 300)
            cox_net += time.perf_counter() - t0
            assert study["status"] == "done", study
            rounds += study["result"]["rounds"]
            studies += 1
        t0 = time.perf_counter()
        for _ in range(studies):
            local = run_study(spec, InProcessTransport([stores[n] for n in cox_nodes]))
        cox_local = time.perf_counter() - t0
        assert local.rounds * studies == rounds
        net_coefs = [c["coef"] for c in study["result"]["result"]["coefficients"]]
        loc_coefs = [c.coef for c in local.result.coefficients]
        assert max(abs(a - b) for a, b in zip(net_coefs, loc_coefs, strict=True)) < 1e-12
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()

    med = statistics.median(count_times)
    print(
        f"| count, {args.nodes} node agents, submit → result (median of {args.repeat}) "
        f"| {med:.3f} s | min {min(count_times):.3f}, max {max(count_times):.3f} |"
    )
    print(
        f"| baseline: same count in one process (median of {len(local_times)}) "
        f"| {statistics.median(local_times):.3f} s | |"
    )
    print(
        f"| cox, {studies} fits one after another ({rounds} rounds in all) over "
        f"{args.cox_nodes} node agents, submit → result "
        f"| {cox_net:.3f} s | {cox_net / rounds * 1000:.0f} ms per round |"
    )
    print(f"| baseline: same {studies} cox fits in one process | {cox_local:.3f} s | |")
    print(
        f"target: count median < 1 s: {'met' if med < 1 else 'NOT met'}; "
        f"cox < 10 s: {'met' if cox_net < 10 else 'NOT met'}"
    )


def _up(client: HubClient) -> bool:
    try:
        client.nodes()
        return True
    except Exception:
        return False


def _wait(cond, timeout: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout} s")


if __name__ == "__main__":
    main()
