"""The one order of levels and JSON-safe cell values, for every table that crosses a node's
boundary: ICCC-3 groups in numeric order, bands by their lower bound, declared levels in their
meaningful order; the gate, the analyses and the catalogue sort cells the same way."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from typing import Any

from ccdp.cohort.view import level_order


def is_pandas(value: object, name: str) -> bool:
    """Whether `value` is pandas' `name` (NA, NaT) without importing pandas: a value can only
    be one once pandas is loaded, and a hub's worker starts without it (~0.3 s)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and value is getattr(pandas, name)


def native(value: Any) -> Any:
    """A JSON-ready Python value: NaN/NaT -> None, numpy scalars -> int/float/str, dates -> ISO."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if is_pandas(value, "NaT"):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()[:10] if hasattr(value, "hour") else value.isoformat()
    if hasattr(value, "item"):
        return native(value.item())
    return value


_ROMAN = {
    "I": 1,
    "II": 2,
    "III": 3,
    "IV": 4,
    "V": 5,
    "VI": 6,
    "VII": 7,
    "VIII": 8,
    "IX": 9,
    "X": 10,
    "XI": 11,
    "XII": 12,
}
_ICCC = re.compile(r"^(XII|XI|X|IX|VIII|VII|VI|V|IV|III|II|I)([a-f]?)$")
_BAND = re.compile(r"^(\d+)(?:-(\d+))?$")  # age groups 0, 1-4, 10-14; periods 2005-2009


def _value_key(v: Any) -> tuple[Any, ...]:
    """ICCC-3 groups and subgroups (I, II, ..., XII; Ia, Ib, ...) in their numeric order, and
    numeric bands (age groups, diagnosis periods) by their lower bound, not as text."""
    if isinstance(v, str) and (m := _ICCC.match(v)):
        return (0, _ROMAN[m.group(1)], m.group(2))
    if isinstance(v, str) and (m := _BAND.match(v)):
        return (0.5, int(m.group(1)), v)
    return (1, 0, v)


def label_key(label: str, by: Sequence[str] = ()) -> tuple[Any, ...]:
    """Order of a joined group label ("I, male"): each part in its variable's declared level
    order when `by` names a variable that lists its levels (very_early, early, late), else in
    its natural order."""
    parts = tuple(label.split(", "))
    ranks = []
    for i, part in enumerate(parts):
        order = level_order(by[i]) if i < len(by) else None
        ranks.append((0, order.index(part)) if order and part in order else (1, 0))
    return (tuple(ranks), sort_key(parts))


def sort_key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Order cells by their grouping values, missing values last, mixed types by text."""
    return tuple(
        (v is None, str(type(v).__name__), _value_key(v) if v is not None else (1, 0, 0))
        for v in values
    )
