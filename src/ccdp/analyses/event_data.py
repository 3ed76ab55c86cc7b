"""Shared by the time-to-event and regression analyses: outcome columns, the time grid,
group labels, complete cases and the JSON wire form of arrays."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

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
