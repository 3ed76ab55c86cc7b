"""Federated Cox on N rows split over K nodes in one process, against lifelines on the pooled data.

    python benchmarks/bench_cox.py --rows 1000000 --nodes 10 --repeat 3

Every message goes through its JSON wire form, as between real nodes: requests as a protocol
Task, summaries as a protocol Answer (pydantic's JSON encoder and parser, as the in-process
transport and the hub use), then checked by `Summary.from_dict`. The federated fits are
timed for `strata: none` (the same model as lifelines' pooled fit; the coefficients are compared)
and for the default `strata: node`: median of `--repeat` runs of each (the forms in turn), after
a small warm-up fit (imports, wire schemas), as lifelines is imported before its fit is timed.
The rows carry text patient ids, as a node's view rows do (each node hashes them into ledger
keys once per study, inside the timed fit).
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ccdp.analyses import registry
from ccdp.analyses.base import AnalysisResult
from ccdp.analyses.node_data import FrameData
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.policy import NodePolicy
from ccdp.federation.coordinator import drive
from ccdp.wire.protocol import Answer, Task
from ccdp.wire.summary import Summary

console = Console(width=120)


def simulate(rows: int, seed: int) -> pd.DataFrame:
    """Three covariates (age, log WBC, sex), integer-day times with ties, ~30% censored."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(0, 18, rows)
    lwbc = rng.normal(3.0, 1.0, rows)
    male = rng.integers(0, 2, rows).astype(float)
    lp = 0.03 * age + 0.4 * lwbc + 0.25 * male
    event_t = rng.exponential(3000 * np.exp(-lp))
    cens_t = rng.uniform(100, 5000, rows)
    return pd.DataFrame(
        {
            # text ids, as a node's view rows carry (the ledger keys hash them)
            "patient_id": np.char.add("P", np.arange(rows).astype(str)).astype(object),
            "os_time": np.ceil(np.minimum(event_t, cens_t)),
            "os_event": (event_t <= cens_t).astype(int),
            "age_at_diagnosis": age,
            "wbc_at_diagnosis": lwbc,
            "relapsed": male,  # a 0/1 view variable standing in for male sex
        }
    )


def through_wire(request: dict[str, Any]) -> dict[str, Any]:
    """A request as a node receives it: inside a protocol Task, encoded and parsed."""
    task = Task(task_id="t", study_id="s", round=0, analysis="cox", request=request)
    return Task.model_validate_json(task.model_dump_json()).request


def answer_wire(node: str, summary: Summary) -> Summary:
    """A node's summary as the coordinator receives it: inside a protocol Answer, encoded,
    parsed and checked (finite numbers, consistent columns)."""
    sent = Answer(task_id="t", node=node, status="answered", summary=summary.to_dict())
    got = Answer.model_validate_json(sent.model_dump_json())
    assert got.summary is not None
    return Summary.from_dict(got.summary)


def federated(
    params: dict[str, Any], frames: list[pd.DataFrame], wire: bool = True
) -> tuple[AnalysisResult, int]:
    """Drive the analysis over in-process nodes, every message through JSON unless `wire` is
    False (to separate the cost of the wire form from the computation); (result, rounds)."""
    analysis = registry.get("cox")
    p = analysis.params_model.model_validate(params)
    # exact event times (min_cell 1): the comparison with lifelines is on the same data;
    # benchmarks/bench_event_times.py measures the grouping that nodes apply by default. The
    # policy is spelled out (not the defaults, which change with the feasibility tier).
    exact = DisclosureContext(NodePolicy(min_cell=1, counts="exact", exact_release="any"))
    nodes = [FrameData(f, node=f"n{i}", context=exact) for i, f in enumerate(frames)]
    caches: dict[str, dict] = {n.node: {} for n in nodes}
    rounds = 0

    def ask(round_no: int, request: dict[str, Any]) -> dict[str, Summary]:
        nonlocal rounds
        rounds += 1
        if not wire:
            return {n.node: analysis.local(n, p, request, caches[n.node]) for n in nodes}
        req = through_wire(request)
        return {
            n.node: answer_wire(n.node, analysis.local(n, p, req, caches[n.node])) for n in nodes
        }

    return drive(analysis, p, ask), rounds


