"""Cells of the descriptive analyses: counts per group as a CountsPart, in the one level order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ccdp.analyses.node_data import NodeData
from ccdp.wire.levels import native, sort_key
from ccdp.wire.records import Unit
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
