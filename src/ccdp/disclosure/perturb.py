"""Cell-key perturbation of counts (the ABS TableBuilder and ONS 2021 Census method).

Every record has a key in [0, 256) that only the node can compute: its ledger key (a hash of its
pseudonymised id, stable across re-ingests; `ccdp.wire.records`) mixed with a node secret salt.
A cell's key is the sum of its records' keys modulo 256, so the same set of records always has
the same key, and a set that differs by even one record has an unrelated one. The published
value of a cell of true count c is read from a perturbation table (ptable) at (c, cell key):

* zero stays zero: a zero describes nobody;
* |published - c| <= D (`max_noise`);
* no published value lies in 1..min_cell - 1 (so D >= min_cell - 1: a count of 1 must be able
  to go to 0 or to min_cell with zero mean);
* zero mean noise for each c over the 256 keys, to within integer slot allocation (for c = 1,
  with D = 4 and min_cell = 5, 0 and 5 need weights 4/5 and 1/5 of 256 slots: a residual bias of
  -1/256 is the best there is; `residual_bias` gives it for each c);
* for c >= min_cell + D every outcome c - D..c + D is allowed and the noise is symmetric with
  weights proportional to D + 1 - |d| (concentrated near 0); below that, where the allowed
  outcomes are one-sided, the same weights are exponentially tilted so that the mean is exactly c.

Why: the same question always gets the same answer (no averaging over repeats), and differences
of released counts (A + B - C over three cohorts) carry the noise of three independent keys, so
a child's value is lost in it; and since every count is published whatever it is, no release
decision depends on the data. What it does not do: a determined attacker who can obtain many
*different* sets with the same difference can average the noise away (issue 28 restricts the
feasibility tier's filters to declared levels and bands for that reason).

Pure NumPy; the table is built once per (D, min_cell) and cached.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ccdp.wire.records import mix64

KEY_SPACE = 256  # cell keys are sums modulo this (the ONS and ABS tables use 256 too)


def record_keys(ledger_keys: np.ndarray, salt: int) -> np.ndarray:
    """Each record's key in [0, KEY_SPACE): mix64(ledger key ^ salt) mod 256. Without the node's
    salt a researcher cannot compute a record's key even from its ledger key."""
    keys = np.asarray(ledger_keys, dtype=np.uint64) ^ np.uint64(salt & 0xFFFF_FFFF_FFFF_FFFF)
    return (mix64(keys) % np.uint64(KEY_SPACE)).astype(np.int64)


def cell_keys(sets: list[np.ndarray], salt: int) -> np.ndarray:
    """Each cell's key: the sum of its records' keys modulo 256 (an empty cell's key is 0).
    A cell's records are its distinct ledger keys (`Records.sets`), so the key is a function of
    the set alone."""
    if not sets:
        return np.zeros(0, dtype=np.int64)
    sizes = np.array([s.size for s in sets], dtype=np.int64)
    keys = record_keys(np.concatenate(sets) if sizes.sum() else np.zeros(0, np.uint64), salt)
    csum = np.concatenate([[0], np.cumsum(keys)])
    ends = np.cumsum(sizes)
    return (csum[ends] - csum[ends - sizes]) % KEY_SPACE


def check_noise(max_noise: int, min_cell: int) -> None:
    """D must let a count of 1 reach 0 (D >= 1) and min_cell (D >= min_cell - 1), or the small
    counts could not have zero-mean noise without a value in 1..min_cell - 1."""
    if min_cell < 1:
        raise ValueError("min_cell must be at least 1")
    if max_noise < max(min_cell - 1, 0):
        raise ValueError(
            f"max_noise {max_noise} must be at least min_cell - 1 = {min_cell - 1}: a count of 1 "
            "must be able to go to 0 or to min_cell"
        )


def cap(max_noise: int, min_cell: int) -> int:
    """The first count whose every outcome c - D..c + D is allowed: counts above it use its
    row's noise."""
    return min_cell + max_noise if min_cell > 1 else max_noise


