"""Text rendering of results: rich tables, also as plain strings for `str(result)`."""

from __future__ import annotations

import io
import math
from typing import Any

from rich.console import Console


def to_text(renderable: Any, width: int = 100) -> str:
    """Render a rich object to a plain string (no colour codes), as `print(result)` shows."""
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False).print(renderable)
    return buf.getvalue().rstrip("\n")


def num(x: float | None, digits: int = 3) -> str:
    """A number for a table cell: '—' when undefined, compact otherwise."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def pval(p: float | None) -> str:
    """P-values as journals print them."""
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
