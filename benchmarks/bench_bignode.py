"""A big node: ingest, catalogue, feasibility count, registered KM and Cox, at N tumours each.

For each size in --sizes (tumours; the synthetic registry has one tumour per patient), a native
export of one country (FR) is prepared under --out (cached), then every step runs as the node
would run it, each in its own child process, timed (wall, CPU) with the child's peak resident
memory read from /proc/self/status VmHWM (not ru_maxrss, which Linux carries over fork and exec
from the parent):
  read_csv   baseline: DuckDB `CREATE TABLE AS SELECT * FROM read_csv(file)` of every CSV into
             a fresh database file (the cost of just reading the same files);
  ingest     `ccdp ingest` (`ingest_native`) into a fresh store;
  catalogue  the node's catalogue published (`NodeCatalogue.publish`: counts through the gate,
             completeness, years, follow-up median, recorded in the ledger, audit-logged);
  count      a feasibility `count` by iccc_group and sex (`run_study` over the node's LocalNode:
             view, the count's `local`, the release gate, ledger, audit log);
  km         a registered Kaplan-Meier of overall survival by iccc_group, the same path;
  cox        a registered Cox model of overall survival on age at diagnosis and sex
             (`strata: none`), the same path, every Newton round.
The node's policy is written out (`counts: perturbed`, `exact_release: registered`, min_cell 5,
differencing at its default), so the count is the feasibility tier and KM and Cox are registered
studies (their hashes given to the node as `ccdp run --project` does).

Sizes up to --base-patients are drawn by `ccdp synth`; a larger size (a multiple of it) is that
export replicated, each copy's identifiers re-keyed (`FR-P000001` becomes `FR-R3P000001` in copy
3, in every table) and the population table kept once: the draw of 10M patients at once needs
about 10x the synth's 1.1 GB, and a replica has the same case mix. Usage:

    nice -n 10 python benchmarks/bench_bignode.py --sizes 1000000,10000000 --out /tmp/bignode
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from peak import child_prelude  # the children's timing and peak memory (VmHWM)

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("read_csv", "ingest", "catalogue", "count", "km", "cox")
POLICY = "min_cell: 5\ncounts: perturbed\nexact_release: registered\n"
STUDIES = {
    "count": {"analysis": "count", "by": ["iccc_group", "sex"]},
    "km": {"analysis": "km", "by": ["iccc_group"]},
    "cox": {"analysis": "cox", "covariates": ["age_at_diagnosis", "sex"], "strata": "none"},
}

_STEP = (
    child_prelude()
    + """
from pathlib import Path
sys.path.insert(0, sys.argv[1])
step, folder, store = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
studies = json.loads(sys.argv[5])

def read_csv():
    import duckdb
    con = duckdb.connect(str(store))
    rows = 0
    for path in sorted(folder.glob("*.csv")):
        con.execute(f"CREATE TABLE {path.stem} AS SELECT * FROM read_csv('{path}')")
        rows += con.execute(f"SELECT count(*) FROM {path.stem}").fetchone()[0]
    con.close()
    return {"rows": rows}

def ingest():
    from ccdp.ingest.pipeline import ingest_native
    report = ingest_native(store, folder, progress=False)
    return {"rows": report.rows_read, "accepted": report.accepted,
            "quarantined": report.quarantined}

def catalogue():
    from ccdp.federation.node.catalogue import NodeCatalogue
    computed = NodeCatalogue.for_store(store).publish()
    body = computed.catalogue.model_dump(mode="json")
    return {"rows": len(json.dumps(body)), "what": "bytes of catalogue"}

def study():
    from ccdp.federation.inprocess import InProcessTransport
    from ccdp.federation.study import StudySpec, run_study
    from ccdp.governance.registered import study_hash
    spec = studies[step]
    registered = set()
    if step != "count":
        s = StudySpec.model_validate({"title": step, **spec})
        registered = {study_hash(s.analysis, s.params, s.cohort_json())}
    result = run_study(spec, InProcessTransport([store], registered=registered))
    status = {n: s.status for n, s in result.nodes.items()}
    if any(v != "answered" for v in status.values()):
        raise SystemExit(f"{step}: not answered: {result.nodes}")
    return {"rounds": result.rounds}

