"""Property: whatever the table, no suppressed cell is recoverable from the released cells and
every margin another query would release (row/column/total sums that are 0 or >= the threshold),
checked by an independent rank test rather than the module's own audit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ccdp.disclosure.suppress import suppress
from ccdp.wire.summary import CountsPart

K = 5
values = st.sampled_from([0, 1, 2, 3, 4, 6, 9, 15, 40])


def recoverable(true: np.ndarray, hidden: np.ndarray) -> list[tuple[int, int]]:
    """Hidden cells fixed by the public margins of `true` once released cells are known."""
    unknown = list(zip(*np.nonzero(hidden), strict=True))
    if not unknown:
        return []
    rows = []
    for axis in (0, 1):
        sums = true.sum(axis=1 - axis)
        for k, s in enumerate(sums):
            if s == 0 or s >= K:
                rows.append([1.0 if u[axis] == k else 0.0 for u in unknown])
    total = true.sum()
    if total == 0 or total >= K:
        rows.append([1.0] * len(unknown))
    mat = np.array(rows) if rows else np.zeros((0, len(unknown)))
    rank = np.linalg.matrix_rank(mat) if len(rows) else 0
    out = []
    for i, u in enumerate(unknown):
        e = np.zeros(len(unknown))
        e[i] = 1.0
        if len(rows) and np.linalg.matrix_rank(np.vstack([mat, e])) == rank:
            out.append(tuple(int(x) for x in u))
    return out


@settings(max_examples=80, deadline=None)
@given(shape=st.tuples(st.integers(2, 5), st.integers(2, 4)), data=st.data())
def test_two_way_tables_never_recoverable(shape, data):
    n = shape[0] * shape[1]
    true = np.array(data.draw(st.lists(values, min_size=n, max_size=n))).reshape(shape)
    cells = [
        {"r": i, "c": j, "n": int(true[i, j])} for i in range(shape[0]) for j in range(shape[1])
    ]
    out, _ = suppress({"t": CountsPart(dims=["r", "c"], counts=["n"], cells=cells)}, K)
    hidden = np.zeros(shape, dtype=bool)
    for c in out["t"].cells:
        if c["n"] is None:
            hidden[c["r"], c["c"]] = True
        else:
            assert c["n"] == true[c["r"], c["c"]] and (c["n"] == 0 or c["n"] >= K)
    assert (hidden | (true == 0) | (true >= K)).all()  # every small cell is hidden
    leaked = [(i, j) for i, j in recoverable(true, hidden) if 0 < true[i, j] < K]
    assert leaked == []
