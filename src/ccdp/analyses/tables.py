"""A DataFrame as a table cell by cell: the rich Table of a result and the text of its values.

Beside the analyses (as their plots are, in `analyses.plots`) so that a result renders itself
without reaching up to the report floor; `report.console` and `report.html` build on them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from ccdp.analyses._render import pval
from ccdp.cohort.labels import column_label, value_label
from ccdp.cohort.view import view_variables
from ccdp.wire.levels import is_pandas, sort_key

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["pval"]  # p-values as journals print them, for the report and the pages too

UNDEFINED = "—"  # suppressed at a node, or not estimable


def cell_4sig(value: object) -> str:
    """A value for a terminal table: floats to 4 significant digits, '—' when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNDEFINED
    if is_pandas(value, "NA"):
        return UNDEFINED
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cell_3sig_grouped(value: Any) -> str:
    """A value for a report page: floats to 3 significant digits, from 10 000 on as whole
    numbers with thousands separators (person-years, populations); '—' when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNDEFINED
    if is_pandas(value, "NA"):
        return UNDEFINED
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.3g}"
    return str(value)


def frame_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """A rich Table of a DataFrame (index levels become leading columns), its headings and the
    values of its grouping columns (view variables) in words."""
    import pandas as pd

    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    table = Table(title=title)
    words = [str(c) in view_variables() and frame[c].dtype == object for c in frame.columns]
    for col in frame.columns:
        right = frame[col].dtype.kind in "iuf"
        table.add_column(escape(column_label(col)), justify="right" if right else "left")
    for row in frame.itertuples(index=False):
        table.add_row(
            *(
                escape(value_label(str(c), v) if w and isinstance(v, str) else cell_4sig(v))
                for c, w, v in zip(frame.columns, words, row, strict=True)
            )
        )
    return table


# One rounding rule per quantity, the same in the CLI, the report and the dashboard.
RATIO_DIGITS = 2  # hazard, odds and rate ratios and their CIs
SURVIVAL_PCT_DIGITS = 1  # survival probabilities, printed as percentages
YEARS_DIGITS = 2  # medians and their CIs, in years
NOT_REACHED = "not reached"  # a median the curve never reaches (it stays above one half)
NOT_ESTIMABLE = "not estimable"  # an interval of zero width, or an estimate with none


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def degenerate(low: float | None, high: float | None) -> bool:
    """An interval that says nothing: a bound missing or infinite, or zero width."""
    return not (_finite(low) and _finite(high)) or low == high


def ratio_ci(est: float | None, low: float | None, high: float | None) -> str:
    """A ratio with its CI, '0.85 (0.62–1.17)'; 'not estimable' when the interval is degenerate
    (a level without events, a covariate that does not vary)."""
    if est is None or low is None or high is None or not _finite(est) or degenerate(low, high):
        return NOT_ESTIMABLE
    d = RATIO_DIGITS
    return f"{est:.{d}f} ({low:.{d}f}–{high:.{d}f})"


def ratio(est: float | None) -> str:
    """A ratio alone (2 decimals), 'not estimable' when it is not finite."""
    return f"{est:.{RATIO_DIGITS}f}" if _finite(est) else NOT_ESTIMABLE


def survival_ci(value: float | None, low: float | None, high: float | None) -> str:
    """A survival probability as a percentage with its CI, '81.2% (76.0–85.5)'; the CI is 'not
    estimable' when it has zero width (no event yet: 100.0%), the whole is when the value is."""
    if value is None or not _finite(value):
        return NOT_ESTIMABLE
    d = SURVIVAL_PCT_DIGITS
    head = f"{100 * value:.{d}f}%"
    if low is None or high is None or degenerate(low, high):
        return f"{head} (CI {NOT_ESTIMABLE})"
    return f"{head} ({100 * low:.{d}f}–{100 * high:.{d}f})"


def years(days: float | None, year_days: float) -> str:
    """A median or its bound, in years (2 decimals); 'not reached' when there is none."""
    return NOT_REACHED if days is None else f"{days / year_days:.{YEARS_DIGITS}f}"


def years_ci(low: float | None, high: float | None, year_days: float) -> str:
    """A median's CI in years, '1.20–3.45' or '1.20–not reached'; 'not estimable' when neither
    bound is reached or both are the same day."""
    if (low is None and high is None) or (low is not None and low == high):
        return NOT_ESTIMABLE
    return f"{years(low, year_days)}–{years(high, year_days)}"


_LEVEL_TERM = re.compile(r"^(?P<var>[A-Za-z_][A-Za-z0-9_]*)\[(?P<level>.*)\]$")


def term_order(terms: Sequence[str]) -> list[int]:
    """Positions of a model's terms in reading order: each covariate where it first appears, its
    levels in their natural order (age bands by their lower bound: 1-4, 5-9, 10-14; ICCC groups
    I ... XII), whatever order the design matrix holds them in."""
    first: dict[str, int] = {}
    keys = []
    for i, term in enumerate(terms):
        m = _LEVEL_TERM.match(term)
        var, level = (m["var"], m["level"]) if m else (term, "")
        first.setdefault(var, i)
        keys.append((first[var], sort_key((level,)), i))
    return [k[-1] for k in sorted(keys)]
