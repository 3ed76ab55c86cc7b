"""Primary and secondary cell suppression over the count tables a node is about to release.

Primary: a cell with a count in (0, min_cell) — and every zero under `zero_cells: suppress` — is
withheld. Secondary: a suppressed cell must not be recoverable by linear algebra from what is
released: the other cells of every count table in the same answer (tables with the same count
columns are taken as margins of one another, e.g. a cross-tab and its total) and every margin of
those tables that another query could obtain (all row, column and layer sums whose own value would
pass the primary rule). A cell is recoverable when its indicator vector lies in the row space of
the known equations; while one is, the smallest released cell that shares a margin with it is
suppressed too (zeros and large cells last). Tables too large for the exact audit fall back to
the classic rule: every margin group holds no suppressed cell or at least two. Last, the sum
rule: in every line whose total is published (a margin, or a released cell of a coarser table),
the suppressed cells must sum to 0 or at least min_cell, since the total less the released cells
is their sum; where they do not, the line's smallest released cell is suppressed too.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from ccdp.wire.levels import sort_key
from ccdp.wire.summary import CountsPart

MAX_EXACT_CELLS = 1500  # base grid size up to which the linear-algebra audit runs


@dataclass
class _Table:
    """A CountsPart laid out densely on its family's base grid."""

    name: str
    part: CountsPart
    axes: list[int]
    shape: tuple[int, ...]
    values: np.ndarray  # (cells, counts)
    present: np.ndarray  # cell was listed in the part
    of_base: np.ndarray  # base cell -> this table's cell
    original: list[dict[str, Any] | None]  # the part's own cell dicts, by dense index
    flat_of_cell: np.ndarray  # dense index of each of the part's cells, in the part's order
    suppressed: np.ndarray = field(init=False)
    primary: np.ndarray = field(init=False)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class SuppressionReport:
    """How many cells each part lost to primary and to secondary suppression."""

    primary: dict[str, int] = field(default_factory=dict)
    secondary: dict[str, int] = field(default_factory=dict)
    unprotectable: int = 0

    @property
    def total(self) -> int:
        return sum(self.primary.values()) + sum(self.secondary.values())


def _small(values: np.ndarray, min_cell: int, zero_release: bool) -> np.ndarray:
    """Rows of `values` (cells x counts) that the primary rule withholds."""
    small = np.asarray(((values > 0) & (values < min_cell)).any(axis=1))
    if not zero_release:
        small |= (values == 0).any(axis=1)
    return small


