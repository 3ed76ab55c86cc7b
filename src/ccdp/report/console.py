"""Print results and node statuses as tables a statistician recognises (rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from ccdp.federation.study import StudyResult


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def frame_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """A rich Table of a DataFrame (index levels become leading columns)."""
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "iuf" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    return table


def print_study(result: StudyResult, console: Console | None = None) -> None:
    """The result table, then one line per node with its status and reason."""
    console = console or Console()
    if result.result is not None:
        console.print(f"[bold]{result.title}[/] ({result.analysis})")
        if hasattr(result.result, "__rich__"):
            console.print(result.result)
        else:
            console.print(frame_table(result.to_frame()))
    else:
        why = result.error or "too few nodes answered"
        console.print(f"[bold red]no result[/] ({result.analysis}): {why}", highlight=False)
    from ccdp.report.html import node_label

    nodes = result.node_frame()
    pairs = zip(nodes["status"], nodes["reason"], strict=True)
    nodes["status"] = [node_label(st, why) for st, why in pairs]
    console.print(frame_table(nodes, "nodes"))
