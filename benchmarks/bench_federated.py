"""Federated count/incidence over node stores vs the same query on one pooled store.

    python benchmarks/bench_federated.py --tumours 1000000 --nodes 10

Builds `--nodes` DuckDB node stores (model DDL, vectorised random rows) and one pooled store with
the same rows. Baseline in the same run: a plain GROUP BY on the pooled tumour table (no view, no
disclosure). Federated: `run_study` over the in-process transport, i.e. per node the analysis view
(joins, event windows, derived variables), the analysis, disclosure control (suppression audit),
JSON messages and the audit log; then the coordinator's combine. Also times the suppression audit
alone on a 3-way table (12 x 15 x 5 cells), and specimen discovery: `count` with `unit:
specimens` by specimen_type and iccc_group (about 1.5 available specimens per tumour, every cell
judged by its children), against a pooled GROUP BY over the specimen table in the same run.
`--counts perturbed` sets every node's policy to cell-key perturbation (docs/disclosure.md,
section 11): the same studies, every count perturbed instead of suppressed; totals are then
checked to within the pooled bound. A node then counts by one aggregate over its keyed view
(built on the first study, once per store), so the first count study is timed apart.

Every node's policy is written out in full for what the bench measures (`counts`,
`exact_release: any`, `differencing_threshold: 0`), never left to the defaults.

`--cox` also fits a Cox model (`strata: none`, age at diagnosis and WBC, Efron) through the real
node path (LocalNode: DuckDB view, disclosure gate, ledger, audit log, JSON both ways) over the
same stores, with `min_cell: 1` so that event times travel exact, against lifelines CoxPHFitter
on the pooled store's view rows in the same run (CPU time, `time.process_time`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from ccdp.disclosure.suppress import suppress
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import run_study
from ccdp.model import load_model
from ccdp.wire.summary import CountsPart

GROUPS = np.array(["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"])
AGES = ["0", "1-4", "5-9", "10-14", "15-19"]
SPECIMEN_TYPES = ["bone_marrow", "peripheral_blood", "tumour_tissue", "csf", "dna", "rna"]


def make_rows(n: int, country: str, prefix: str, rng: np.random.Generator) -> dict:
    """Vectorised random patients/tumours/relapses and a population table."""
    diag = pd.Timestamp("2005-01-01") + pd.to_timedelta(rng.integers(0, 15 * 365, n), "D")
    birth = diag - pd.to_timedelta(rng.integers(30, 15 * 365, n), "D")
    follow = rng.integers(10, 4000, n)
    dead = rng.random(n) < 0.2
    last = diag + pd.to_timedelta(follow, "D")
    pid = np.char.add(f"{prefix}P", np.arange(n).astype(str))
    tid = np.char.add(f"{prefix}T", np.arange(n).astype(str))
    patient = pd.DataFrame(
        {
            "patient_id": pid,
            "sex": rng.choice(["male", "female"], n),
            "birth_date": birth.date,
            "country": country,
            "vital_status": np.where(dead, "dead", "alive"),
            "last_contact_date": last.date,
            "death_date": np.where(dead, last.date, None),
        }
    )
    tumour = pd.DataFrame(
        {
            "tumour_id": tid,
            "patient_id": pid,
            "diagnosis_date": diag.date,
            "topography": "C42.1",
            "morphology": "9836",
            "behaviour": 3,
            "iccc_group": rng.choice(GROUPS, n),
            "wbc_at_diagnosis": rng.gamma(2, 20, n),
        }
    )
    rel = rng.random(n) < 0.25
    event = pd.DataFrame(
        {
            "event_id": np.char.add(f"{prefix}E", np.arange(rel.sum()).astype(str)),
            "tumour_id": tid[rel],
            "event_type": "relapse",
            "event_date": (diag[rel] + pd.to_timedelta(follow[rel] // 2, "D")).date,
        }
    )
    pop = pd.DataFrame(
        [
            (country, y, s, a, float(rng.integers(100_000, 900_000)))
            for y in range(2005, 2020)
            for s in ("male", "female")
            for a in AGES
        ],
        columns=["country", "year", "sex", "age_group", "population"],
    )
    per = rng.integers(0, 4, n)  # 0-3 specimens per tumour
    owner = np.repeat(np.arange(n), per)
    specimen = pd.DataFrame(
        {
            "specimen_id": np.char.add(f"{prefix}S", np.arange(owner.size).astype(str)),
            "tumour_id": tid[owner],
            "type": rng.choice(SPECIMEN_TYPES, owner.size),
            "available": rng.random(owner.size) < 0.85,
        }
    )
    return {
        "patient": patient,
        "tumour": tumour,
        "event": event,
        "specimen": specimen,
        "population": pop,
    }


def write_store(path: Path, parts: list[dict]) -> Path:
    con = duckdb.connect(str(path))
    for table in load_model().tables.values():
        con.execute(table.ddl())
    for name in parts[0]:
        frame = pd.concat([p[name] for p in parts], ignore_index=True)
        if name == "population":
            frame = frame.groupby(["country", "year", "sex", "age_group"], as_index=False).sum()
        cols = ", ".join(f'"{c}"' for c in frame.columns)
        con.register("f", frame)
        con.execute(f'INSERT INTO "{name}" ({cols}) SELECT {cols} FROM f')
        con.unregister("f")
    con.close()
    return path


def write_policy(store: Path, counts: str, min_cell: int = 5) -> None:
    """The node policy the bench measures, every key that matters set (not the defaults)."""
    policy = (
        f"min_cell: {min_cell}\ncounts: {counts}\nexact_release: any\ndifferencing_threshold: 0\n"
    )
    store.with_name(f"{store.stem}.policy.yaml").write_text(policy)


def cox_vs_lifelines(stores: list[Path], pooled: Path, counts: str) -> None:
    """Cox `strata: none` through LocalNode over the stores vs lifelines on the pooled view."""
    from lifelines import CoxPHFitter

    from ccdp.cohort.spec import CohortSpec
    from ccdp.federation.node.local import LocalNode
    from ccdp.federation.study import StudySpec
    from ccdp.governance.registered import study_hash

    cov = ["age_at_diagnosis", "wbc_at_diagnosis"]
    for s in stores:  # the node's policy as it stands; the study is registered (exact times)
        write_policy(s, counts)
    spec = {"analysis": "cox", "covariates": cov, "strata": "none"}
    study = StudySpec.model_validate({"title": "Cox", **spec})
    registered = {study_hash(study.analysis, study.params, study.cohort_json())}
    run_study({**spec, "covariates": cov[:1]}, InProcessTransport(stores[:1]))  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    fed = run_study(spec, InProcessTransport(stores, registered=registered))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = LocalNode(pooled).read_view(["os_time", "os_event", *cov], CohortSpec())
    rows = rows[["os_time", "os_event", *cov]].dropna()
    t0, c0 = time.perf_counter(), time.process_time()
    cph = CoxPHFitter().fit(rows, "os_time", "os_event")
    lwall, lcpu = time.perf_counter() - t0, time.process_time() - c0
    ours = np.array([c.coef for c in fed.result.coefficients])
    diff = float(np.max(np.abs(ours - cph.params_.loc[cov].to_numpy())))
    print(
        f"registered cox strata none through LocalNode ({fed.result.n:,} rows, "
        f"{fed.result.iterations} Newton steps): {wall:.2f} s wall, {cpu:.2f} s CPU"
    )
    print(
        f"baseline lifelines CoxPHFitter on {len(rows):,} pooled view rows: {lwall:.2f} s wall, "
        f"{lcpu:.2f} s CPU"
    )
    print(
        f"  lifelines / ccdp: {lwall / wall:.1f}x wall, {lcpu / cpu:.1f}x CPU; "
        f"max |coef diff| {diff:.1e}"
    )


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tumours", type=int, default=1_000_000)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--counts", choices=["exact", "perturbed"], default="exact")
    ap.add_argument("--cox", action="store_true", help="also time Cox through LocalNode")
    ap.add_argument("--only-cox", action="store_true", help="time only the Cox fit")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    tmp = Path(tempfile.mkdtemp(prefix="ccdp-bench-"))
    per = args.tumours // args.nodes
    countries = [f"C{i}" for i in range(args.nodes)]
    node_rows = [make_rows(per, c, f"n{i}", rng) for i, c in enumerate(countries)]
    stores = [write_store(tmp / f"n{i}.duckdb", [r]) for i, r in enumerate(node_rows)]
    pooled = write_store(tmp / "pooled.duckdb", node_rows)

    def baseline() -> pd.DataFrame:
        con = duckdb.connect(str(pooled), read_only=True)
        sql = """SELECT t.iccc_group, p.sex, count(*) AS n FROM tumour t
                 JOIN patient p USING (patient_id) GROUP BY ALL"""
        out = con.execute(sql).df()
        con.close()
        return out

    transport = InProcessTransport(stores)
    for s in stores:  # repeated identical cohorts are fine; no differencing refusals here
        write_policy(s, args.counts)
    bound = 4 * args.nodes if args.counts == "perturbed" else 0  # the pooled noise bound
    if args.cox or args.only_cox:
        cox_vs_lifelines(stores, pooled, args.counts)
        if args.only_cox:
            return
    spec = {"analysis": "count", "by": ["iccc_group", "sex"]}
    t_base, base = timed(baseline, args.repeat)
    # the first study over fresh node objects: under `counts: perturbed` it also builds each
    # node's keyed view (view rows and ledger keys, once per store); the median is of the runs
    # after it
    t_first, _ = timed(lambda: run_study(spec, InProcessTransport(stores)), 1)
    t_fed, fed = timed(lambda: run_study(spec, InProcessTransport(stores)), args.repeat)
    assert args.nodes * per == int(base.n.sum())
    assert abs(fed.result.total - int(base.n.sum())) <= bound
    t_inc, _ = timed(
        lambda: run_study({"analysis": "incidence", "by": ["iccc_group"]}, transport), 1
    )

    def specimen_baseline() -> pd.DataFrame:
        con = duckdb.connect(str(pooled), read_only=True)
        sql = """SELECT s.type, t.iccc_group, count(*) AS n FROM specimen s
                 JOIN tumour t USING (tumour_id) WHERE s.available GROUP BY ALL"""
        out = con.execute(sql).df()
        con.close()
        return out

    by = ["specimen_type", "iccc_group"]
    t_sbase, sbase = timed(specimen_baseline, args.repeat)
    t_spec, spec_fed = timed(
        lambda: run_study(
            {"analysis": "count", "by": by, "unit": "specimens"}, InProcessTransport(stores)
        ),
        args.repeat,
    )
    assert abs(spec_fed.result.total - int(sbase.n.sum())) <= bound
    cells = [
        {"g": g, "y": y, "a": a, "n": int(rng.choice([0, 2, 4, 8, 20, 60]))}
        for g in GROUPS
        for y in range(2005, 2020)
        for a in AGES
    ]
    table = {"t": CountsPart(dims=["g", "y", "a"], counts=["n"], cells=cells)}
    t_sup, (_, report) = timed(lambda: suppress(table, 5), 1)
    print(f"tumours={args.nodes * per:,} nodes={args.nodes} counts={args.counts}")
    print(f"baseline pooled GROUP BY: {t_base:.3f} s")
    print(f"federated count by iccc_group, sex, first study: {t_first:.3f} s")
    print(f"federated count by iccc_group, sex: {t_fed:.3f} s")
    print(f"federated incidence by iccc_group: {t_inc:.3f} s")
    print(
        f"baseline pooled GROUP BY of {int(sbase.n.sum()):,} available specimens: {t_sbase:.3f} s"
    )
    print(f"federated count unit specimens by specimen_type, iccc_group: {t_spec:.3f} s")
    print(
        f"suppression audit, 900-cell 3-way table: {t_sup:.3f} s "
        f"({sum(report.primary.values())} primary, {sum(report.secondary.values())} secondary)"
    )


if __name__ == "__main__":
    main()