def _levels(parts: list[CountsPart], dims: list[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for d in dims:
        seen = {c.get(d) for p in parts if d in p.dims for c in p.cells}
        out[d] = sorted(seen, key=lambda v: sort_key((v,)))
    return out


def _layout(name: str, part: CountsPart, dims: list[str], levels: dict[str, list[Any]]) -> _Table:
    axes = [dims.index(d) for d in part.dims]
    shape = tuple(len(levels[d]) for d in part.dims)
    base_shape = tuple(len(levels[d]) for d in dims)
    index = {d: {_k(v): i for i, v in enumerate(levels[d])} for d in part.dims}
    n = int(np.prod(shape)) if shape else 1
    values = np.zeros((n, len(part.counts)), dtype=float)
    present = np.zeros(n, dtype=bool)
    original: list[dict[str, Any] | None] = [None] * n
    flat_of_cell = np.zeros(len(part.cells), dtype=np.int64)
    for i, cell in enumerate(part.cells):
        coords = tuple(index[d][_k(cell.get(d))] for d in part.dims)
        flat = int(np.ravel_multi_index(coords, shape)) if shape else 0
        values[flat] = [float(cell.get(c) or 0) for c in part.counts]
        present[flat] = True
        original[flat] = cell
        flat_of_cell[i] = flat
    base_coords = np.indices(base_shape).reshape(len(dims), -1) if dims else np.zeros((0, 1), int)
    of_base = (
        np.ravel_multi_index(tuple(base_coords[a] for a in axes), shape)
        if axes
        else np.zeros(base_coords.shape[1], dtype=int)
    )
    return _Table(
        name, part, axes, shape, values, present, np.asarray(of_base), original, flat_of_cell
    )


def _k(v: Any) -> tuple[str, Any]:
    return (type(v).__name__, v)


class _Family:
    """Count tables sharing count columns, as margins of one base grid."""

    def __init__(
        self,
        named: list[tuple[str, CountsPart]],
        min_cell: int,
        zero_release: bool,
        forced: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.dims: list[str] = []
        for _, p in named:
            self.dims += [d for d in p.dims if d not in self.dims]
        parts = [p for _, p in named]
        self.levels = _levels(parts, self.dims)
        self.base_shape = tuple(len(self.levels[d]) for d in self.dims)
        self.n_base = int(np.prod(self.base_shape)) if self.dims else 1
        self.min_cell, self.zero_release = min_cell, zero_release
        self.tables = [_layout(n, p, self.dims, self.levels) for n, p in named]
        for t in self.tables:
            t.primary = _small(t.values, min_cell, zero_release)
            mask = (forced or {}).get(t.name)
            if mask is not None and mask.any():
                t.primary[t.flat_of_cell[np.asarray(mask, dtype=bool)]] = True
            t.suppressed = t.primary.copy()
        self.margins = self._public_margins()
        self.unprotectable: set[tuple[int, int]] = self._hopeless()

    # -- the attacker's equations -------------------------------------------------------------
    def _public_margins(self) -> list[np.ndarray]:
        """Base-cell group maps (one row per group) of every margin another query could release."""
        rows: list[np.ndarray] = []
        self.margin_lines: list[tuple[set[int], np.ndarray, np.ndarray]] = []
        for t in self.tables:
            for drop in range(len(t.axes)):
                keep = [a for i, a in enumerate(t.axes) if i != drop]
                shape = tuple(self.base_shape[a] for a in keep)
                coords = np.indices(self.base_shape).reshape(len(self.dims), -1)
                gid = (
                    np.ravel_multi_index(tuple(coords[a] for a in keep), shape)
                    if keep
                    else np.zeros(self.n_base, dtype=int)
                )
                n_groups = int(np.prod(shape)) if shape else 1
                cell_gid = gid_for_cells(t, gid)
                sums = np.zeros((n_groups, t.values.shape[1]))
                np.add.at(sums, cell_gid, t.values)
                # a group of one cell is that cell: it is public only if the cell is released
                multi = np.bincount(cell_gid, minlength=n_groups) > 1
                public = ~_small(sums, self.min_cell, self.zero_release) & multi
                rows += [gid == g for g in np.flatnonzero(public)]
                self.margin_lines.append((set(keep), gid, public))
        return rows

    def _hopeless(self) -> set[tuple[int, int]]:
        """Cells that public margins alone determine (e.g. a table's only level of a dimension):
        suppressing them protects nothing, so they are neither targets nor complements."""
        if self.n_base > MAX_EXACT_CELLS or not self.margins:
            return set()
        null = _null_space(np.array(self.margins, dtype=float))
        out = set()
        for ti, t in enumerate(self.tables):
            ind = (t.of_base[None, :] == np.arange(t.size)[:, None]).astype(float)
            resid = np.linalg.norm(ind @ null, axis=1) if null.shape[1] else np.zeros(t.size)
            out |= {(ti, int(j)) for j in np.flatnonzero(resid < 1e-8)}
        return out

    def _pinned(self) -> np.ndarray:
        pinned = np.zeros(self.n_base, dtype=bool)
        for t in self.tables:
            if len(t.axes) == len(self.dims):
                pinned |= ~t.suppressed[t.of_base]
        return pinned

    def _nullspace(self) -> tuple[np.ndarray, np.ndarray]:
        """Unknown base cells and a basis of the null space of the known equations on them."""
        unknown = ~self._pinned()
        eqs = [r[unknown] for r in self.margins]
        for t in self.tables:
            for j in np.flatnonzero(~t.suppressed):
                eqs.append((t.of_base == j)[unknown])
        mat = np.array([e for e in eqs if e.any()], dtype=float)
        u = int(unknown.sum())
        if mat.size == 0:
            return unknown, np.eye(u)
        return unknown, _null_space(mat)

    def _exposed(self) -> list[tuple[int, int]]:
        """Suppressed cells (table, cell) that the known equations determine."""
        if self.n_base > MAX_EXACT_CELLS:
            return self._exposed_by_groups()
        unknown, null = self._nullspace()
        out = []
        for ti, t in enumerate(self.tables):
            for j in np.flatnonzero(t.suppressed):
                if (ti, j) in self.unprotectable:
                    continue
                v = (t.of_base == j)[unknown].astype(float)
                if null.shape[1] == 0 or np.linalg.norm(null.T @ v) < 1e-8:
                    out.append((ti, int(j)))
        return out

    def _exposed_by_groups(self) -> list[tuple[int, int]]:
        """Fallback for big tables: a suppressed cell alone in any margin group is exposed."""
        out = []
        for ti, t in enumerate(self.tables):
            sup = t.suppressed.reshape(t.shape) if t.shape else t.suppressed
            for ax in range(len(t.shape)):
                if t.shape[ax] < 2:
                    continue
                lonely = (sup.sum(axis=ax, keepdims=True) == 1) & sup
                for j in np.flatnonzero(lonely.reshape(-1)):
                    if (ti, int(j)) not in self.unprotectable:
                        out.append((ti, int(j)))
        return sorted(set(out))

    # -- complementary suppression -------------------------------------------------------------
    def _candidates(self, ti: int, j: int) -> list[tuple[int, int]]:
        """Released cells sharing a margin with cell j of table ti, cheapest first."""
        t = self.tables[ti]
        cands: list[tuple[int, int]] = []
        if t.shape:
            coords = np.unravel_index(j, t.shape)
            for ax in range(len(t.shape)):
                for level in range(t.shape[ax]):
                    c = [int(i) for i in coords]
                    c[ax] = level
                    k = int(np.ravel_multi_index(tuple(c), t.shape))
                    if not t.suppressed[k] and (ti, k) not in self.unprotectable:
                        cands.append((ti, k))
        fibre = t.of_base == j
        for oi, o in enumerate(self.tables):
            if oi == ti:
                continue
            for k in np.unique(o.of_base[fibre]):
                if not o.suppressed[k] and (oi, int(k)) not in self.unprotectable:
                    cands.append((oi, int(k)))

        return sorted(set(cands), key=self._cost)

    def _hypercubes(self, max_combos: int = 4000) -> None:
        """First pass (as the hypercube method): put every primary cell of a full-dimension
        table at a corner of the cheapest box whose corners are all suppressed, so that every
        row, column and layer through it holds two suppressed cells."""
        for t in self.tables:
            if len(t.axes) != len(self.dims) or not t.shape:
                continue
            cost = t.values.sum(axis=1)
            cost = np.where(cost == 0, cost.max(initial=0) + 1e6, cost)  # zeros: last resort
            ti = self.tables.index(t)
            hopeless = np.zeros(t.size, dtype=bool)
            hopeless[[j for i, j in self.unprotectable if i == ti]] = True
            free = [ax for ax, n in enumerate(t.shape) if n > 1]
            if not free:
                continue
            picks = np.array(list(itertools.product((0, 1), repeat=len(free))), dtype=bool)
            for j in sorted(np.flatnonzero(t.primary), key=lambda k: cost[k]):
                coords = np.array(np.unravel_index(j, t.shape))
                alts = [np.delete(np.arange(t.shape[ax]), coords[ax]) for ax in free]
                while np.prod([len(a) for a in alts]) > max_combos:
                    widest = max(range(len(alts)), key=lambda i: len(alts[i]))
                    alts[widest] = alts[widest][: len(alts[widest]) // 2]
                combos = np.stack(np.meshgrid(*alts, indexing="ij"), -1).reshape(-1, len(free))
                # corner coordinates: (combos, corners, dims)
                full = np.broadcast_to(coords, (len(combos), len(picks), len(t.shape))).copy()
                full[:, :, free] = np.where(picks[None], combos[:, None, :], coords[free])
                corners = np.ravel_multi_index(tuple(np.moveaxis(full, -1, 0)), t.shape)
                ok = ~hopeless[corners[:, 1:]].any(axis=1)
                if not ok.any():
                    continue
                totals = np.where(t.suppressed[corners], 0.0, cost[corners]).sum(axis=1)
                totals[~ok] = np.inf
                t.suppressed[corners[int(np.argmin(totals))]] = True

    def _small_sums(self) -> list[tuple[int, int]]:
        """One released cell to suppress in each line whose suppressed cells sum to 1 to
        min_cell - 1 (in any count column) while the line's total is published: a public
        margin, or a released cell of a table whose dimensions the line's table has."""
        lines = self.margin_lines + [(set(o.axes), o.of_base, ~o.suppressed) for o in self.tables]
        out: set[tuple[int, int]] = set()
        for ti, t in enumerate(self.tables):
            if not t.suppressed.any():
                continue
            known = np.zeros(t.size, dtype=bool)  # public margins alone give these
            known[[j for i, j in self.unprotectable if i == ti]] = True
            hidden = np.where((t.suppressed & ~known)[:, None], t.values, 0.0)
            shown = ~t.suppressed & ~known
            cost = np.where(shown, t.values.sum(axis=1), np.inf)
            cost[cost == 0] = np.inf  # a zero adds nothing to the sum
            for keep, gid, public in lines:
                if not keep <= set(t.axes):
                    continue
                g = gid_for_cells(t, gid)
                sums = np.zeros((public.size, hidden.shape[1]))
                np.add.at(sums, g, hidden)
                small = public & ((sums > 0) & (sums < self.min_cell)).any(axis=1)
                for grp in np.flatnonzero(small):
                    line = np.flatnonzero(g == grp)
                    best = line[np.argmin(cost[line])]
                    if np.isfinite(cost[best]):
                        out.add((ti, int(best)))
        return sorted(out)

    def protect(self, trials: int = 6) -> None:
        """Add complementary suppressions until no suppressed cell is recoverable and no line
        with a published total has suppressed cells summing to 1 to min_cell - 1.

        Hypercubes first; then, while the exact audit still finds a recoverable cell, each
        step tries the cheapest few released cells that share a margin with an exposed
        cell and keeps the one that leaves the fewest cells exposed (ties: the smallest count).
        Then the sum rule adds the smallest released cell of each line whose suppressed cells
        sum to a small count, and the audit runs again, until neither adds a cell.
        """
        if self.n_base <= MAX_EXACT_CELLS * 4:
            self._hypercubes()
        while True:
            self._protect_linear(trials)
            more = self._small_sums()
            if not more:
                return
            for ti, j in more:
                self.tables[ti].suppressed[j] = True

    def _protect_linear(self, trials: int) -> None:
        exposed = self._exposed()
        while exposed:
            cands = sorted({c for e in exposed for c in self._candidates(*e)}, key=self._cost)
            if not cands:
                self.unprotectable.update(exposed)
                return
            best: tuple[int, int] | None = None
            best_left: list[tuple[int, int]] = exposed
            for c in cands[:trials]:
                self.tables[c[0]].suppressed[c[1]] = True
                left = self._exposed()
                self.tables[c[0]].suppressed[c[1]] = False
                if best is None or len(left) < len(best_left):
                    best, best_left = c, left
                if not left:
                    break
            assert best is not None  # cands is not empty
            self.tables[best[0]].suppressed[best[1]] = True
            exposed = best_left

    def _cost(self, c: tuple[int, int]) -> tuple[bool, float, int, int]:
        """Zeros and big cells make poor complements: prefer the smallest non-zero count."""
        value = float(self.tables[c[0]].values[c[1]].sum())
        return (value == 0, value, c[0], c[1])

    def released(self, t: _Table) -> CountsPart:
        """The part as it may leave the node: suppressed counts become None."""
        cells = []
        shape = t.shape
        part_dims = t.part.dims
        for j in range(t.size):
            if not t.present[j] and not (t.suppressed[j] or not self.zero_release):
                continue
            coords = np.unravel_index(j, shape) if shape else ()
            cell: dict[str, Any] = dict(t.original[j] or {})
            cell.update({d: self.levels[d][int(i)] for d, i in zip(part_dims, coords, strict=True)})
            for ci, c in enumerate(t.part.counts):
                v = t.values[j, ci]
                cell[c] = None if t.suppressed[j] else int(v) if float(v).is_integer() else v
            cells.append(cell)
        return CountsPart(
            dims=list(part_dims), counts=list(t.part.counts), cells=cells, **_extra(t.part)
        )


def _null_space(mat: np.ndarray) -> np.ndarray:
    """Orthonormal basis of {x : mat @ x = 0}, from the eigenvectors of the small Gram matrix
    (the equations outnumber the unknowns, so this is far cheaper than a full SVD)."""
    gram = mat.T @ mat
    vals, vecs = np.linalg.eigh(gram)
    return vecs[:, vals <= 1e-9 * max(1.0, float(vals.max(initial=0.0)))]


def gid_for_cells(t: _Table, gid: np.ndarray) -> np.ndarray:
    """Margin group of each of table t's cells (via any base cell that maps to it)."""
    first = np.full(t.size, -1, dtype=int)
    first[t.of_base[::-1]] = np.arange(len(t.of_base))[::-1]
    return gid[first]


def _extra(part: CountsPart) -> dict[str, Any]:
    """Extra dataclass fields of a CountsPart beyond dims/counts/cells (kept as they are)."""
    skip = ("dims", "counts", "cells")
    names = [f.name for f in fields(part) if f.name not in skip]
    return {n: getattr(part, n) for n in names}


def suppress(
    parts: dict[str, CountsPart],
    min_cell: int,
    zero_cells: str = "release",
    forced: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, CountsPart], SuppressionReport]:
    """Apply primary and secondary suppression to every count table of one answer. `forced`
    marks, per part and in its cell order, cells withheld whatever their size (the ledger's
    refusals); they are protected by complements like small cells."""
    # the audit makes many tiny LAPACK calls: BLAS threads only add contention there
    with _blas().limit(limits=1):
        return _suppress(parts, min_cell, zero_cells, forced)


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's BLAS libraries, found once (finding them reads the process's memory map,
    which cost more than a small table's whole suppression)."""
    return ThreadpoolController()


def _suppress(
    parts: dict[str, CountsPart],
    min_cell: int,
    zero_cells: str,
    forced: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, CountsPart], SuppressionReport]:
    zero_release = zero_cells == "release"
    report = SuppressionReport()
    out: dict[str, CountsPart] = {}
    families: dict[tuple[str, ...], list[tuple[str, CountsPart]]] = {}
    for name, part in parts.items():
        if part.counts:
            families.setdefault(tuple(part.counts), []).append((name, part))
        else:
            out[name] = part
    for named in families.values():
        groups = [named]
        dims = {d for _, p in named for d in p.dims}
        levels = _levels([p for _, p in named], sorted(dims))
        if len(named) > 1 and np.prod([max(1, len(v)) for v in levels.values()]) > MAX_EXACT_CELLS:
            groups = [[x] for x in named]
        for group in groups:
            fam = _Family(group, min_cell, zero_release, forced)
            fam.protect()
            report.unprotectable += sum(
                1 for ti, j in fam.unprotectable if fam.tables[ti].suppressed[j]
            )
            for t in fam.tables:
                out[t.name] = fam.released(t)
                report.primary[t.name] = int(t.primary.sum())
                report.secondary[t.name] = int((t.suppressed & ~t.primary).sum())
    return {n: out[n] for n in parts}, report


__all__ = ["SuppressionReport", "suppress"]
