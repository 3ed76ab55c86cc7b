"""Federated logistic and Poisson regression on N rows over K nodes in one process, against
statsmodels GLM on the pooled data in the same run.

    python benchmarks/bench_glm.py --rows 1000000 --nodes 10

Every message goes through its JSON wire form, as between real nodes.
"""

from __future__ import annotations

import argparse
import json
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
from ccdp.wire.summary import Summary

console = Console(width=120)


def simulate(rows: int, seed: int) -> pd.DataFrame:
    """Age, log WBC, sex and a four-level risk group; a binary outcome and events over time."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(0, 18, rows)
    lwbc = rng.normal(3.0, 1.0, rows)
    male = rng.integers(0, 2, rows)
    risk = rng.choice(np.array(["high", "intermediate", "low", "very high"]), rows)
    lp = -2.0 + 0.03 * age + 0.3 * lwbc + 0.2 * male + 0.5 * (risk == "high")
    years = rng.uniform(0.5, 10.0, rows)
    return pd.DataFrame(
        {
            # text ids, as a node's view rows carry (the ledger keys hash them)
            "patient_id": np.char.add("P", np.arange(rows).astype(str)).astype(object),
            "efs_event": (rng.random(rows) < 1 / (1 + np.exp(-lp))).astype(int),
            "os_event": rng.poisson(np.exp(lp - 1.0) * years).clip(0, 1),
            "os_time": years * 365.25,
            "age_at_diagnosis": age,
            "wbc_at_diagnosis": lwbc,
            "relapsed": male,  # a 0/1 view variable standing in for male sex
            "risk_group": risk,
        }
    )


def federated(name: str, params: dict[str, Any], frames: list[pd.DataFrame]) -> AnalysisResult:
    analysis = registry.get(name)
    p = analysis.params_model.model_validate(params)
    policy = NodePolicy(counts="exact", exact_release="any")  # explicit, not the defaults
    nodes = [
        FrameData(f, node=f"n{i}", context=DisclosureContext(policy)) for i, f in enumerate(frames)
    ]
    caches: dict[str, dict] = {n.node: {} for n in nodes}

    def ask(round_no: int, request: dict[str, Any]) -> dict[str, Summary]:
        req = json.loads(json.dumps(request))
        return {
            n.node: Summary.from_dict(
                json.loads(json.dumps(analysis.local(n, p, req, caches[n.node]).to_dict()))
            )
            for n in nodes
        }

    return drive(analysis, p, ask)


def main() -> None:
    import statsmodels.api as sm

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    df = simulate(args.rows, args.seed)
    bounds = np.linspace(0, len(df), args.nodes + 1).astype(int)
    frames = [df.iloc[a:b] for a, b in pairwise(bounds)]
    cov = ["age_at_diagnosis", "wbc_at_diagnosis", "relapsed", "risk_group"]
    # warm-up, as statsmodels is imported before its fits are timed: imports and the wire
    # models' schemas, so the figures are of fits
    federated("logistic", {"outcome": "efs_event", "covariates": cov}, [df.iloc[:2000]])
    x = pd.get_dummies(df[cov], columns=["risk_group"], drop_first=True, dtype=float)
    x = sm.add_constant(x)
    table = Table(title=f"GLM, {args.rows:,} rows, {x.shape[1]} coefficients, {args.nodes} nodes")
    for col in (
        "model",
        "ccdp wall s",
        "ccdp CPU s",
        "statsmodels wall s",
        "statsmodels CPU s",
        "max |Δcoef|",
    ):
        table.add_column(col)
    cases = {
        "logistic": (
            {"outcome": "efs_event", "covariates": cov},
            "efs_event",
            sm.families.Binomial(),
            None,
        ),
        "poisson": (
            {"outcome": "os", "covariates": cov},
            "os_event",
            sm.families.Poisson(),
            np.log(df["os_time"]),
        ),
    }
    for name, (params, y, family, offset) in cases.items():
        with console.status(f"ccdp {name}"):
            t0, c0 = time.perf_counter(), time.process_time()
            res = federated(name, params, frames)
            ours = (time.perf_counter() - t0, time.process_time() - c0)
        with console.status(f"statsmodels {name}"):
            t0, c0 = time.perf_counter(), time.process_time()
            ref = sm.GLM(df[y], x, family=family, offset=offset).fit()
            theirs = (time.perf_counter() - t0, time.process_time() - c0)
        diff = np.max(np.abs(np.array([c.coef for c in res.coefficients]) - ref.params.to_numpy()))
        table.add_row(
            name,
            f"{ours[0]:.2f}",
            f"{ours[1]:.2f}",
            f"{theirs[0]:.2f}",
            f"{theirs[1]:.2f}",
            f"{diff:.1e}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