run = {"read_csv": read_csv, "ingest": ingest, "catalogue": catalogue}.get(step, study)
figures = measured(run)
print()  # DuckDB may have left a progress bar on the line: the figures are marked
print("FIGURES " + json.dumps(figures))
"""
)


def child(*args: str, src: Path = ROOT / "src") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _STEP, str(src), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"step {args[0]} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.rsplit("FIGURES ", 1)[1])


def replicate(base: Path, target: Path, copies: int) -> None:
    """`copies` of the base export, identifiers re-keyed per copy, population once (via sed)."""
    tmp = target.with_name(target.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in sorted(base.glob("*.csv")):
        with (tmp / path.name).open("wb") as out:
            out.write(path.read_bytes())  # copy 0, with the header
            if path.stem == "population":
                continue
            out.flush()
            for k in range(1, copies):
                sed = f"1d; s/\\bFR-\\([A-Z]\\)/FR-R{k}\\1/g"
                subprocess.run(["sed", "-e", sed, str(path)], stdout=out, check=True)
    tmp.rename(target)


def ensure_export(out: Path, size: int, base_patients: int, seed: int) -> Path:
    """The native export of `size` patients (drawn, or replicated from the base), cached."""
    folder = out / f"synth-{size}-{seed}" / "FR"
    if (folder / "patient.csv").exists():
        return folder
    if size <= base_patients:
        sys.path.insert(0, str(ROOT / "src"))
        from ccdp.synth.generate import generate

        generate(folder.parent, "FR", patients=size, seed=seed)
        return folder
    if size % base_patients:
        raise SystemExit(f"--sizes: {size} is above --base-patients and not a multiple of it")
    base = ensure_export(out, base_patients, base_patients, seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    replicate(base, folder, size // base_patients)
    return folder


def fresh(path: Path) -> Path:
    """Remove a store and every node-side file beside it (policy, ledger, audit, catalogue)."""
    for leftover in path.parent.glob(f"{path.stem}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    return path


def node_files(store: Path) -> Path:
    """Remove the node-side files beside a kept store (ledger, audit, catalogue), so a reused
    store publishes as a freshly ingested one would; its identity (`.node.yaml`, whose secret
    seeds the perturbation) is kept, so two runs on one store publish comparable figures."""
    for leftover in store.parent.glob(f"{store.stem}.*"):
        if leftover != store and leftover.is_file() and not leftover.name.endswith(".node.yaml"):
            leftover.unlink()
    return store


def run_size(
    out: Path,
    size: int,
    base_patients: int,
    seed: int,
    steps: list[str],
    log,
    reuse: bool = False,
    src: Path = ROOT / "src",
) -> dict[str, dict]:
    t0 = time.perf_counter()
    folder = ensure_export(out, size, base_patients, seed)
    mib = sum(p.stat().st_size for p in folder.glob("*.csv")) / 2**20
    ready = time.perf_counter() - t0
    log(f"{size:,}: export {folder} ({mib:,.0f} MiB of CSV) ready in {ready:.0f} s")
    store = out / f"node-{size}.duckdb"
    store = node_files(store) if reuse and store.exists() else fresh(store)
    baseline = fresh(out / f"readcsv-{size}.duckdb")
    studies = json.dumps(STUDIES)
    figures: dict[str, dict] = {}
    for step in steps:
        if reuse and step in ("read_csv", "ingest") and store.exists():
            continue  # --reuse-store: the store is already ingested
        target = baseline if step == "read_csv" else store
        if step == "catalogue":  # the node's policy, written out before anything is released
            store.with_name(f"{store.stem}.policy.yaml").write_text(POLICY)
        r = figures[step] = child(step, str(folder), str(target), studies, src=src)
        extra = {k: v for k, v in r.items() if k not in ("seconds", "cpu", "peak_rss_mib")}
        log(
            f"{size:,} {step}: {r['seconds']:.1f} s wall, {r['cpu']:.1f} s CPU, "
            f"peak {r['peak_rss_mib']:,.0f} MiB {json.dumps(extra)}"
        )
    figures["store_mib"] = {"mib": store.stat().st_size / 2**20, "csv_mib": mib}
    fresh(baseline)
    return figures


def table(all_figures: dict[int, dict[str, dict]]) -> None:
    sizes = sorted(all_figures)
    head = " | ".join(f"{s:,}: wall / CPU / peak" for s in sizes)
    print(f"| step | {head} | scaling {sizes[-1] // sizes[0]}x rows (wall, peak) |")
    print("|---|" + "---|" * len(sizes) + "---|")
    for step in STEPS:
        cells = []
        for s in sizes:
            r = all_figures[s].get(step)
            cells.append(
                f"{r['seconds']:.1f} s / {r['cpu']:.1f} s / {r['peak_rss_mib']:,.0f} MiB"
                if r
                else "—"
            )
        a, b = all_figures[sizes[0]].get(step), all_figures[sizes[-1]].get(step)
        scale = (
            f"{b['seconds'] / a['seconds']:.1f}x, {b['peak_rss_mib'] / a['peak_rss_mib']:.1f}x"
            if a and b and len(sizes) > 1
            else ""
        )
        print(f"| {step} | " + " | ".join(cells) + f" | {scale} |")
    for s in sizes:
        st = all_figures[s].get("store_mib")
        if st:
            print(f"{s:,}: {st['csv_mib']:,.0f} MiB of CSV, store {st['mib']:,.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000000,10000000", help="Tumours per node, in order.")
    ap.add_argument("--base-patients", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-bignode"))
    ap.add_argument("--steps", default=",".join(STEPS), help="A prefix of the steps, in order.")
    ap.add_argument(
        "--reuse-store",
        action="store_true",
        help="Keep an ingested store under --out (skip read_csv and ingest; node files reset).",
    )
    ap.add_argument(
        "--src", type=Path, default=ROOT / "src", help="The ccdp source the steps import."
    )
    args = ap.parse_args()
    steps = args.steps.split(",")
    if steps != list(STEPS[: len(steps)]):
        raise SystemExit(f"--steps: a prefix of {','.join(STEPS)} (each step needs the last)")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:7.0f} s] {line}", flush=True)

    figures: dict[int, dict[str, dict]] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        figures[size] = run_size(
            args.out, size, args.base_patients, args.seed, steps, log, args.reuse_store, args.src
        )
    table(figures)


if __name__ == "__main__":
    main()
