"""Shared by the time-to-event and regression analyses: outcome columns, the time grid,
group labels, complete cases and the JSON wire form of arrays."""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from ccdp.analyses.base import AnalysisResult
from ccdp.cohort.labels import group_label, variable_label
from ccdp.wire.errors import AnalysisError, InsufficientData

TimeUnit = Literal["day", "week", "month"]
# os/efs from diagnosis; relapse_os/relapse_efs from the first relapse (relapsed tumours).
SurvivalOutcome = Literal["os", "efs", "relapse_os", "relapse_efs"]

# Days per grid step; a month is a twelfth of the Julian year (365.25 / 12).
UNIT_DAYS: dict[str, float] = {"day": 1.0, "week": 7.0, "month": 30.4375}
YEAR_DAYS = 365.25
ALL_GROUP = "all"


def survival_columns(outcome: str) -> tuple[str, str]:
    """The view's time and event columns for a time-to-event outcome (`os` -> os_time, os_event)."""
    return f"{outcome}_time", f"{outcome}_event"


def coarsen(time: np.ndarray, unit: str) -> np.ndarray:
    """Put times (days) on the policy grid, rounding up to the end of their week or month, so a
    node shares only grid times; results stay in days (grid points expressed in days)."""
    step = UNIT_DAYS[unit]
    if step == 1.0:
        return time.astype(float)
    return np.ceil(time.astype(float) / step) * step


def complete_cases(data: Any, columns: list[str], node: str) -> pd.DataFrame:
    """The view's rows with every needed column present (complete-case analysis)."""
    try:
        frame = data.view(list(dict.fromkeys(columns)))
    except KeyError as exc:
        raise AnalysisError(f"node {node}: the analysis view has no column(s) {exc}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AnalysisError(f"node {node}: the analysis view has no column(s) {missing}")
    frame = frame.dropna(subset=columns)
    if frame.empty:
        raise InsufficientData(f"node {node}: no rows with {', '.join(columns)} all present")
    return frame


def survival_arrays(
    frame: pd.DataFrame, outcome: str, unit: str, node: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (time on the grid, event 0/1) arrays for a time-to-event outcome."""
    tcol, ecol = survival_columns(outcome)
    time = frame[tcol].to_numpy(dtype=float)
    event = frame[ecol].to_numpy(dtype=float)
    if (time < 0).any():
        raise AnalysisError(f"node {node}: {tcol} has negative times")
    if not np.isin(event, (0.0, 1.0)).all():
        raise AnalysisError(f"node {node}: {ecol} must be 0/1")
    return coarsen(time, unit), event.astype(np.int64)


def group_labels(frame: pd.DataFrame, by: list[str]) -> np.ndarray:
    """One text label per row naming its group (values of `by` joined by ', '; 'all' if none)."""
    if not by:
        return np.full(len(frame), ALL_GROUP, dtype=object)
    parts = [frame[c].astype(str).to_numpy(dtype=object) for c in by]
    out = parts[0]
    for p in parts[1:]:
        out = out + ", " + p
    return out


def floats(a: np.ndarray) -> list[Any]:
    """An array as plain Python floats (nested lists) so JSON round-trips it exactly."""
    return np.asarray(a, dtype=float).tolist()


def finite_or_none(x: float) -> float | None:
    """JSON has no infinity: an undefined bound (median never reached) becomes null."""
    return float(x) if np.isfinite(x) else None


def times_method(grouped: bool, unit: str = "day") -> dict[str, Any]:
    """The `times` entries of a result's `method`: exact (on the policy's grid), or grouped into
    intervals by the nodes' disclosure rules (see `ccdp.disclosure.event_times`)."""
    if not grouped:
        return {"times": "exact"} if unit == "day" else {"times": "exact", "grid": unit}
    return {
        "times": "grouped",
        "grid": unit,
        "note": "each node told only the interval (at least its minimum cell size of children "
        "each) in which a child died or was censored, never a time inside it; estimated with "
        "methods for grouped times (life table for survival, ties at the interval's end for "
        "log-rank and Cox)",
    }


_COMPLETE = "complete cases: rows without a value of {} left out, so n can differ from other "
_COMPLETE_TAIL = "analyses of the same cohort"
_COMPLETE_RE = re.compile(r"^complete cases: rows without a value of (.*) left out, (so n .*)$")


def complete_case_note(columns: list[str]) -> str:
    """Why n may differ between analyses of one cohort: each uses its own complete cases. No
    count of the left-out rows (a count under min_cell would be a new small cell)."""
    return _COMPLETE.format(", ".join(columns)) + _COMPLETE_TAIL


def worded_complete_cases(note: str) -> str:
    """The complete-case note with its variables in words (the JSON keeps their names)."""
    m = _COMPLETE_RE.match(note)
    if m is None:
        return note
    names = ", ".join(variable_label(c) for c in m.group(1).split(", "))
    return f"complete cases: rows without a value of {names} left out, {m.group(2)}"


def excluded_nodes(summaries: dict[str, Any], groups: dict[str, set[str]]) -> dict[str, list[str]]:
    """Per group, the nodes that answered but sent nothing for it (they have none of it, or too
    few to release): known at the hub from the answers alone, so no new release at a node.
    `groups` maps each node to the groups it sent; groups no node excludes are left out."""
    every = sorted(set().union(*groups.values())) if groups else []
    out = {}
    for g in every:
        missing = sorted(n for n in summaries if g not in groups.get(n, set()))
        if missing:
            out[g] = missing
    return out


def method_text(method: dict[str, Any], by: list[str] | None = None) -> str:
    """A result's method note in words (CLI, HTML report, dashboard); one helper for every
    survival and regression result, groups (of `by`) and variables in words. Empty when there
    is nothing to say."""
    lines = []
    times = method.get("times")
    grid = method.get("grid")
    on = f" on a {grid}ly grid" if grid and grid != "day" else ""
    if method.get("fit") == "exact":
        lines.append("Fitted exactly: equal to the same model on the pooled rows.")
    if times == "exact":
        lines.append(f"Event times exact{on}, as pooling the rows would give.")
    elif times == "grouped":
        lines.append(
            f"Event times grouped{on}: {method.get('note')}. Close to, not equal to, pooling "
            "the exact rows."
        )
    for group, nodes in (method.get("excluded") or {}).items():
        name = group_label(group, by or [])
        lines.append(f"{name}: excludes {', '.join(nodes)} (none there, or too few to release).")
    if method.get("complete_cases"):
        note = worded_complete_cases(str(method["complete_cases"]))
        lines.append(note[:1].upper() + note[1:] + ".")
    return "\n".join(lines)


def noted(result: Any) -> str:
    """`result.method_text()` where the result has one, else empty (report and dashboard)."""
    fn = getattr(result, "method_text", None)
    return fn() if callable(fn) else ""


class NotedResult(AnalysisResult):
    """A result with its method note: `method` in JSON (`{"times": "exact"}`, `{"times":
    "grouped", ...}`, `excluded` nodes per group, `complete_cases`), `method_text()` in words."""

    method: dict[str, Any] = Field(default_factory=dict)  # empty: not said (older results)

    def method_text(self) -> str:
        by = getattr(self, "by", None)
        return method_text(self.method, by if isinstance(by, list) else None)
