"""Helpers shared by the descriptive analyses: grouping-variable checks and JSON-safe cells."""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from ccdp.cohort.view import public_variables


def check_variables(names: list[str], what: str) -> list[str]:
    """Refuse names that are not public view variables (message lists what exists)."""
    allowed = public_variables()
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(
            f"{what}: unknown variable(s) {', '.join(map(repr, bad))}; "
            f"the analysis view has: {', '.join(allowed)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: a variable is named twice")
    return names


def native(value: Any) -> Any:
    """A JSON-ready Python value: NaN/NaT -> None, numpy scalars -> int/float/str, dates -> ISO."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
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


def _value_key(v: Any) -> tuple[Any, ...]:
    """ICCC-3 groups and subgroups (I, II, ..., XII; Ia, Ib, ...) in their numeric order."""
    if isinstance(v, str) and (m := _ICCC.match(v)):
        return (0, _ROMAN[m.group(1)], m.group(2))
    return (1, 0, v)


def sort_key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Order cells by their grouping values, missing values last, mixed types by text."""
    return tuple(
        (v is None, str(type(v).__name__), _value_key(v) if v is not None else (1, 0, 0))
        for v in values
    )


def group_counts(frame: pd.DataFrame, by: list[str], value: str | None = None) -> list[dict]:
    """Rows per group of `by` (n = rows, or distinct `value`), as JSON-ready cell dicts."""
    if not by:
        n = len(frame) if value is None else frame[value].nunique()
        return [{"n": int(n)}]
    grouped = frame.groupby(by, dropna=False, sort=False)
    sizes = grouped.size() if value is None else grouped[value].nunique()
    out = sizes.reset_index(name="n")
    cells = [{**{d: native(r[d]) for d in by}, "n": int(r["n"])} for r in out.to_dict("records")]
    return sorted(cells, key=lambda c: sort_key(tuple(c[d] for d in by)))
