"""A hub worker's start: how long `ccdp hub serve` takes from its launch to its first answer,
so that a killed or restarted worker is back (and a deploy rolls) as soon as it can be.

For each `--src` tree (on PYTHONPATH; default ./src), `--runs` interleaved runs after one
warm-up (which also writes the .pyc files): `python -m ccdp hub serve` on a fresh SQLite file
and a free loopback port, timed until `GET /api/health` first answers 200 (polled every 10 ms),
then stopped. Beside it, in the same rounds: the import of the worker's modules alone
(`import ccdp.federation.hub.server, ccdp.web.dashboard`, a fresh interpreter) and the bare
interpreter (`python -c pass`), the floor no layout can go under. Median and minimum.

    python benchmarks/bench_hub_start.py --runs 9
    python benchmarks/bench_hub_start.py --src /tmp/before/src --src src --runs 9
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]

from bench_startup import check_tree, environment, run_once  # noqa: E402

IMPORTS = "import ccdp.federation.hub.server, ccdp.web.dashboard"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_until_healthy(src: Path, work: Path) -> float:
    """Seconds from launching a hub worker to its first 200 on /api/health."""
    port = free_port()
    db = work / f"hub-{port}.db"
    argv = [sys.executable, "-m", "ccdp", "hub", "serve", "--db", f"sqlite:///{db}"]
    argv += ["--port", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=environment(src), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                    return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None:
                    raise SystemExit(f"the hub of {src} exited with {proc.returncode}") from None
                if time.perf_counter() - t0 > 120:
                    raise SystemExit(f"the hub of {src} did not answer in 120 s") from None
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, action="append", help="a source tree (repeatable)")
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    trees = args.src or [ROOT / "src"]
    for src in trees:
        check_tree(sys.executable, src)
    rows: dict[str, list[float]] = {}
    bare = [sys.executable, "-c", "pass"]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for first in (True,) + (False,) * args.runs:
            if not first:
                rows.setdefault("python -c pass", []).append(run_once(bare, environment(None)))
            for src in trees:
                imported = run_once([sys.executable, "-c", IMPORTS], environment(src))
                started = serve_until_healthy(src, work)
                if not first:
                    rows.setdefault(f"{src}: import the worker's modules", []).append(imported)
                    rows.setdefault(f"{src}: hub serve -> first /api/health", []).append(started)
    print(f"seconds, median (min) of {args.runs} interleaved runs after a warm-up")
    for name, secs in rows.items():
        print(f"  {name:60s} {statistics.median(secs):6.3f} ({min(secs):.3f})")


if __name__ == "__main__":
    main()
