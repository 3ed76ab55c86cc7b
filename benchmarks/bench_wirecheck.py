"""The body gate's check of a request body (`federation/hub/wirecheck.parse`), per body, in one
process: what every answer a node posts costs the hub before any route sees it.

The bodies are real: node answers of a count, a Kaplan-Meier, a Cox and a Poisson study run
in one process (`run_study` over InProcessTransport) on `--patients`-patient random stores,
serialised as a node agent posts them; and the count study's spec as a researcher submits it.
Baseline in the same run: the full check alone (`wirecheck._parse_checked`: a Python call for
every number, the JSON path of every value), which `parse` ran on every body before its fast
path. CPU (`time.process_time`) per body, median of `--rounds` interleaved rounds of `--reads`.

    python benchmarks/bench_wirecheck.py --patients 400 --reads 300 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.storekit import build_store, random_registry  # noqa: E402

from ccdp.federation.hub import wirecheck  # noqa: E402
from ccdp.federation.inprocess import InProcessTransport  # noqa: E402
from ccdp.federation.study import run_study  # noqa: E402
from ccdp.wire.protocol import Answer, Task  # noqa: E402

STUDIES: dict[str, dict[str, Any]] = {
    "count": {"analysis": "count", "by": ["iccc_group"]},
    "km": {"analysis": "km", "outcome": "os", "by": ["sex"]},
    "cox": {"analysis": "cox", "outcome": "os", "covariates": ["sex", "age_at_diagnosis"]},
    "poisson": {"analysis": "poisson", "outcome": "os", "covariates": ["sex"]},
}


class Recording(InProcessTransport):
    """InProcessTransport that keeps the first answer of each study, as its agent posts it."""

    def __init__(self, stores: list[Path]) -> None:
        super().__init__(stores)
        self.bodies: dict[str, bytes] = {}

    def ask(self, task: Task, nodes: list[str]) -> dict[str, Answer]:
        answers = super().ask(task, nodes)
        first = next(iter(answers.values()))
        self.bodies.setdefault(task.analysis, first.model_dump_json().encode())
        return answers


def bodies(patients: int, work: Path) -> dict[str, bytes]:
    stores = [
        build_store(work / f"N{i}.duckdb", random_registry(100 + i, patients, "FR", f"N{i}"))
        for i in range(3)
    ]
    for store in stores:
        policy = "min_cell: 5\ncounts: exact\nexact_release: any\nrequire_project: false\n"
        store.with_name(f"{store.stem}.policy.yaml").write_text(policy)
    transport = Recording(stores)
    for spec in STUDIES.values():
        run_study(spec, transport)
    out = {f"{name} answer": transport.bodies[spec["analysis"]] for name, spec in STUDIES.items()}
    out["count spec"] = json.dumps(STUDIES["count"]).encode()
    return out


def per_body(fn: Callable[[Any], Any], arg: Any, reads: int) -> float:
    t = time.process_time()
    for _ in range(reads):
        fn(arg)
    return 1e3 * (time.process_time() - t) / reads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=400, help="patients per node store")
    ap.add_argument("--reads", type=int, default=300, help="checks per body, path and round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        found = bodies(args.patients, Path(d))
    print(f"CPU ms per body, median of {args.rounds} rounds of {args.reads}")
    print("| body | bytes | full check (baseline) | parse (fast path) | ratio |")
    print("|---|---|---|---|---|")
    for name, raw in found.items():
        assert wirecheck.parse(raw) == wirecheck._parse_checked(raw.decode())
        full, fast = [], []
        for _ in range(args.rounds):
            full.append(per_body(wirecheck._parse_checked, raw.decode(), args.reads))
            fast.append(per_body(wirecheck.parse, raw, args.reads))
        a, b = statistics.median(full), statistics.median(fast)
        print(f"| {name} | {len(raw):,} | {a:.4f} | {b:.4f} | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
