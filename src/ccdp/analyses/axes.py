"""What the survival plots' time axis shows, without drawing: where its ticks go and the numbers
at risk under them. Shared by the figures (`analyses.plots`, matplotlib) and the dashboard's own
plots (`web.plots`, SVG), and kept apart from the figures so that the hub, which imports the
dashboard, does not import matplotlib's figure machinery at start-up (0.8 s of a worker's start
on the tenth session's machine); matplotlib's tick rule is imported at the first tick placed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

AT_RISK_TICKS = 6


def whole_ticks(t_max: float, n: int = AT_RISK_TICKS) -> np.ndarray:
    """At most about `n` tick positions at whole numbers from 0 to t_max (whole years)."""
    top = max(t_max, 1)
    from matplotlib.ticker import MaxNLocator  # only when a tick is placed (module doc)

    locator = MaxNLocator(nbins=n - 1, integer=True, min_n_ticks=2)
    ticks = np.asarray(locator.tick_values(0.0, top), dtype=float)
    return ticks[(ticks >= 0) & (ticks <= top + 1e-9)]


def at_risk_at(table: list[Any], times: np.ndarray) -> list[int]:
    """Numbers at risk at given times: those whose time is at or after each tick."""
    t = np.array([r.time for r in table])
    n = np.array([r.at_risk for r in table])
    idx = np.searchsorted(t, times, side="left")
    return [int(n[i]) if i < len(n) else 0 for i in idx]
