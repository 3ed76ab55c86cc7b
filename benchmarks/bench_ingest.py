"""Benchmark `ccdp ingest` (native layout): type conversion + every quality edit + the write.

Generates one synthetic country with N patients (`ccdp synth`, native layout, cached under --out),
then, each in its own child process (peak RSS: the child's own VmHWM, see peak.py):
  baseline  DuckDB `CREATE TABLE AS SELECT * FROM read_csv(file)` of every CSV (auto-detected
            types, in-memory database): the cost of just reading the same files;
  reference the same into a DuckDB file (compressed on disk, committed): what writing any store
            of these rows costs, shown beside the baseline;
  ingest    `ccdp.ingest.pipeline.ingest_native` into a fresh store file: read as text, type,
            run all edits (per-field, cross-table, keys, orphans), ICCC-3 derivation, upsert,
            quarantine, flags, one transaction, committed to disk.
With --recheck, two more ingests into the same store: the same folder again (every parent
compared with its stored row, nothing changed) and patient.csv alone with 1% of birth dates
moved a year later (the stored children of those patients checked again).
--repeat N runs every side N times, interleaved, and shows each side's median run.
Usage:

    python benchmarks/bench_ingest.py --patients 1000000 --out /tmp/bench-ingest [--recheck]
        [--before OTHER_CHECKOUT/src] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent  # peak.py: the children's peak memory

_BASELINE = """
import duckdb, json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from peak import peak_rss_mib
folder = Path(sys.argv[1])
con = duckdb.connect(sys.argv[3] if len(sys.argv) > 3 else ':memory:')
use0 = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = use0.ru_utime + use0.ru_stime
t = time.perf_counter()
rows = 0
for path in sorted(folder.glob('*.csv')):
    con.execute(f"CREATE TABLE {path.stem} AS SELECT * FROM read_csv('{path}')")
    rows += con.execute(f"SELECT count(*) FROM {path.stem}").fetchall()[0][0]
con.close()
seconds = time.perf_counter() - t
use = resource.getrusage(resource.RUSAGE_SELF)
cpu = use.ru_utime + use.ru_stime - cpu0
peak = peak_rss_mib()
print(json.dumps({"seconds": seconds, "cpu": cpu, "rows": rows, "peak_rss_mib": peak}))
"""

_INGEST = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
sys.path.insert(0, sys.argv[4])
from ccdp.ingest.pipeline import ingest_native
from peak import peak_rss_mib
use0 = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = use0.ru_utime + use0.ru_stime
t = time.perf_counter()
report = ingest_native(sys.argv[2], sys.argv[1], progress=False)
seconds = time.perf_counter() - t
use = resource.getrusage(resource.RUSAGE_SELF)
cpu = use.ru_utime + use.ru_stime - cpu0
peak = peak_rss_mib()
print(json.dumps({"seconds": seconds, "cpu": cpu, "rows": report.rows_read, "peak_rss_mib": peak,
                  "accepted": report.accepted, "quarantined": report.quarantined,
                  "flagged": report.flagged, "edits": report.edits,
                  "rechecked": report.rechecked, "requarantined": report.requarantined,
                  "tables": {k: v.rows_read for k, v in report.tables.items()}}))
"""


def child(code: str, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_data(out: Path, patients: int, seed: int) -> Path:
    """The synthetic native export (generated once, reused by later runs)."""
    folder = out / f"synth-{patients}-{seed}" / "FR"
    if not (folder / "patient.csv").exists():
        sys.path.insert(0, str(ROOT / "src"))
        from ccdp.synth.generate import generate

        generate(folder.parent, "FR", patients=patients, seed=seed)
    return folder


def changed_patients(folder: Path, out: Path, share: float = 0.01) -> Path:
    """patient.csv alone, with `share` of the birth dates a year later (fixed pattern)."""
    import pandas as pd

    patients = pd.read_csv(folder / "patient.csv", dtype=str, keep_default_na=False)
    step = round(1 / share)
    rows = patients.index[::step]
    full = patients.loc[rows, "birth_date"].str.len() == 10
    rows = rows[full.to_numpy()]
    later = pd.to_datetime(patients.loc[rows, "birth_date"]) + pd.DateOffset(years=1)
    patients.loc[rows, "birth_date"] = later.dt.strftime("%Y-%m-%d")
    target = out / "changed-patients"
    target.mkdir(parents=True, exist_ok=True)
    patients.to_csv(target / "patient.csv", index=False)
    return target


def ingest(folder: Path, store: Path, src: Path = ROOT / "src") -> dict:
    """`ingest_native` (of the package under `src`) of `folder` into `store`, measured in a
    child process."""
    return child(_INGEST, str(folder), str(store), str(src), str(HERE))


def fresh(path: Path) -> Path:
    """`path` with no DuckDB file (or write-ahead log) left from an earlier run."""
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)
    return path