def _outcomes(c: int, max_noise: int, min_cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Allowed noise values d for a true count c and their probabilities (mean exactly 0)."""
    d = np.arange(-max_noise, max_noise + 1, dtype=np.int64)
    v = c + d
    d = d[(v == 0) | (v >= min_cell)] if c else np.zeros(1, dtype=np.int64)
    w = (max_noise + 1 - np.abs(d)).astype(float)
    if d.min() >= 0 or d.max() <= 0:  # one-sided: only d = 0 keeps the mean at c
        return np.zeros(1, dtype=np.int64), np.ones(1)

    def tilted(theta: float) -> np.ndarray:
        z = theta * d
        p = w * np.exp(z - z.max())
        return np.asarray(p / p.sum())

    lo, hi = -60.0, 60.0  # mean(theta) increases with theta; bisect it to 0
    for _ in range(200):
        mid = (lo + hi) / 2
        if float(tilted(mid) @ d) < 0:
            lo = mid
        else:
            hi = mid
    return d, tilted((lo + hi) / 2)


def _slots(d: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Integer numbers of the 256 key slots for each outcome: near 256 p, with the sum of
    noise over the slots as close to 0 as integers allow (symmetric when p is)."""
    target = p * KEY_SPACE
    if len(d) == 1:
        return np.array([KEY_SPACE], dtype=np.int64)
    if np.array_equal(d, -d[::-1]) and np.allclose(p, p[::-1]):
        half = len(d) // 2  # symmetric: allocate the centre and the pairs (+d, -d) together
        pairs = np.floor(target[half + 1 :]).astype(np.int64)
        centre = KEY_SPACE - 2 * int(pairs.sum())
        while True:
            gain = (centre - 2 - target[half]) ** 2 - (centre - target[half]) ** 2
            gain += 2 * ((pairs + 1 - target[half + 1 :]) ** 2 - (pairs - target[half + 1 :]) ** 2)
            best = int(np.argmin(gain))
            if centre < 2 or gain[best] >= 0:
                break
            pairs[best] += 1
            centre -= 2
        return np.concatenate([pairs[::-1], [centre], pairs])
    n = np.floor(target).astype(np.int64)
    rest = np.argsort(-(target - n), kind="stable")[: KEY_SPACE - int(n.sum())]
    n[rest] += 1
    bias = int(n @ d)
    while bias:  # move one slot at a time while it brings the total noise closer to 0
        move: tuple[int, float, int, int] | None = None
        for i in np.flatnonzero(n):
            for j in range(len(d)):
                after = abs(bias + int(d[j] - d[i]))
                if i == j or after >= abs(bias):
                    continue
                cost = (n[i] - 1 - target[i]) ** 2 - (n[i] - target[i]) ** 2
                cost += (n[j] + 1 - target[j]) ** 2 - (n[j] - target[j]) ** 2
                if move is None or (after, cost) < move[:2]:
                    move = (after, float(cost), int(i), int(j))
        if move is None:
            break
        _, _, a, b = move
        n[a] -= 1
        n[b] += 1
        bias = int(n @ d)
    return n


@lru_cache(maxsize=16)
def ptable(max_noise: int, min_cell: int) -> np.ndarray:
    """The noise for each true count 0..cap (rows) and cell key 0..255 (columns), read-only.
    Within a row, keys map to outcomes in increasing order of noise, as in the ABS tables."""
    check_noise(max_noise, min_cell)
    rows = []
    for c in range(cap(max_noise, min_cell) + 1):
        d, p = _outcomes(c, max_noise, min_cell)
        rows.append(np.repeat(d, _slots(d, p)))
    table = np.vstack(rows).astype(np.int64)
    table.flags.writeable = False
    return table


def residual_bias(max_noise: int, min_cell: int) -> np.ndarray:
    """Mean noise over the 256 keys for each count 0..cap (what integer slots leave)."""
    return ptable(max_noise, min_cell).mean(axis=1)


def perturb_counts(
    counts: np.ndarray, cell_keys: np.ndarray, max_noise: int, min_cell: int
) -> np.ndarray:
    """The published value of each count (vectorised): c + ptable[min(c, cap), key]."""
    counts = np.asarray(counts, dtype=np.int64)
    keys = np.asarray(cell_keys, dtype=np.int64)
    if counts.shape != keys.shape:
        raise ValueError("one cell key per count")
    if (counts < 0).any() or (keys < 0).any() or (keys >= KEY_SPACE).any():
        raise ValueError("counts must be >= 0 and cell keys in [0, 256)")
    table = ptable(max_noise, min_cell)
    return counts + table[np.minimum(counts, table.shape[0] - 1), keys]
