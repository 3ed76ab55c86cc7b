"""Cox partial likelihood from risk-set sums: the numeric core shared by node and coordinator.

Rows are grouped by (stratum, distinct time) and ordered by stratum, then time descending, so
each risk set is a cumulative sum of the groups seen so far. Per group we keep `a` = Σ over all
rows at that time and `e` = Σ over its events of the moments w, w·x, w·xxᵀ (w = exp(xβ), upper
triangle of xxᵀ), plus d (events) and sx = Σ x over events. From these the Efron or Breslow
log-likelihood, score and information follow exactly, whether the groups were summed within one
node or added across nodes (unstratified Cox as in WebDISCO, Lu et al., JAMIA 2015).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np


def n_moments(p: int) -> int:
    """Columns of the moment block: w, w·x (p), w·xxᵀ upper triangle (p(p+1)/2)."""
    return 1 + p + p * (p + 1) // 2


def moment_matrix(x: np.ndarray) -> np.ndarray:
    """Per row: 1, x, upper triangle of xxᵀ (multiplied by w each round)."""
    p = x.shape[1]
    iu, ju = np.triu_indices(p)
    return np.hstack([np.ones((x.shape[0], 1)), x, x[:, iu] * x[:, ju]])


def symmetric(tri: np.ndarray, p: int) -> np.ndarray:
    """Full symmetric matrix from its upper-triangle vector."""
    out = np.zeros((p, p))
    iu, ju = np.triu_indices(p)
    out[iu, ju] = tri
    out[ju, iu] = tri
    return out


@dataclass
class Grouping:
    """How rows fall into (stratum, time) groups after sorting."""

    order: np.ndarray  # row permutation: stratum ascending, time descending
    starts: np.ndarray  # first sorted row of each group
    codes: np.ndarray  # stratum code of each group
    time: np.ndarray  # time of each group
    strata_starts: np.ndarray  # first group of each stratum


def group_rows(codes: np.ndarray, time: np.ndarray) -> Grouping:
    """Sort once by stratum then descending time and find group and stratum boundaries."""
    order = np.lexsort((-time, codes))
    c, t = codes[order], time[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
    starts = np.flatnonzero(new)
    gc = c[starts]
    snew = np.ones(len(starts), dtype=bool)
    snew[1:] = gc[1:] != gc[:-1]
    return Grouping(order, starts, gc, t[starts], np.flatnonzero(snew))


def group_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of consecutive sorted rows over each group."""
    if len(starts) == 0:
        return np.zeros((0, *values.shape[1:]))
    return np.add.reduceat(values, starts, axis=0)


@dataclass
class RiskGroups:
    """Group-level sums from which the partial likelihood is computed."""

    strata_starts: np.ndarray
    d: np.ndarray  # events per group
    a: np.ndarray  # (G, q) moments over all rows at the group's time
    e: np.ndarray  # (G, q) moments over the group's events
    sx: np.ndarray  # (G, p) Σ x over the group's events


def risk_sets(a: np.ndarray, strata_starts: np.ndarray) -> np.ndarray:
    """Cumulative sums of `a` within each stratum (groups are in descending time)."""
    out = np.empty_like(a)
    bounds = [*strata_starts.tolist(), len(a)]
    for lo, hi in pairwise(bounds):
        np.cumsum(a[lo:hi], axis=0, out=out[lo:hi])
    return out


def tie_sums(r0: np.ndarray, e0: np.ndarray, d: np.ndarray, ties: str) -> dict[str, np.ndarray]:
    """Per event time, sums over the d tied events of 1/φ, f/φ, 1/φ², f/φ², f²/φ² and log φ,
    where φ_l = R0 − f_l·E0 with f_l = l/d (Efron) or 0 (Breslow): the only per-event work, on
    scalars, so the vector and matrix terms stay per event time."""
    if ties == "breslow":
        zero = np.zeros_like(r0)
        inv = 1.0 / r0
        return {
            "s0": d * inv,
            "s1": zero,
            "s00": d * inv**2,
            "s01": zero,
            "s11": zero,
            "log": d * np.log(r0),
        }
    idx = np.repeat(np.arange(len(d)), d)
    f = (np.arange(len(idx)) - np.repeat(np.cumsum(d) - d, d)) / d[idx]
    inv = 1.0 / (r0[idx] - f * e0[idx])
    n = len(d)

    def total(v: np.ndarray) -> np.ndarray:
        return np.bincount(idx, weights=v, minlength=n)

    return {
        "s0": total(inv),
        "s1": total(f * inv),
        "s00": total(inv**2),
        "s01": total(f * inv**2),
        "s11": total(f * f * inv**2),
        "log": -total(np.log(inv)),
    }


def partial_likelihood(
    g: RiskGroups, beta: np.ndarray, ties: str
) -> tuple[float, np.ndarray, np.ndarray]:
    """Log partial likelihood, score and information (Efron or Breslow ties).

    With M_l = R − f_l·E for the l-th tied event, the sums over l of M1/φ, M2/φ and
    (M1/φ)(M1/φ)ᵀ expand into per-time moments times the scalar sums of `tie_sums`.
    """
    p = len(beta)
    r = risk_sets(g.a, g.strata_starts)
    ev = g.d > 0
    r, e, d, sx = r[ev], g.e[ev], g.d[ev].astype(np.int64), g.sx[ev]
    s = tie_sums(r[:, 0], e[:, 0], d, ties)
    r1, e1 = r[:, 1 : 1 + p], e[:, 1 : 1 + p]
    loglik = float(sx.sum(axis=0) @ beta - s["log"].sum())
    score = sx.sum(axis=0) - s["s0"] @ r1 + s["s1"] @ e1
    second = symmetric(s["s0"] @ r[:, 1 + p :] - s["s1"] @ e[:, 1 + p :], p)
    cross = (r1 * s["s01"][:, None]).T @ e1
    outer = (r1 * s["s00"][:, None]).T @ r1 - cross - cross.T + (e1 * s["s11"][:, None]).T @ e1
    return loglik, score, second - outer