def recheck(folder: Path, store: Path, out: Path) -> None:
    again = ingest(folder, store)
    changed = ingest(changed_patients(folder, out), store)
    print("| re-ingest | wall | CPU | rechecked | requarantined |")
    print("|---|---|---|---|---|")
    for label, r in (("same folder again", again), ("patient.csv, 1% births moved", changed)):
        print(
            f"| {label} | {r['seconds']:.2f} s | {r['cpu']:.2f} s | {r['rechecked']:,} "
            f"| {r['requarantined']:,} |"
        )


def median_run(runs: list[dict]) -> dict:
    """The run of median CPU time (its wall time and peak memory with it)."""
    return sorted(runs, key=lambda r: r["cpu"])[len(runs) // 2]


def timed_rounds(args: argparse.Namespace, folder: Path) -> dict[str, dict]:
    """Baseline, reference, ingest (and `--before`) in `--repeat` interleaved rounds, so that
    each figure sits beside its baselines under the same load; the median run of each."""
    runs: dict[str, list[dict]] = {"base": [], "on_disk": [], "ingest": [], "before": []}
    for _ in range(args.repeat):
        runs["base"].append(child(_BASELINE, str(folder), str(HERE)))
        on_disk = fresh(args.out / "read_csv.duckdb")
        runs["on_disk"].append(child(_BASELINE, str(folder), str(HERE), str(on_disk)))
        runs["ingest"].append(ingest(folder, fresh(args.out / "bench.duckdb")))
        if args.before is not None:
            old = fresh(args.out / "before.duckdb")
            runs["before"].append(ingest(folder, old, args.before.resolve()))
    return {k: median_run(v) for k, v in runs.items() if v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-ingest"))
    ap.add_argument("--recheck", action="store_true", help="Also time two re-ingests.")
    ap.add_argument(
        "--before",
        type=Path,
        help="src/ folder of another checkout (e.g. main before a change): its ingest is timed "
        "too, in the same run, into its own store",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="interleaved rounds; the median run is shown"
    )
    args = ap.parse_args()
    folder = ensure_data(args.out, args.patients, args.seed)
    size = sum(p.stat().st_size for p in folder.glob("*.csv")) / 2**20
    t = timed_rounds(args, folder)
    base, on_disk, ing = t["base"], t["on_disk"], t["ingest"]
    store = args.out / "bench.duckdb"
    print(f"data: {folder} ({size:,.0f} MiB of CSV), rows per table: {ing['tables']}")
    print(f"median of {args.repeat} interleaved round(s), by CPU time")
    print("| what | rows | wall | CPU | peak RSS | wall / CPU vs baseline | vs reference |")
    print("|---|---|---|---|---|---|---|")
    rows = [
        ("baseline DuckDB `read_csv` of every file into in-memory tables", base),
        ("reference: the same `read_csv` into tables of a DuckDB file", on_disk),
        ("`ingest_native` (type, all edits, ICCC, upsert, quarantine, commit)", ing),
    ]
    if "before" in t:
        rows.append((f"before: `ingest_native` of {args.before}", t["before"]))
    for label, r in rows:
        print(
            f"| {label} | {r['rows']:,} | {r['seconds']:.1f} s | {r['cpu']:.1f} s "
            f"| {r['peak_rss_mib']:,.0f} MiB | {r['seconds'] / base['seconds']:.2f}x / "
            f"{r['cpu'] / base['cpu']:.2f}x | {r['seconds'] / on_disk['seconds']:.2f}x / "
            f"{r['cpu'] / on_disk['cpu']:.2f}x |"
        )
    print(f"target: ingest <= 2x the baseline; store {store.stat().st_size / 2**20:,.0f} MiB")
    print(
        f"accepted {ing['accepted']:,}, quarantined {ing['quarantined']:,}, flagged "
        f"{ing['flagged']:,}; edits failed: {ing['edits']}"
    )
    if args.recheck:
        recheck(folder, store, args.out)


if __name__ == "__main__":
    main()
