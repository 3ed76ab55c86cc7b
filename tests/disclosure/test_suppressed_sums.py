"""The sum of the suppressed cells of a line whose total is published (the total less the
released cells) must not be a small count: it is 0 or at least min_cell. Checked on the
catalogue example (ICCC groups of 3 and 1 children), as a property over random one- and two-way
tables with their margins, and by linear programming: the interval that the released cells,
margins and totals leave for each suppressed cell (non-negative counts)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from ccdp.disclosure.suppress import suppress
from ccdp.wire.summary import CountsPart

K = 5
values = st.sampled_from([0, 1, 2, 3, 4, 6, 9, 15, 40])


def _public(v: float) -> bool:
    """A sum another query would release (exact tier, zero cells released)."""
    return v == 0 or v >= K


def _release(true: np.ndarray, margins: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """Suppress a table (1-D: dims g; 2-D: dims r, c), with, if `margins`, its row margin (2-D)
    and its total as parts of the same answer. Returns the hidden cells, hidden row-margin
    cells and whether the total part is hidden."""
    two = true.ndim == 2
    shape = true.shape if two else (true.shape[0], 1)
    grid = true.reshape(shape)
    cells = [
        ({"r": i, "c": j} if two else {"g": i}) | {"n": int(grid[i, j])}
        for i in range(shape[0])
        for j in range(shape[1])
    ]
    parts = {"t": CountsPart(dims=["r", "c"] if two else ["g"], counts=["n"], cells=cells)}
    if margins:
        if two:
            rows = [{"r": i, "n": int(grid[i].sum())} for i in range(shape[0])]
            parts["rows"] = CountsPart(dims=["r"], counts=["n"], cells=rows)
        parts["tot"] = CountsPart(dims=[], counts=["n"], cells=[{"n": int(true.sum())}])
    out, _ = suppress(parts, K)
    hidden = np.zeros(shape, dtype=bool)
    for c in out["t"].cells:
        at = (c["r"], c["c"]) if two else (c["g"], 0)
        if c["n"] is None:
            hidden[at] = True
        else:
            assert c["n"] == grid[at] and _public(c["n"])
    assert (hidden | (grid == 0) | (grid >= K)).all()  # every small cell is hidden
    row_hidden = np.zeros(shape[0], dtype=bool)
    for c in out["rows"].cells if "rows" in out else []:
        row_hidden[c["r"]] = c["n"] is None
    total_hidden = margins and out["tot"].cells[0]["n"] is None
    return hidden.reshape(true.shape), row_hidden, bool(total_hidden)


def _lines(true: np.ndarray, margins: bool, row_hidden: np.ndarray, total_hidden: bool):
    """Masks (over the table's cells) of every set of cells whose sum is published: every row,
    column and total that another query would release, and the released margin parts."""
    if true.ndim == 1:
        if _public(true.sum()) or (margins and not total_hidden):
            yield np.ones(true.shape, dtype=bool)
        return
    for i in range(true.shape[0]):
        if _public(true[i].sum()) or (margins and not row_hidden[i]):
            row = np.zeros(true.shape, dtype=bool)
            row[i] = True
            yield row
    for j in range(true.shape[1]):
        if _public(true[:, j].sum()):
            column = np.zeros(true.shape, dtype=bool)
            column[:, j] = True
            yield column
    if margins and (not total_hidden or _public(true.sum())):
        yield np.ones(true.shape, dtype=bool)


def _derived(true: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the public margins of the table and of its row part alone give the sum of the cells
    in `mask` (known whatever is suppressed: the gate reports such cells as unprotectable)."""
    every = _lines(true, True, np.ones(true.shape[0], dtype=bool), True)  # row part: total
    rows = [line.reshape(-1) for line in every]
    if not rows:
        return False
    mat = np.array(rows, dtype=float)
    more = np.vstack([mat, mask.reshape(-1).astype(float)])
    return bool(np.linalg.matrix_rank(more) == np.linalg.matrix_rank(mat))


def _small_sums(true: np.ndarray, margins: bool) -> list[int]:
    """Sums, between 1 and K - 1, of the suppressed cells of a published line."""
    hidden, row_hidden, total_hidden = _release(true, margins)
    lines = _lines(true, margins, row_hidden, total_hidden)
    sums = [int(true[line & hidden].sum()) for line in lines]
    if margins and true.ndim == 2 and (not total_hidden or _public(true.sum())):
        # the row part's own line, less the rows that the public margins give anyway
        unknown = [i for i in np.flatnonzero(row_hidden) if not _derived(true, _row(true, i))]
        sums.append(int(true.sum(axis=1)[unknown].sum()))
    return [s for s in sums if 0 < s < K]


def _row(true: np.ndarray, i: int) -> np.ndarray:
    row = np.zeros(true.shape, dtype=bool)
    row[i] = True
    return row


def test_catalogue_example_sum_of_two_small_groups_is_protected():
    """ICCC V (3 children) and XII (1 child) suppressed: total less released cells was 4."""
    groups = {"I": 12, "II": 9, "III": 7, "V": 3, "XII": 1, "IX": 20}
    cells = [{"iccc": g, "n": n} for g, n in groups.items()]
    parts = {
        "by_group": CountsPart(dims=["iccc"], counts=["n"], cells=cells),
        "total": CountsPart(dims=[], counts=["n"], cells=[{"n": sum(groups.values())}]),
    }
    out, report = suppress(parts, K)
    total = out["total"].cells[0]["n"]
    assert total == 52
    shown = {c["iccc"]: c["n"] for c in out["by_group"].cells if c["n"] is not None}
    hidden = {c["iccc"] for c in out["by_group"].cells if c["n"] is None}
    assert {"V", "XII"} <= hidden
    left = total - sum(shown.values())
    assert left == 0 or left >= K
    assert hidden == {"V", "XII", "III"}  # the smallest released group is the complement
    assert report.secondary["by_group"] == 1
    # the table alone: its total is a margin another query would release
    alone, _ = suppress({"by_group": parts["by_group"]}, K)
    assert sum(groups.values()) - sum(c["n"] or 0 for c in alone["by_group"].cells) >= K


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 8), margins=st.booleans(), data=st.data())
def test_one_way_suppressed_sums_are_zero_or_large(n, margins, data):
    true = np.array(data.draw(st.lists(values, min_size=n, max_size=n)))
    assert _small_sums(true, margins) == []


