"""The acceptance audit of a project's registered studies on one node store.

    python benchmarks/bench_audit.py --tumours 300000 --studies 50

Builds one DuckDB node store of `--tumours` random tumours (one per patient, the rows of
bench_federated: 12 ICCC groups, both sexes, diagnoses 2005-2019, 20% deaths, 25% relapses),
writes its policy out in full (`counts: exact`, `exact_release: registered`, `min_cell: 5`,
`consent: statutory`: the random rows carry no consent codes) and a project of `--studies`
registered studies, a mix of `count`, `crosstab` and `km` over varied declared cohorts
(diagnosis-year ranges, ICCC-group subsets, one sex, relapsed or not). Then times
`ccdp.federation.node.acceptance.acceptance_audit` (what `ccdp node projects show|accept` run):
each registered study's first round on the store, its record sets, and the linear audit of
all of them together (disclosure/registered_audit.py). The ledger is empty (a fresh node); the
audit's own `seconds` is its search alone. Prints whether the union search completed or hit its
bound (MAX_DENSE sets or small atoms, MAX_UNIONS, SEARCH_SECONDS). `--kinds count,crosstab`
builds the project of those analyses only.

Baseline in the same run: the studies' rows read from the store (`LocalNode.read_view` of each
study's columns and cohort), i.e. the I/O every audit of these studies must do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_federated import GROUPS, make_rows, write_store

from ccdp.analyses import registry
from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure import registered_audit
from ccdp.federation.node.acceptance import acceptance_audit, describe
from ccdp.federation.node.local import LocalNode
from ccdp.governance.projects import ProjectSpec
from ccdp.governance.registered import split_study

POLICY = (
    "min_cell: 5\ncounts: exact\nexact_release: registered\nconsent: statutory\n"
    "differencing_threshold: 5\n"
)
BY_COUNT = [
    ["iccc_group"],
    ["iccc_group", "sex"],
    ["diagnosis_period"],
    ["age_group", "sex"],
    ["diagnosis_year"],
    ["iccc_group", "age_group"],
    ["vital_status"],
    ["followup_band", "sex"],
]
BY_CROSSTAB = [
    ["iccc_group", "sex"],
    ["age_group", "vital_status"],
    ["iccc_group", "relapsed"],
    ["diagnosis_period", "sex", "vital_status"],
    ["sex", "followup_band"],
]
BY_KM: list[list[str]] = [[], ["sex"], ["age_group"], ["relapsed"], ["diagnosis_period"]]


def cohort(rng: np.random.Generator) -> dict[str, Any]:
    """A declared cohort: a year range, often a subset of ICCC groups, sometimes one sex or
    relapsed only."""
    start = int(rng.integers(2005, 2016))
    out: dict[str, Any] = {"diagnosis_year": {"from": start, "to": int(rng.integers(start, 2020))}}
    if rng.random() < 0.7:
        k = int(rng.integers(1, 6))
        out["iccc_group"] = sorted(rng.choice(GROUPS, k, replace=False).tolist())
    if rng.random() < 0.3:
        out["sex"] = str(rng.choice(["male", "female"]))
    if rng.random() < 0.15:
        out["relapsed"] = [1]
    return out


MIX = {"count": 0.4, "crosstab": 0.3, "km": 0.3}


def studies(n: int, seed: int, kinds: tuple[str, ...] = tuple(MIX)) -> list[dict[str, Any]]:
    """`n` registered studies of `kinds` (by default 40% count, 30% crosstab, 30% km), each on
    its own cohort."""
    rng = np.random.default_rng(seed)
    weights = np.array([MIX[k] for k in kinds])
    out = []
    for i in range(n):
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        pool = {"count": BY_COUNT, "crosstab": BY_CROSSTAB, "km": BY_KM}[kind]
        by = pool[int(rng.integers(len(pool)))]
        study: dict[str, Any] = {"title": f"study {i + 1}", "analysis": kind, "by": by}
        study["cohort"] = cohort(rng)
        out.append(study)
    return out


def project(specs: list[dict[str, Any]]) -> ProjectSpec:
    return ProjectSpec.model_validate(
        {
            "title": "acceptance audit benchmark",
            "summary": "Registered counts, crosstabs and survival curves on varied cohorts.",
            "institution": "bench",
            "data_use": {"permission": "DS", "disease": "MONDO:0004992", "commercial": False},
            "nodes": ["bench"],
            "analyses": ["count", "crosstab", "km"],
            "expires": (date.today() + timedelta(days=365)).isoformat(),
            "studies": specs,
        }
    )


def read_rows(node: LocalNode, specs: list[dict[str, Any]]) -> int:
    """Baseline: each study's view rows read from the store, nothing computed."""
    rows = 0
    for raw in specs:
        name, params, raw_cohort = split_study(raw)
        analysis = registry.get(name)
        p = analysis.params_model.model_validate(params)
        rows += len(node.read_view(analysis.columns(p), CohortSpec.load(raw_cohort)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tumours", type=int, default=300_000)
    ap.add_argument("--studies", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", default="count,crosstab,km", help="Analyses of the studies.")
    ap.add_argument("--out", type=Path, default=None, help="Folder for the store (default: tmp)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="ccdp-bench-audit-"))
    out.mkdir(parents=True, exist_ok=True)
    store = out / "bench.duckdb"
    if not store.exists():
        t0 = time.perf_counter()
        rows = make_rows(args.tumours, "FR", "b", np.random.default_rng(args.seed))
        write_store(store, [rows])
        print(f"store of {args.tumours:,} tumours built in {time.perf_counter() - t0:.1f} s")
    store.with_name(f"{store.stem}.policy.yaml").write_text(POLICY)
    specs = studies(args.studies, args.seed, tuple(args.kinds.split(",")))
    spec = project(specs)
    kinds = {k: sum(s["analysis"] == k for s in specs) for k in ("count", "crosstab", "km")}
    node = LocalNode(store)
    read_rows(node, specs[:1])  # warm-up: imports, the DuckDB file's first open

    t0, c0 = time.perf_counter(), time.process_time()
    n_rows = read_rows(node, specs)
    base_wall, base_cpu = time.perf_counter() - t0, time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    result, notes = acceptance_audit(node, spec)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    print(
        f"project: {args.studies} registered studies ({kinds['count']} count, "
        f"{kinds['crosstab']} crosstab, {kinds['km']} km), {args.tumours:,} tumours, "
        f"min_cell 5"
    )
    print(
        f"baseline: reading the studies' view rows ({n_rows:,} rows in all): "
        f"{base_wall:.2f} s wall, {base_cpu:.2f} s CPU"
    )
    print(f"acceptance audit, whole: {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(
        f"  of which the audit of the sets (atoms, linear algebra, search): "
        f"{result.seconds:.2f} s wall; {result.sets:,} sets, "
        f"{result.atoms:,} atoms, {result.small_atoms:,} small atoms"
    )
    bound = f"MAX_DENSE {registered_audit.MAX_DENSE:,}, MAX_STEPS {registered_audit.MAX_STEPS:,}"
    state = "completed" if result.complete else f"hit its bound ({result.note})"
    print(f"  search: {state} [{bound}]; findings: {len(result.findings)}")
    for line in describe(result, notes):
        print(f"  | {line}")


if __name__ == "__main__":
    main()
