"""A DataFrame as a table cell by cell: the rich Table of a result and the text of its values.

Beside the analyses (as their plots are, in `analyses.plots`) so that a result renders itself
without reaching up to the report floor; `report.console` and `report.html` build on them.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.table import Table

UNDEFINED = "—"  # suppressed at a node, or not estimable


def cell_4sig(value: object) -> str:
    """A value for a terminal table: floats to 4 significant digits, '—' when undefined."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return UNDEFINED
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cell_3sig_grouped(value: Any) -> str:
    """A value for a report page: floats to 3 significant digits, from 10 000 on as whole
    numbers with thousands separators (person-years, populations); '—' when undefined."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return UNDEFINED
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.3g}"
    return str(value)


def frame_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """A rich Table of a DataFrame (index levels become leading columns)."""
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "iuf" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(cell_4sig(v) for v in row))
    return table
