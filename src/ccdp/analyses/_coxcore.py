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


def partial_likelihood(
    g: RiskGroups, beta: np.ndarray, ties: str
) -> tuple[float, np.ndarray, np.ndarray]:
    """Log partial likelihood, score and information (Efron or Breslow ties)."""
    p = len(beta)
    r = risk_sets(g.a, g.strata_starts)
    ev = g.d > 0
    r, e, d, sx = r[ev], g.e[ev], g.d[ev].astype(np.int64), g.sx[ev]
    loglik = float(sx.sum(axis=0) @ beta)
    score = sx.sum(axis=0)
    if ties == "breslow":
        weight = d.astype(float)
        phi = r[:, 0]
        m1, m2 = r[:, 1 : 1 + p], r[:, 1 + p :]
    else:
        # Efron: the l-th of d tied events sees the risk set minus l/d of the tied events' weight.
        idx = np.repeat(np.arange(len(d)), d)
        frac = (np.arange(len(idx)) - np.repeat(np.cumsum(d) - d, d)) / d[idx]
        weight = np.ones(len(idx))
        sub = r[idx] - frac[:, None] * e[idx]
        phi, m1, m2 = sub[:, 0], sub[:, 1 : 1 + p], sub[:, 1 + p :]
    loglik -= float(weight @ np.log(phi))
    mu = m1 / phi[:, None]
    score = score - weight @ mu
    info = symmetric(weight @ (m2 / phi[:, None]), p) - (mu * weight[:, None]).T @ mu
    return loglik, score, info
