"""Benchmark `ccdp synth`: 1,000,000 patients in native layout, time and peak memory.

Runs the generator in a child process (so its peak RSS is its own) and, as the baseline in the same
run, times writing the same number of rows per table with plain `DataFrame.to_csv` of already-drawn
columns (no simulation at all). Usage:

    python benchmarks/bench_synth.py --patients 1000000 --out /tmp/bench-synth
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def run_generator(out: Path, patients: int, seed: int) -> dict[str, float]:
    """Run `ccdp synth` in a child process; wall time and the child's peak RSS."""
    code = (
        f"import json, sys, time; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
        "from ccdp.synth import generate\n"
        "t = time.perf_counter()\n"
        f"r = generate({str(out)!r}, patients={patients}, seed={seed})\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'rows': r.rows}))\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "wall_seconds": wall,
        "generate_seconds": info["seconds"],
        "peak_rss_mib": max(peak_kib, before) / 1024,
        "rows": info["rows"],
    }


def baseline_to_csv(out: Path, rows: dict[str, int], ncols: dict[str, int]) -> float:
    """Time to write the same row counts with DataFrame.to_csv (random ints/strings, no logic)."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for table, n in rows.items():
        cols = {
            f"c{i}": (
                rng.integers(0, 10**6, n)
                if i % 2
                else np.char.add("FR-P", rng.integers(0, 10**6, n).astype(str))
            )
            for i in range(ncols[table])
        }
        pd.DataFrame(cols).to_csv(out / f"{table}.csv", index=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-synth"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    gen = run_generator(args.out / "synth", args.patients, args.seed)
    totals: dict[str, int] = {}
    for per in gen["rows"].values():
        for k, v in per.items():
            totals[k] = totals.get(k, 0) + v
    sys.path.insert(0, str(ROOT / "src"))
    from ccdp.model import load_model

    model = load_model()
    ncols = {t: len(model.table(t).input_fields) for t in totals}
    (args.out / "baseline").mkdir(parents=True, exist_ok=True)
    base = baseline_to_csv(args.out / "baseline", totals, ncols)
    size = sum(p.stat().st_size for p in (args.out / "synth").rglob("*.csv")) / 2**20
    print(
        f"patients: {totals['patient']:,}; rows: "
        + ", ".join(f"{k} {v:,}" for k, v in totals.items())
    )
    print(
        f"ccdp synth (draw + write {size:,.0f} MiB of CSV): {gen['generate_seconds']:.1f} s "
        f"(process wall {gen['wall_seconds']:.1f} s), peak RSS {gen['peak_rss_mib']:,.0f} MiB"
    )
    print(f"baseline DataFrame.to_csv of the same rows x columns: {base:.1f} s")
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
