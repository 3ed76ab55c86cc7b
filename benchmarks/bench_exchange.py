"""Benchmark the exports (`ccdp export fhir|omop|phenopackets`) of an N-patient store.

Generates one synthetic country with N patients (`ccdp synth`, native layout) and ingests it
into a store (both cached under --out), then, each in its own child process so that peak RSS
is its own:
  baseline  DuckDB's own `COPY (SELECT * FROM table) TO 'table.<ext>'` of every table an
            export reads (the same rows): NDJSON (`FORMAT json`) beside the FHIR and Phenopacket
            exports, Parquet beside OMOP (a database file, columnar like it);
  export    the format's `export_store` over the store, staged and moved into place as the
            command does (`ccdp.exchange.output.staged`), without the progress bar.
Usage:

    python benchmarks/bench_exchange.py --patients 1000000 --out /tmp/bench-exchange \
        [--formats fhir,omop,phenopackets]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from peak import child_prelude

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("patient", "tumour", "event", "treatment", "trial_enrolment", "biomarker", "specimen")
FILE_FORMATS = {"omop"}  # exports written as one file rather than a folder

_MEASURE = child_prelude()  # the children's timing and peak memory (peak.py)

_BASELINE = (
    _MEASURE
    + """
import duckdb
store, out, fmt = sys.argv[1], sys.argv[2], sys.argv[3]
tables = sys.argv[4].split(",")
def run():
    con = duckdb.connect(store, read_only=True)
    rows = 0
    for t in tables:
        con.execute(f"COPY (SELECT * FROM {t}) TO '{out}/{t}.{fmt}' (FORMAT {fmt})")
        rows += con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    return {"rows": rows}
print(json.dumps(measured(run)))
"""
)

_EXPORT = (
    _MEASURE
    + """
import importlib
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from ccdp.exchange.output import staged, write_manifest
from ccdp.store import NodeStore
store, out, fmt = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
options = json.loads(sys.argv[5])
is_file = fmt == "omop"
module = importlib.import_module(f"ccdp.exchange.{fmt}")
def run():
    with NodeStore(store, read_only=True) as ns, staged(out, True, is_file=is_file) as stage:
        summary = module.export_store(ns, stage, **options)
        write_manifest(stage, summary, is_file=is_file)
    return {"patients": summary.patients, "records": sum(summary.records.values())}
print(json.dumps(measured(run)))
"""
)


def child(code: str, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_store(out: Path, patients: int, seed: int) -> Path:
    """The synthetic store (generated and ingested once, reused by later runs)."""
    sys.path.insert(0, str(ROOT / "src"))
    store = out / f"store-{patients}-{seed}.duckdb"
    if store.exists():
        return store
    from ccdp.ingest.pipeline import ingest_native
    from ccdp.synth.generate import generate

    folder = out / f"synth-{patients}-{seed}"
    generate(folder, "FR", patients=patients, seed=seed)
    ingest_native(store, folder / "FR", progress=False)
    return store


def size_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-exchange"))
    ap.add_argument("--formats", default="fhir,omop,phenopackets")
    ap.add_argument("--fhir-jobs", type=int, default=1, help="Worker processes for FHIR.")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = ensure_store(args.out, args.patients, args.seed)
    print(f"store: {store} ({size_mib(store):,.0f} MiB), {args.patients:,} patients")
    print("| what | records | wall | CPU | peak RSS | output | export / baseline (wall, CPU) |")
    print("|---|---|---|---|---|---|---|")
    bases: dict[str, dict] = {}
    for kind in ("json", "parquet"):
        folder = args.out / f"copy-{kind}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        b = bases[kind] = child(_BASELINE, str(store), str(folder), kind, ",".join(TABLES))
        print(
            f"| baseline `COPY … TO` {kind} | {b['rows']:,} rows | {b['seconds']:.1f} s "
            f"| {b['cpu']:.1f} s | {b['peak_rss_mib']:,.0f} MiB | {size_mib(folder):,.0f} MiB | |"
        )
    for fmt in args.formats.split(","):
        target = args.out / ("cdm.duckdb" if fmt in FILE_FORMATS else fmt)
        options = {"jobs": args.fhir_jobs} if fmt == "fhir" and args.fhir_jobs > 1 else {}
        r = child(_EXPORT, str(store), str(target), fmt, str(ROOT / "src"), json.dumps(options))
        b = bases["parquet" if fmt in FILE_FORMATS else "json"]
        label = f" (jobs {args.fhir_jobs})" if options else ""
        print(
            f"| `{fmt}` export{label} | {r['records']:,} ({r['patients']:,} patients) "
            f"| {r['seconds']:.1f} s | {r['cpu']:.1f} s | {r['peak_rss_mib']:,.0f} MiB "
            f"| {size_mib(target):,.0f} MiB | {r['seconds'] / b['seconds']:.2f}x, "
            f"{r['cpu'] / b['cpu']:.2f}x |"
        )


if __name__ == "__main__":
    main()
