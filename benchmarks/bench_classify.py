"""Benchmark: ICCC-3 classification throughput (rows/s) against a plain pandas merge baseline.

    python benchmarks/bench_classify.py [--rows 2000000] [--repeat 3]

Rows are random valid ICD-O-3 combinations (strings, as read from a registry CSV), drawn from a
realistic pool of distinct codes. The baseline is what a careful analyst would write by hand: a
pandas left merge of the same rows onto a precomputed lookup table of their distinct
(morphology, topography, behaviour) combinations - it does no validation and no error reporting.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ccdp.terminology import iccc, icdo3


def make_rows(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    morph = icdo3.morphology_codes()["code"].to_numpy()
    topo = icdo3.topography_codes()["code"].to_numpy()
    return pd.DataFrame(
        {
            "morphology": rng.choice(morph, n),
            "topography": rng.choice(topo, n),
            "behaviour": rng.choice(np.array(["0", "1", "3"]), n, p=[0.05, 0.1, 0.85]),
        }
    )


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    iccc.classify(rows["morphology"][:10], rows["topography"][:10], rows["behaviour"][:10])

    def ours() -> pd.DataFrame:
        return iccc.classify(rows["morphology"], rows["topography"], rows["behaviour"])

    keys = ["morphology", "topography", "behaviour"]
    distinct = rows.drop_duplicates(keys).reset_index(drop=True)
    lookup = pd.concat([distinct, iccc.classify(*(distinct[k] for k in keys))], axis=1)

    def baseline() -> pd.DataFrame:
        return rows.merge(lookup, on=keys, how="left")

    t_ours, result = timed(ours, args.repeat)
    t_base, merged = timed(baseline, args.repeat)
    assert (result["iccc_recode"].to_numpy() == merged["iccc_recode"].to_numpy()).all()
    n = args.rows
    print(f"rows: {n:,}  distinct combinations: {len(distinct):,}  repeat: {args.repeat} (median)")
    print(f"ccdp iccc.classify       : {t_ours:6.2f} s  {n / t_ours:12,.0f} rows/s")
    print(f"baseline pandas merge    : {t_base:6.2f} s  {n / t_base:12,.0f} rows/s")
    print(f"ratio classify / merge   : {t_ours / t_base:6.2f}x the time")


if __name__ == "__main__":
    main()
