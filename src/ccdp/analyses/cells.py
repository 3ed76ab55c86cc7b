"""Cells of the descriptive analyses: counts per group as a CountsPart, in the one level order."""

from __future__ import annotations

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
    grouped = frame.groupby(by, dropna=False, sort=False)
    codes = grouped.ngroup().to_numpy()
    per_cell = (
        pd.DataFrame({"code": codes, "key": keys}).groupby("code")["key"].nunique().sort_index()
    )
    labels = grouped.size().reset_index(name="_rows")
    cells = [
        {**{d: native(r[d]) for d in by}, count: int(per_cell.iloc[i])}
        for i, r in enumerate(labels.to_dict("records"))
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