def warm_up() -> None:
    """Import what a fit uses and build the wire models' JSON schemas once, before any timing,
    as lifelines is imported before its fit is timed: the figures are of fits, not imports."""
    registry.get("cox")
    frame = simulate(200, 0)
    federated({"covariates": ["age_at_diagnosis"], "strata": "none"}, [frame, frame.copy()])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-lifelines", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="Runs of each fit (median reported).")
    args = ap.parse_args()
    df = simulate(args.rows, args.seed)
    bounds = np.linspace(0, len(df), args.nodes + 1).astype(int)
    frames = [df.iloc[a:b] for a, b in pairwise(bounds)]
    cov = ["age_at_diagnosis", "wbc_at_diagnosis", "relapsed"]
    table = Table(title=f"Cox, {args.rows:,} rows, 3 covariates, {args.nodes} nodes (Efron)")
    for col in ("fit", "wall s", "CPU s", "rounds", "× faster (wall)", "× faster (CPU)"):
        table.add_column(col)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    results = {}
    warm_up()
    runs = {
        "ccdp cox strata: none": ("none", True),
        "ccdp cox strata: none, no JSON": ("none", False),
        "ccdp cox strata: node": ("node", True),
        "ccdp cox strata: none, month grid": ("none", True),
    }
    walls: dict[str, list[float]] = {label: [] for label in runs}
    cpus: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(args.repeat):  # the forms in turn, so each sees the same load
        for label, (strata, wire) in runs.items():
            with console.status(label):
                t0, c0 = time.perf_counter(), time.process_time()
                params = {"covariates": cov, "strata": strata}
                if "month" in label:
                    params["time_unit"] = "month"
                res, rounds = federated(params, frames, wire)
                walls[label].append(time.perf_counter() - t0)
                cpus[label].append(time.process_time() - c0)
            results[label] = (res, rounds)
    for label in runs:
        timings[label], cpu[label] = float(np.median(walls[label])), float(np.median(cpus[label]))
        console.print(
            f"{label}: wall {', '.join(f'{t:.2f}' for t in walls[label])} s; "
            f"CPU {', '.join(f'{t:.2f}' for t in cpus[label])} s"
        )
    base = None
    if not args.skip_lifelines:
        from lifelines import CoxPHFitter

        pooled = df.drop(columns="patient_id")  # the covariates and outcome only

        with console.status("lifelines CoxPHFitter on the pooled data"):
            t0, c0 = time.perf_counter(), time.process_time()
            cph = CoxPHFitter().fit(pooled, "os_time", "os_event")
            base = time.perf_counter() - t0
            base_cpu = time.process_time() - c0
        table.add_row(
            "lifelines CoxPHFitter, pooled", f"{base:.1f}", f"{base_cpu:.1f}", "—", "1.0", "1.0"
        )
    for label, (_, rounds) in results.items():
        table.add_row(
            label,
            f"{timings[label]:.1f}",
            f"{cpu[label]:.1f}",
            str(rounds),
            f"{base / timings[label]:.1f}" if base else "—",
            f"{base_cpu / cpu[label]:.1f}" if base else "—",
        )
    console.print(table)
    if base is not None:
        none_fit = results["ccdp cox strata: none"][0]
        ours = np.array([c.coef for c in none_fit.coefficients])
        diff = np.max(np.abs(ours - cph.params_.loc[cov].to_numpy()))
        console.print(f"max |coef(ccdp strata none) − coef(lifelines)| = {diff:.2e}")
        console.print(f"loglik ccdp {none_fit.loglik:.6f}, lifelines {cph.log_likelihood_:.6f}")


if __name__ == "__main__":
    main()