@settings(max_examples=60, deadline=None)
@given(shape=st.tuples(st.integers(2, 5), st.integers(2, 4)), margins=st.booleans(), data=st.data())
def test_two_way_suppressed_sums_are_zero_or_large(shape, margins, data):
    n = shape[0] * shape[1]
    true = np.array(data.draw(st.lists(values, min_size=n, max_size=n))).reshape(shape)
    assert _small_sums(true, margins) == []


# -- intervals by linear programming -----------------------------------------------------------
def _intervals(true: np.ndarray, margins: bool) -> list[tuple[tuple[int, ...], int, float, float]]:
    """(cell, true value, min, max) of each suppressed cell over the non-negative tables that
    agree with every released cell and every published line."""
    hidden, row_hidden, total_hidden = _release(true, margins)
    flat = true.reshape(-1).astype(float)
    eqs = [np.eye(flat.size)[k] for k in np.flatnonzero(~hidden.reshape(-1))]
    eqs += [
        line.reshape(-1).astype(float) for line in _lines(true, margins, row_hidden, total_hidden)
    ]
    a = np.array(eqs) if eqs else np.zeros((0, flat.size))
    b = a @ flat
    out = []
    for k in np.flatnonzero(hidden.reshape(-1)):
        e = np.eye(flat.size)[k]
        kw = {"A_eq": a, "b_eq": b} if eqs else {}
        lo = linprog(e, bounds=(0, None), method="highs", **kw)
        hi = linprog(-e, bounds=(0, None), method="highs", **kw)
        top = np.inf if hi.status == 3 else -hi.fun
        cell = tuple(int(i) for i in np.unravel_index(k, true.shape))
        out.append((cell, int(flat[k]), float(lo.fun), float(top)))
    return out


def _leaks(true: np.ndarray, margins: bool) -> list[tuple[tuple[int, ...], int, float, float]]:
    """Suppressed cells pinned to one value, or non-zero cells confined below min_cell."""
    return [
        (cell, v, lo, hi)
        for cell, v, lo, hi in _intervals(true, margins)
        if hi - lo < 1e-7 or (v >= 1 and hi < K - 1e-7)
    ]


def test_lp_catalogue_example():
    true = np.array([12, 9, 7, 3, 1, 20])
    assert _leaks(true, margins=True) == []
    assert _leaks(true, margins=False) == []


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 8), margins=st.booleans(), data=st.data())
def test_lp_one_way_no_cell_pinned_or_confined(n, margins, data):
    true = np.array(data.draw(st.lists(values, min_size=n, max_size=n)))
    assert _leaks(true, margins) == []


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(2, 5), st.integers(2, 4)), data=st.data())
def test_lp_two_way_no_nonzero_cell_pinned(shape, data):
    """Two-way tables alone: no non-zero suppressed cell is pinned to its value, except where a
    small row or column sum follows from the public margins alone (see the known leaks below)."""
    n = shape[0] * shape[1]
    true = np.array(data.draw(st.lists(values, min_size=n, max_size=n))).reshape(shape)
    sums = [true[i].sum() for i in range(shape[0])] + [true[:, j].sum() for j in range(shape[1])]
    if sum(1 for s in sums if 0 < s < K) == 1:
        return  # a lone small margin is the total less the public ones: see below
    pinned = [x for x in _leaks(true, margins=False) if x[1] >= 1 and x[3] - x[2] < 1e-7]
    assert pinned == []


# Leaks the linear programme finds that the sum rule does not address (cell suppression alone
# cannot, or the audit is linear and ignores that counts are non-negative).
@pytest.mark.xfail(strict=True, reason="a small margin follows from the public margins alone")
def test_lp_known_leak_small_margin_derived_from_public_margins():
    # column 1 sums to 4 (not released), but the row sums (96, 15) and columns 0, 2, 3 are public
    true = np.array([[15, 1, 40, 40], [2, 3, 4, 6]])
    assert _leaks(true, margins=False) == []


@pytest.mark.xfail(strict=True, reason="non-negativity bounds: the audit is linear")
def test_lp_known_leak_nonnegativity_confines_a_cell():
    # cell (1, 2) = 1: row 1 leaves x10 + x12 = 5, column 0 and row 2 give x10 = 6 - x20 >= 1,
    # so x12 <= 4 although every published line's suppressed cells sum to 0 or >= 5
    true = np.array([[0, 4, 3], [4, 15, 1], [2, 1, 2]])
    assert _small_sums(true, margins=False) == []
    assert _leaks(true, margins=False) == []
