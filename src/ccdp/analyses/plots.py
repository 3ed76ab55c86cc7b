"""Figures for analysis results: Kaplan–Meier curves and forest plots.

Built on `matplotlib.figure.Figure` directly (no pyplot global state), so they are safe in
servers and tests; callers save or display the returned Figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from ccdp.analyses.axes import at_risk_at, whole_ticks
from ccdp.analyses.tables import term_order
from ccdp.cohort.labels import group_label, model_term_label, term_label, value_label

# Twelve qualitative colours, distinct from one another (after Paul Tol's "muted" scheme, with
# an orange, a grey, a blue and black), the most distinct first, as most results have few
# groups; each dark enough to read as text on white (contrast at least 4.5:1, WCAG AA), as the
# numbers at risk are written in them. Up to 12 groups never share one.
PALETTE = (
    "#332288",
    "#C45210",
    "#117733",
    "#AA4499",
    "#00768F",
    "#8C5E00",
    "#C34B5F",
    "#2D7D6A",
    "#666666",
    "#882255",
    "#4A5DB8",
    "#000000",
)


def group_colour(i: int) -> str:
    """The colour of the i-th group (the palette repeats only past 12 groups)."""
    return PALETTE[i % len(PALETTE)]


def _step(table: list[Any], key: str) -> tuple[np.ndarray, np.ndarray]:
    """A right-continuous step curve starting at (0, 1)."""
    t = np.array([0.0, *[r.time for r in table]])
    y = np.array([1.0, *[getattr(r, key) for r in table]])
    return t, y


def km_plot(result: Any, years: bool = True, width: float = 8.0, height: float = 6.0) -> Figure:
    """Kaplan–Meier curves with 95% CI bands, censoring ticks and numbers at risk below."""
    fig = Figure(figsize=(width, height))
    ax, risk_ax = fig.subplots(2, 1, height_ratios=[4, 1], sharex=True)
    scale, xlabel = result.time_scale(years)
    t_max = max((g.table[-1].time for g in result.groups if g.table), default=1.0) / scale
    ticks = whole_ticks(t_max)
    for i, g in enumerate(result.groups):
        t, s = _step(g.table, "survival")
        _, lo = _step(g.table, "ci_low")
        _, hi = _step(g.table, "ci_high")
        name = group_label(g.group, result.by)
        (line,) = ax.step(
            t / scale, s, where="post", label=f"{name} (n={g.n})", color=group_colour(i)
        )
        ax.fill_between(t / scale, lo, hi, step="post", alpha=0.2, color=line.get_color())
        nxt = [r.at_risk for r in g.table[1:]] + [0]
        cens = [r for r, a in zip(g.table, nxt, strict=True) if r.at_risk - r.events > a]
        ax.plot(
            [r.time / scale for r in cens],
            [r.survival for r in cens],
            "|",
            color=line.get_color(),
            markersize=6,
        )
        for x, n in zip(ticks, at_risk_at(g.table, ticks * scale), strict=True):
            risk_ax.text(x, i, str(n), ha="center", va="center", color=line.get_color())
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel(f"{term_label(result.outcome)} (probability)")
    ax.legend(loc="lower left", frameon=False)
    ax.grid(alpha=0.3)
    names = [group_label(g.group, result.by) for g in result.groups]
    risk_ax.set_yticks(range(len(result.groups)), names)
    risk_ax.set_ylim(len(result.groups) - 0.5, -0.5)
    risk_ax.set_xticks(ticks)
    risk_ax.set_xlabel(xlabel)
    risk_ax.set_title("Number at risk", fontsize="small", loc="left")
    for side in ("top", "right", "bottom"):
        risk_ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def ratio_ticks(low: float, high: float) -> list[float]:
    """Ticks for a ratio axis on a log scale: powers of two around 1 that cover [low, high]
    (0.25, 0.5, 1, 2, 4), every other power when the range is wide; printed as plain numbers."""
    lo = min(1.0, low) if np.isfinite(low) and low > 0 else 1.0
    hi = max(1.0, high) if np.isfinite(high) else 1.0
    first, last = int(np.floor(np.log2(lo))), int(np.ceil(np.log2(hi)))
    step = 1 if last - first <= 8 else 2
    return [2.0**k for k in range(first - first % step, last + step, step)]


def tick_text(x: float) -> str:
    """A plain number for a ratio tick: 0.25, 0.5, 1, 2, 4 (no powers of ten)."""
    return f"{x:g}" if x >= 1e-3 else f"{x:.1e}"


def forest_plot(result: Any, width: float = 7.0) -> Figure:
    """Ratios (HR, OR or RR) with 95% CIs on a log axis, one row per term (in words, levels of
    a band in order), ticks at plain numbers."""
    terms = [c for c in result.coefficients if c.term != "(Intercept)"]
    rows = [terms[i] for i in term_order([c.term for c in terms])]
    fig = Figure(figsize=(width, 1.0 + 0.45 * len(rows)))
    ax = fig.subplots()
    key = "hr" if result.analysis == "cox" else "estimate"
    y = np.arange(len(rows))[::-1]
    est = np.array([getattr(c, key) for c in rows], dtype=float)
    lo = np.array([c.ci_low for c in rows], dtype=float)
    hi = np.array([c.ci_high for c in rows], dtype=float)
    ax.errorbar(est, y, xerr=[est - lo, hi - est], fmt="s", color="black", capsize=3)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    finite = np.concatenate([lo, hi, est])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    ticks = ratio_ticks(float(finite.min(initial=1.0)), float(finite.max(initial=1.0)))
    ax.set_xlim(ticks[0] / 1.15, ticks[-1] * 1.15)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([tick_text(t) for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yticks(y, [model_term_label(c.term) for c in rows])
    label = {"cox": "Hazard ratio", "logistic": "Odds ratio", "poisson": "Rate ratio"}
    ax.set_xlabel(f"{label.get(result.analysis, 'Ratio')} (95% CI, log scale)")
    fig.tight_layout()
    return fig


def incidence_plot(result: Any, width: float | None = None, height: float = 4.0) -> Figure:
    """Age-standardised rates as bars with their CIs, one bar per group; a rate a node's
    disclosure control withheld is a labelled gap ("suppressed"), never a zero bar."""
    labels = [", ".join(value_label(b, r[b]) for b in result.by) or "All" for r in result.rows]
    asr = np.array([np.nan if r["asr"] is None else r["asr"] for r in result.rows], dtype=float)
    lo = np.array([np.nan if r["asr"] is None else r["asr_ci_low"] for r in result.rows], float)
    hi = np.array([np.nan if r["asr"] is None else r["asr_ci_high"] for r in result.rows], float)
    fig = Figure(figsize=(width or max(4.0, 0.6 * len(labels) + 2), height))
    ax = fig.subplots()
    x = np.arange(len(labels))
    shown = ~np.isnan(asr)
    colours = [group_colour(0 if len(result.by) != 1 else i) for i in range(len(labels))]
    ax.bar(
        x[shown],
        asr[shown],
        yerr=[asr[shown] - lo[shown], hi[shown] - asr[shown]],
        capsize=3,
        color=[c for c, s in zip(colours, shown, strict=True) if s],
        ecolor="black",
    )
    for xi in x[~shown]:
        ax.text(xi, 0, "suppressed", rotation=90, ha="center", va="bottom", fontsize="small")
    ax.set_xticks(x, labels, rotation=45 if len(labels) > 4 else 0, ha="right")
    ax.set_ylabel(f"ASR per million ({term_label(result.standard)}, ages {result.ages})")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
