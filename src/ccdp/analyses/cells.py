"""Cells of the descriptive analyses: counts per group as a CountsPart, in the one level order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ccdp.analyses.node_data import NodeData, SummedCounts
from ccdp.wire.levels import native, sort_key
from ccdp.wire.records import CellSums, Unit
from ccdp.wire.summary import CountsPart


def counts_part(
    data: NodeData,
    frame: pd.DataFrame,
    by: list[str],
    unit: Unit = "tumours",
    count: str = "n",
) -> CountsPart:
    """Records per group of `by` (tumours: rows; patients: distinct patients) as a CountsPart
    whose cells are in `sort_key` order and whose node-side `records` say who each cell counts."""
    keys = data.record_keys(frame.index, unit)
    if not by:
        n = int(np.unique(keys).size)
        records = data.records(frame.index, unit=unit)
        return CountsPart(dims=[], counts=[count], cells=[{count: n}], records=records)
    codes, labels = groups(frame, by)
    per_cell = distinct_per_group(codes, keys, len(labels))
    cells = [
        {**{d: native(v) for d, v in zip(by, r, strict=True)}, count: int(per_cell[i])}
        for i, r in enumerate(labels)
    ]
    order = sorted(range(len(cells)), key=lambda i: sort_key(tuple(cells[i][d] for d in by)))
    position = np.empty(len(cells), dtype=np.int64)
    position[order] = np.arange(len(cells))
    return CountsPart(
        dims=list(by),
        counts=[count],
        cells=[cells[i] for i in order],
        records=data.records(frame.index, position[codes], unit),
    )


# column kinds whose values `pd.factorize` groups as `groupby(dropna=False)` does, one
# level per distinct value and one for every missing one (object, integers, floats, booleans)
_PLAIN = frozenset("Oiufb")


def groups(frame: pd.DataFrame, by: list[str]) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """Each row's group and each group's values of `by`: the groups of
    `frame.groupby(by, dropna=False, sort=False)` (codes by first appearance), found by
    factorising each column instead (a groupby costs milliseconds per call on a node's few
    hundred rows). Columns of another kind (categories, dates, nullable types) take the
    groupby itself."""
    columns = [frame[d] for d in by]
    if not all(isinstance(c.dtype, np.dtype) and c.dtype.kind in _PLAIN for c in columns):
        return _grouped(frame, by)
    combined = np.zeros(len(frame), dtype=np.int64)
    uniques = []
    span = 1
    for column in columns:
        codes, levels = pd.factorize(column, use_na_sentinel=False)
        span *= max(len(levels), 1)
        if span >= 2**62:  # the combined code would overflow: let pandas group
            return _grouped(frame, by)
        combined = combined * max(len(levels), 1) + codes
        uniques.append((np.asarray(levels, dtype=object), codes))
    group, _ = pd.factorize(combined)
    _, first = np.unique(group, return_index=True)
    labels = list(zip(*(levels[codes[first]] for levels, codes in uniques), strict=True))
    return group.astype(np.int64), labels


def _grouped(frame: pd.DataFrame, by: list[str]) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    grouped = frame.groupby(by, dropna=False, sort=False)
    rows = grouped.size().reset_index(name="_rows").to_dict("records")
    return grouped.ngroup().to_numpy(), [tuple(r[d] for d in by) for r in rows]


def distinct_per_group(codes: np.ndarray, keys: np.ndarray, n_groups: int) -> np.ndarray:
    """How many distinct keys each group holds (a groupby's `nunique`, by one sort)."""
    order = np.lexsort((keys, codes))
    c, k = codes[order], keys[order]
    new = np.ones(len(c), dtype=bool)
    new[1:] = (c[1:] != c[:-1]) | (k[1:] != k[:-1])
    return np.bincount(c[new], minlength=n_groups)


def summed_parts(
    data: NodeData, groupings: list[list[str]], unit: Unit = "tumours", count: str = "n"
) -> list[CountsPart] | None:
    """Under `counts: perturbed`, the CountsPart of each grouping computed by one aggregate at
    the node (cells as `counts_part` makes them, with `CellSums` instead of record sets), or
    None where the node's data cannot (in-memory frames: `counts_part` then)."""
    if not data.disclosure.perturbs or not isinstance(data, SummedCounts):
        return None
    salt = data.disclosure.salt
    frames = data.count_cells(groupings, unit, salt)
    if frames is None:
        return None
    parts = []
    for by, frame in zip(groupings, frames, strict=True):
        n = frame["n"].to_numpy(dtype=np.int64)
        keys = frame["cell_key"].to_numpy(dtype=np.int64)
        if not by:
            total = int(n.sum())
            key = int(keys.sum()) if len(keys) else 0
            records = CellSums.records(np.array([total]), np.array([key]), salt)
            parts.append(
                CountsPart(dims=[], counts=[count], cells=[{count: total}], records=records)
            )
            continue
        labels = {d: frame[d].tolist() for d in by}
        cells = [
            {**{d: native(labels[d][i]) for d in by}, count: int(n[i])} for i in range(len(frame))
        ]
        order = sorted(range(len(cells)), key=lambda i: sort_key(tuple(cells[i][d] for d in by)))
        records = CellSums.records(n[order], keys[order], salt)
        parts.append(
            CountsPart(
                dims=list(by), counts=[count], cells=[cells[i] for i in order], records=records
            )
        )
    return parts
