"""Grouped event-time tables: their cost at one node of 1M rows, and how little they move estimates.

    python benchmarks/bench_event_times.py --rows 1000000 --repeat 3

Speed: Kaplan–Meier (the node's table) and Cox with `strata: none` (the whole fit, every message
through its JSON wire form as in bench_cox) at one node, with the node's default grouping
(min_cell 5: every released time stands for >= 5 subjects) against min_cell 1 (no grouping, the
exact-time tables of before), median of `--repeat` runs in the same process; also
`group_times` alone. Estimates: a simulated multi-node registry (six nodes of 60 to 1,200
children, daily times, up to 8 years of follow-up), KM 1/3/5-year OS and Cox HRs, grouped
(min_cell 5 and 10) against ungrouped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cox import answer_wire, through_wire

from ccdp.analyses import registry
from ccdp.analyses.base import AnalysisResult
from ccdp.analyses.km import KMResult, event_table_part
from ccdp.analyses.node_data import FrameData
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.event_times import group_times
from ccdp.disclosure.policy import NodePolicy
from ccdp.federation.coordinator import drive
from ccdp.wire.summary import Summary

console = Console(width=120)
NODE_SIZES = (1200, 900, 700, 400, 150, 60)


def simulate(rows: int, seed: int) -> pd.DataFrame:
    """Integer-day times (many ties), up to 8 years of follow-up; age, risk group, sex (view
    variables: age_at_diagnosis, risk_group, sex)."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(0, 18, rows)
    risk = rng.choice(np.array(["low", "standard", "high"]), rows, p=[0.5, 0.3, 0.2])
    male = rng.integers(0, 2, rows).astype(float)
    lp = 0.02 * age + 0.25 * male + np.select([risk == "standard", risk == "high"], [0.5, 1.1], 0)
    event_t = rng.exponential(4000 * np.exp(-lp))
    cens_t = rng.uniform(180, 8 * 365.25, rows)
    return pd.DataFrame(
        {
            "os_time": np.ceil(np.minimum(event_t, cens_t)),
            "os_event": (event_t <= cens_t).astype(int),
            "age_at_diagnosis": age,
            "risk_group": risk,
            "sex": np.where(male == 1, "male", "female"),
        }
    )


COVARIATES = ["age_at_diagnosis", "risk_group", "sex"]


def node(frame: pd.DataFrame, name: str, min_cell: int) -> FrameData:
    """An in-memory node under an explicit policy (not the defaults, which change)."""
    policy = NodePolicy(min_cell=min_cell, counts="exact", exact_release="any")
    return FrameData(frame, node=name, context=DisclosureContext(policy))


def federated(
    name: str, params: dict[str, Any], frames: list[pd.DataFrame], min_cell: int
) -> AnalysisResult:
    """Drive an analysis over in-process nodes, every message through JSON."""
    analysis = registry.get(name)
    p = analysis.params_model.model_validate(params)
    nodes = [node(f, f"n{i}", min_cell) for i, f in enumerate(frames)]
    caches: dict[str, dict] = {n.node: {} for n in nodes}

    def ask(round_no: int, request: dict[str, Any]) -> dict[str, Summary]:
        req = through_wire(request)
        return {
            n.node: answer_wire(n.node, analysis.local(n, p, req, caches[n.node])) for n in nodes
        }

    return drive(analysis, p, ask)


def median_time(fn: Any, repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def speed(rows: int, repeat: int, seed: int) -> None:
    df = simulate(rows, seed)
    table = Table(
        title=f"One node, {rows:,} rows: grouped (min_cell 5) vs exact times (min_cell 1)"
    )
    for col in ("what", "exact s", "grouped s", "ratio", "table rows exact", "grouped"):
        table.add_column(col, justify="left" if col == "what" else "right")
    labels = np.full(rows, "all")
    keys = FrameData(df).record_keys(df.index)
    t_group, _ = median_time(
        lambda: group_times(labels, df["os_time"].to_numpy(), keys, 5, 1.0), repeat
    )
    table.add_row("group_times alone (1 group)", "—", f"{t_group:.3f}", "—", "—", "—")
    cases = {
        "KM node table, by risk group": lambda m: event_table_part(
            node(df, "n0", m), "os", ["risk_group"], "day"
        ),
        "Cox strata none (whole fit, JSON)": lambda m: federated(
            "cox", {"covariates": COVARIATES, "strata": "none"}, [df], m
        ),
    }
    for label, run in cases.items():
        t_exact, exact = median_time(lambda run=run: run(1), repeat)
        t_grouped, grouped = median_time(lambda run=run: run(5), repeat)
        km = label.startswith("KM")
        sizes = (f"{len(exact):,}", f"{len(grouped):,}") if km else ("—", "—")
        table.add_row(
            label,
            f"{t_exact:.3f}",
            f"{t_grouped:.3f}",
            f"{t_grouped / t_exact:.2f}",
            *sizes,
        )
    console.print(table)


def estimates(seed: int) -> None:
    df = simulate(sum(NODE_SIZES), seed)
    bounds = np.cumsum((0, *NODE_SIZES))
    frames = [df.iloc[a:b].reset_index(drop=True) for a, b in pairwise(bounds)]
    table = Table(title=f"Estimates, {len(df):,} children over nodes of {NODE_SIZES}")
    table.add_column("estimate", justify="left")
    for m in (1, 5, 10):
        table.add_column("exact" if m == 1 else f"min_cell {m}", justify="right")
    rows: dict[str, list[str]] = {}
    for m in (1, 5, 10):
        km = federated("km", {"by": ["risk_group"]}, frames, m)
        assert isinstance(km, KMResult)
        for g in km.groups:
            for land in g.survival_at:
                key = f"KM OS {g.group}, {land.years:g} y"
                rows.setdefault(key, []).append(
                    "—" if land.survival is None else f"{land.survival:.4f}"
                )
            rows.setdefault(f"KM rows sent, {g.group}", []).append(str(len(g.table)))
        cox = federated(
            "cox",
            {
                "covariates": COVARIATES,
                "strata": "none",
                "reference": {"risk_group": "low", "sex": "female"},
            },
            frames,
            m,
        )
        for c in cox.coefficients:  # type: ignore[attr-defined]
            rows.setdefault(escape(f"Cox HR {c.term}"), []).append(f"{c.hr:.4f}")
    for key, values in rows.items():
        table.add_row(key, *values)
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    speed(args.rows, args.repeat, args.seed)
    estimates(args.seed)


if __name__ == "__main__":
    main()
