"""Benchmark: applying a mapping spec to a messy export, against reading the same files plainly.

    python benchmarks/bench_mapping.py [--patients 200000] [--country FR] [--repeat 3]

Draws the synthetic partnership as messy exports, then times
`apply_mapping(examples/mappings/<CC>.yaml, OUT/<CC>)` (read every file, detect encoding and
delimiter, value maps, missing tokens, dates in the site's formats, ICD-O-3 normalisation) and,
as the baseline in the same run, `pandas.read_csv(dtype=str)` of the same files with the
delimiter and encoding given (no conversion at all).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ccdp.ingest.mapping import apply_mapping, load_mapping
from ccdp.synth.generate import generate

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def plain_read(spec, site: Path) -> int:
    rows = 0
    for src in spec.sources.values():
        for path in sorted(site.glob(src.file)):
            sep = None if src.delimiter == "auto" else src.delimiter
            enc = "utf-8" if src.encoding == "auto" else src.encoding
            frame = pd.read_csv(
                path, sep=sep or ",", encoding=enc, dtype=str, keep_default_na=False
            )
            rows += len(frame)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=200_000)
    parser.add_argument("--country", default="FR")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out, countries=[args.country], patients=args.patients, seed=1, format="messy")
        site = out / args.country
        spec = load_mapping(ROOT / "examples" / "mappings" / f"{args.country}.yaml")
        t_map, frames = timed(lambda: apply_mapping(spec, site), args.repeat)
        t_base, base_rows = timed(lambda: plain_read(spec, site), args.repeat)
        rows = sum(len(f) for f in frames.values())
        mib = sum(p.stat().st_size for p in site.iterdir()) / 2**20
        print(f"{args.country}: {rows:,} rows ({mib:.0f} MiB of CSV) in {len(frames)} tables")
        print(f"apply_mapping        {t_map:7.2f} s  {rows / t_map:12,.0f} rows/s")
        print(f"pandas read_csv(str) {t_base:7.2f} s  {base_rows / t_base:12,.0f} rows/s")
        print(f"ratio {t_map / t_base:.2f}x")


if __name__ == "__main__":
    main()
