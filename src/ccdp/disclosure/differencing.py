"""Differencing guard: refuse a cohort that differs from an already released one by a handful of
patients, since subtracting the two answers would describe those few patients.

The node keeps, beside its store, the (hashed) patient sets of the cohorts it has released
(`<store stem>.released/`); they never leave the node. Every earlier release counts, whoever
asked: requesters could otherwise collude. Identical cohorts are allowed (same answer again).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ccdp.disclosure.rules import Refusal


def released_dir(store: Path | str) -> Path:
    store = Path(store)
    return store.with_name(f"{store.stem}.released")


def cohort_fingerprint(patient_ids: pd.Series) -> np.ndarray:
    """Sorted unique 64-bit hashes of the cohort's patient keys (vectorised, stable)."""
    ids = pd.Series(patient_ids.astype(str).unique())
    return np.unique(pd.util.hash_pandas_object(ids, index=False).to_numpy(dtype=np.uint64))


class ReleasedCohorts:
    """The node's memory of released cohorts."""

    def __init__(self, store: Path | str) -> None:
        self.dir = released_dir(store)

    def _files(self) -> list[Path]:
        return sorted(self.dir.glob("*.npy")) if self.dir.exists() else []

    @staticmethod
    def _name(fp: np.ndarray) -> str:
        return hashlib.sha256(fp.tobytes()).hexdigest()[:32]

    def check(self, fp: np.ndarray, threshold: int) -> None:
        """Raise Refusal when `fp` differs from a released cohort by 1..threshold-1 patients."""
        if threshold <= 0:
            return
        for path in self._files():
            old = np.load(path)
            common = np.intersect1d(fp, old, assume_unique=True).size
            diff = fp.size + old.size - 2 * common
            if 0 < diff < threshold:
                raise Refusal(
                    f"the cohort differs from a cohort this node already released by {diff} "
                    f"patient(s), fewer than {threshold}: the difference could describe them"
                )

    def record(self, fp: np.ndarray, meta: dict) -> None:
        """Remember a released cohort (idempotent)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = self._name(fp)
        path = self.dir / f"{name}.npy"
        if not path.exists():
            tmp = self.dir / f"{name}.tmp.npy"
            np.save(tmp, fp)
            tmp.replace(path)
            (self.dir / f"{name}.json").write_text(json.dumps(meta, default=str), "utf-8")
