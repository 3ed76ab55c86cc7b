"""Fellegi-Sunter weights for segmented encodings, estimated per run by EM on the candidate pairs.

Each candidate pair's comparison vector holds one agreement level per segment (its Dice cut by
the segment's `cuts`, plus a level for "a side has no bits there", such as an unknown day). The
model (Fellegi and Sunter 1969; EM after Winkler 1988 and Jaro 1989): m = P(pattern | match),
u = P(pattern | non-match), and a prior share of matches. EM runs on the counts of each distinct
comparison vector (a few hundred at most), so a run of ten million pairs costs milliseconds.

m is the schema's calibration (how often registries disagree on a field); u, over joint groups of
segments that may depend on each other among non-matches, and the share of matches are fitted.
A weak prior on u (`PRIOR_PAIRS` pseudo-pairs, ∝ 4^-level) keeps tiny runs sensible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_FLOOR = 1e-12
PRIOR_PAIRS = 20.0
"""Pseudo-pairs of the u prior: a handful, so that a run of a few records (where EM has almost
nothing to fit) still finds agreement on every field unlikely among different children, and a
run of thousands of pairs follows its data."""


@dataclass(frozen=True)
class Model:
    """Per comparison pattern: m (share of true pairs showing it, from the fixed calibration),
    u (share of non-matches, fitted), the match probability; the share of matches among the
    candidate pairs, and how many EM iterations it took."""

    m: np.ndarray
    u: np.ndarray
    probability: np.ndarray
    prior: float
    iterations: int

    @property
    def weights(self) -> np.ndarray:
        """log2 likelihood ratio m/u of each pattern: the Fellegi-Sunter match weight."""
        return np.log2(self.m / self.u)


def pattern_table(levels: list[int]) -> np.ndarray:
    """Every comparison vector, one row per pattern code: code = Σ level[s] · stride[s]."""
    grids = np.meshgrid(*[np.arange(n) for n in levels], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)


def strides(levels: list[int]) -> np.ndarray:
    """Multipliers that turn per-segment levels into the pattern code of `pattern_table`."""
    out = np.ones(len(levels), dtype=np.int64)
    for s in range(len(levels) - 2, -1, -1):
        out[s] = out[s + 1] * levels[s + 1]
    return out


def _cells(table: np.ndarray, levels: list[int], joint: tuple[str, ...]) -> list[np.ndarray]:
    """For each joint group of segments, each pattern's cell (its levels in those segments)."""
    out = []
    for label in dict.fromkeys(joint):
        segs = [s for s, j in enumerate(joint) if j == label]
        out.append(np.ravel_multi_index(tuple(table[:, s] for s in segs),
                                        tuple(levels[s] for s in segs)))  # fmt: skip
    return out


def _prior_u(n: int) -> np.ndarray:
    """The u prior of a segment with n - 1 Dice levels and a missing one: different children
    lean to the bottom levels (∝ 4^-level), missing is rare."""
    u = np.append(4.0 ** -np.arange(n - 1, dtype=np.float64), 0.0)
    u = u / u.sum() * 0.99
    u[-1] = 0.01
    return u


def _prior_cells(levels: list[int], joint: tuple[str, ...]) -> list[np.ndarray]:
    """The u prior of each joint group's cells: the product of its segments' priors."""
    out = []
    for label in dict.fromkeys(joint):
        cell = np.ones(1)
        for s, j in enumerate(joint):
            if j == label:
                cell = np.outer(cell, _prior_u(levels[s])).ravel()
        out.append(cell)
    return out


def fit(
    counts: np.ndarray,
    levels: list[int],
    m: tuple[tuple[float, ...], ...],
    joint: tuple[str, ...],
    iterations: int = 500,
    tol: float = 1e-10,
) -> Model:
    """EM on the counts of each pattern code (`np.bincount` of the candidate pairs' codes): m
    stays the calibration's (product over segments), u is a product over joint groups of free
    distributions, and the share of matches is fitted with it."""
    table = pattern_table(levels)
    m_seg = [np.asarray(x, dtype=np.float64) / sum(x) for x in m]
    m_pat = np.prod([m_seg[s][table[:, s]] for s in range(len(levels))], axis=0)
    cells = _cells(table, levels, joint)
    c = counts.astype(np.float64)
    total = max(c.sum(), 1.0)
    u0 = _prior_cells(levels, joint)
    u_grp = [(np.bincount(cell, c, len(p0)) + PRIOR_PAIRS * p0) / (total + PRIOR_PAIRS)
             for cell, p0 in zip(cells, u0, strict=True)]  # fmt: skip
    prior, it = 0.01, 0
    for it in range(1, iterations + 1):  # noqa: B007  (the count is reported)
        u_pat = np.prod([u[cell] for u, cell in zip(u_grp, cells, strict=True)], axis=0)
        g = prior * m_pat / (prior * m_pat + (1 - prior) * u_pat)
        cu = c * (1 - g)
        new_prior = float((c * g).sum() / total)
        u_grp = [(np.bincount(cell, cu, len(p0)) + PRIOR_PAIRS * p0) / (cu.sum() + PRIOR_PAIRS)
                 for cell, p0 in zip(cells, u0, strict=True)]  # fmt: skip
        done = abs(new_prior - prior) < tol
        prior = min(max(new_prior, _FLOOR), 1 - 1e-6)
        if done:
            break
    u_pat = np.prod([u[cell] for u, cell in zip(u_grp, cells, strict=True)], axis=0)
    prob = prior * m_pat / (prior * m_pat + (1 - prior) * u_pat)
    return Model(m_pat, u_pat, prob, prior, it)
