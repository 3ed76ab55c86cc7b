"""Kaplan–Meier survival by group, pooled exactly from the nodes' event-time tables.

Each node groups its times into intervals (start, end] of at least min_cell subjects leaving
(`ccdp.disclosure.event_times`; exact where an interval holds one time, as when min_cell is 1)
and sends, per group and interval, its end, start and the number of events and censorings; the
coordinator adds the tables. Grouped data are estimated as such (Kalbfleisch & Prentice, *The
Statistical Analysis of Failure Time Data*, 2nd ed. 2002, §1.3, §4.6) as the actuarial life
table: steps only at interval ends, a grouped interval's censorings counting half in the number
at risk for its deaths, Greenwood's variance with that number; where nodes grouped differently,
each node's interval spread over the pooled times inside it (`spread_counts`). Nothing is
placed inside an interval by a node. A landmark (1, 3, 5 years)
that falls strictly inside a node's grouped interval with events is not known at that time, so
it is interpolated linearly between the curve's values at the interval's ends, the life-table
(actuarial) convention of Cutler & Ederer (J Chronic Dis 1958;8:699–712) — never the value
before the interval, which would claim no death happened in it. With exact times (every interval
one time) the estimate equals lifelines' KaplanMeierFitter on the pooled rows. Confidence
intervals use the
exponential Greenwood (log(-log)) transform, as lifelines' KaplanMeierFitter and R's
`survfit(conf.type = "log-log")`. The median's interval is where the interval bands cross 0.5
(the Brookmeyer–Crowley construction with the log(-log) transform; identical to lifelines'
`median_survival_times(kmf.confidence_interval_)`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from scipy.special import ndtri

from ccdp.analyses.base import Analysis, AnalysisParams, AnalysisResult, Done, plural
from ccdp.analyses.event_data import (
    UNIT_DAYS,
    YEAR_DAYS,
    NotedResult,
    SurvivalOutcome,
    TimeUnit,
    complete_case_note,
    complete_cases,
    excluded_nodes,
    finite_or_none,
    group_labels,
    survival_arrays,
    survival_columns,
    times_method,
)
from ccdp.analyses.node_data import NodeData
from ccdp.analyses.tables import NOT_REACHED, survival_ci, years_ci
from ccdp.analyses.tables import years as years_text
from ccdp.cohort.labels import group_label, term_label, variable_label
from ccdp.cohort.variables import check_variables
from ccdp.wire.errors import AnalysisError
from ccdp.wire.levels import label_key
from ccdp.wire.summary import EventTimesPart, PartSpec, Summary

Z95 = float(ndtri(0.975))
LANDMARK_YEARS = (1, 3, 5)


class KMParams(AnalysisParams):
    """Kaplan–Meier: `outcome` os|efs, optional grouping `by`, the node's time grid."""

    outcome: SurvivalOutcome = "os"
    by: list[str] = Field(default_factory=list, max_length=3)
    time_unit: TimeUnit = "day"

    @field_validator("by")
    @classmethod
    def _categorical(cls, v: list[str]) -> list[str]:
        return check_variables(v)


class KMRow(BaseModel):
    time: float
    at_risk: int
    events: int
    survival: float
    ci_low: float
    ci_high: float


class Landmark(BaseModel):
    years: float
    survival: float | None
    ci_low: float | None
    ci_high: float | None


class KMGroup(BaseModel):
    group: str
    n: int
    events: int
    median: float | None
    median_ci_low: float | None
    median_ci_high: float | None
    survival_at: list[Landmark]
    table: list[KMRow]


class KMResult(NotedResult):
    """Survival curves by group; times in days; `method` says whether times were exact or
    grouped, which nodes each group excludes and why n may differ from other analyses."""

    analysis: str = "km"
    outcome: str
    by: list[str]
    time_unit: str
    groups: list[KMGroup]

    def time_scale(self, years: bool) -> tuple[float, str]:
        """Days per plotted unit and the axis label: years (or days) since diagnosis, or since
        the first relapse for the relapse outcomes."""
        origin = "first relapse" if self.outcome.startswith("relapse_") else "diagnosis"
        return (YEAR_DAYS, f"years since {origin}") if years else (1.0, f"days since {origin}")

    def group_heading(self) -> str:
        """The group column's heading: the grouping variables in words."""
        return ", ".join(variable_label(b) for b in self.by) or "Group"

    def summary_rows(self) -> list[dict[str, str]]:
        """Per group (in words): n, events, median with its 95% CI in years and the landmark
        survivals (%) with theirs, formatted once for the CLI, the report and the dashboard."""
        rows = []
        for g in self.groups:
            row = {
                self.group_heading(): group_label(g.group, self.by),
                "n": str(g.n),
                "events": str(g.events),
                "median (years)": years_text(g.median, YEAR_DAYS),
                "95% CI": years_ci(g.median_ci_low, g.median_ci_high, YEAR_DAYS),
            }
            for m in g.survival_at:
                row[landmark_heading(m.years)] = with_ci(m.survival, m.ci_low, m.ci_high)
            rows.append(row)
        return rows

    def __rich__(self) -> Group:
        grid = "" if self.time_unit == "day" else f"; times on a {self.time_unit}ly grid"
        outcome = term_label(self.outcome)
        head = Table(
            title=f"Kaplan–Meier: {outcome} (medians in years{grid}; 95% CI log-log)",
            caption=f"{NOT_REACHED}: the curve stays above 50%"
            + (f"\n{escape(self.method_text())}" if self.method_text() else ""),
        )
        rows = self.summary_rows()
        columns = (self.group_heading(), "n", "events", "median (years)", "95% CI")
        for i, col in enumerate(columns):
            head.add_column(escape(col), justify="left" if i == 0 else "right")
        for row in rows:
            head.add_row(*(escape(row[c]) for c in columns))
        land = Table(title=f"{outcome} at 1, 3 and 5 years")
        for i, col in enumerate((self.group_heading(), "years", "survival, % (95% CI)")):
            land.add_column(escape(col), justify="left" if i == 0 else "right")
        for g, row in zip(self.groups, rows, strict=True):
            for i, m in enumerate(g.survival_at):
                land.add_row(
                    escape(row[columns[0]]) if i == 0 else "",
                    f"{m.years:g}",
                    row[landmark_heading(m.years)],
                )
        return Group(head, land)

    def brief(self) -> str:
        subjects = sum(g.n for g in self.groups)
        return f"{plural(len(self.groups), 'group')}, {plural(subjects, 'subject')}"

    def _summary_frame(self) -> pd.DataFrame:
        """One row per group: n, events, the median and its 95% CI (in days) and the survival
        at 1, 3 and 5 years with theirs (NaN where not reached or not estimable)."""
        rows = []
        for g in self.groups:
            row: dict[str, Any] = {
                "group": g.group,
                "n": g.n,
                "events": g.events,
                "median_days": g.median,
                "median_ci_low": g.median_ci_low,
                "median_ci_high": g.median_ci_high,
            }
            for m in g.survival_at:
                key = f"survival_{m.years:g}y"
                row.update(
                    {key: m.survival, f"{key}_ci_low": m.ci_low, f"{key}_ci_high": m.ci_high}
                )
            rows.append(row)
        landmarks = [
            f"survival_{y:g}y{end}" for y in LANDMARK_YEARS for end in ("", "_ci_low", "_ci_high")
        ]
        floats = ["median_days", "median_ci_low", "median_ci_high", *landmarks]
        frame = pd.DataFrame(rows, columns=["group", "n", "events", *floats])
        return frame.astype(dict.fromkeys(floats, float))

    def _steps_frame(self) -> pd.DataFrame:
        """The step table: one row per group and time (at risk, events, survival, 95% CI)."""
        rows = [{"group": g.group, **r.model_dump()} for g in self.groups for r in g.table]
        cols = ["group", "time", "at_risk", "events", "survival", "ci_low", "ci_high"]
        return pd.DataFrame(rows, columns=cols)

    def plot(self, **kw: Any) -> Any:
        """Curves with CI bands and numbers at risk (a matplotlib Figure)."""
        from ccdp.analyses.plots import km_plot

        return km_plot(self, **kw)


def landmark_heading(at_years: float) -> str:
    """The column of a landmark survival: '5-year survival (95% CI)'."""
    return f"{at_years:g}-year survival (95% CI)"


def with_ci(value: float | None, low: float | None, high: float | None) -> str:
    """A survival with its interval, '81.2% (76.0–85.5)' (`_render.survival_ci`)."""
    return survival_ci(value, low, high)


def event_table_part(data: NodeData, outcome: str, by: list[str], unit: str) -> EventTimesPart:
    """The node's per-group event-time table: events and censorings in each interval.

    Times are first grouped by the node's disclosure rules (`ccdp.disclosure.event_times`:
    each row an interval (start, end] of at least min_cell subjects; `time` its end, `start`
    the end of the group's previous row, or the time itself where the row is exact).
    `records` says which table row each view row is counted in."""
    tcol, ecol = survival_columns(outcome)
    frame = complete_cases(data, [tcol, ecol, *by], data.node)
    time, event = survival_arrays(frame, outcome, unit, data.node)
    labels = group_labels(frame, by).astype(str)
    keys = data.record_keys(frame.index)
    start, time = data.disclosure.group_intervals(labels, time, keys, UNIT_DAYS[unit])
    names, codes = np.unique(labels, return_inverse=True)
    order = np.lexsort((time, codes))
    c, t, e = codes[order], time[order], event[order]
    new = np.ones(len(t), dtype=bool)
    new[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
    starts = np.flatnonzero(new)
    events = np.add.reduceat(e, starts).astype(np.int64)
    size = np.diff(np.append(starts, len(t)))
    row = np.empty(len(t), dtype=np.int64)
    row[order] = np.cumsum(new) - 1
    columns = {
        "group": names[c[starts]],
        "time": t[starts],
        "start": start[order][starts],
        "events": events,
        "censored": size - events,
    }
    sizes = {str(k): int(v) for k, v in zip(names, np.bincount(codes), strict=True)}
    return EventTimesPart(
        group_by=list(by),
        columns=columns,
        group_sizes=sizes,
        time_unit=unit,
        records=data.records(frame.index, row),
    )


def event_table_spec(by: list[str]) -> dict[str, PartSpec]:
    """The one part KM and log-rank send: `events`, counts of events and censorings."""
    counts = ("events", "censored")
    columns = ("start", *counts)
    return {
        "events": PartSpec("event_times", group_by=tuple(by), columns=columns, count_columns=counts)
    }


def pooled_event_table(summaries: dict[str, Summary], part: str = "events") -> pd.DataFrame:
    """Add the nodes' event-time tables: one row per (group, time), sorted. `grouped_censored`
    counts the censorings of grouped rows (intervals, start < end): the life table's
    half-weights (see `km_curve`)."""
    tables = [t.columns for t in (s.event_times(part) for s in summaries.values()) if len(t)]
    if not tables:
        raise AnalysisError("no node sent an event-time table")
    cols = ["group", "time", "events", "censored"]
    frame = pd.DataFrame({c: np.concatenate([t[c] for t in tables]) for c in cols})
    grouped = [
        np.where(t["start"] < t["time"], t["censored"], 0) if "start" in t else 0 * t["censored"]
        for t in tables
    ]
    frame["grouped_censored"] = np.concatenate(grouped).astype(np.int64)
    counts = ["events", "censored", "grouped_censored"]
    return frame.groupby(["group", "time"], sort=True, as_index=False)[counts].sum()


def spread_counts(summaries: dict[str, Summary], part: str = "events") -> pd.DataFrame:
    """Per (group, pooled time): events, censorings and grouped censorings with each node's
    grouped interval (start, end] spread over the pooled times inside it in proportion to their
    length, the life table's assumption of deaths and censorings uniform within an interval
    (Cutler & Ederer 1958; Kalbfleisch & Prentice 2002, §1.3). Without it a node's interval would
    keep all its children at risk, and its deaths alive, for every other node's death inside it.
    Exact rows (start == end) stay where they are; with one node, or with exact times, the counts
    are the released ones."""
    cols = ["group", "time", "start", "events", "censored"]
    tables = [t.columns for t in (s.event_times(part) for s in summaries.values()) if len(t)]
    rows = pd.DataFrame({c: np.concatenate([t.get(c, t["time"]) for t in tables]) for c in cols})
    pooled = rows[["group", "time"]].drop_duplicates().sort_values(["group", "time"])
    codes, labels = pd.factorize(pooled["group"], sort=False)
    # pooled times of all groups on one axis: group g's times shifted by g * span
    span = float(pooled["time"].max() + 1.0) if len(pooled) else 1.0
    axis = pooled["time"].to_numpy(dtype=float) + codes * span
    prev = np.concatenate([[0.0], axis[:-1]])
    first = np.append(True, codes[1:] != codes[:-1])
    prev[first] = axis[first] - pooled["time"].to_numpy(dtype=float)[first]  # the group's 0
    rcode = labels.get_indexer(rows["group"])
    lo = rows["start"].to_numpy(dtype=float) + rcode * span
    hi = rows["time"].to_numpy(dtype=float) + rcode * span
    grouped = lo < hi
    i_hi = np.searchsorted(axis, hi)  # the row's end is a pooled time
    i_lo = np.where(grouped, np.searchsorted(axis, lo, side="right"), i_hi)  # first piece
    width = np.where(grouped, hi - lo, 1.0)
    n = len(axis)
    out = {}
    for name, weight in (
        ("events", rows["events"].to_numpy(dtype=float)),
        ("censored", rows["censored"].to_numpy(dtype=float)),
        ("grouped_censored", np.where(grouped, rows["censored"].to_numpy(dtype=float), 0.0)),
    ):
        rate = np.zeros(n + 1)
        np.add.at(rate, i_lo, np.where(grouped, weight / width, 0.0))
        np.add.at(rate, i_hi + 1, -np.where(grouped, weight / width, 0.0))
        spread = np.cumsum(rate)[:n] * (axis - prev)
        point = np.zeros(n)
        np.add.at(point, i_hi, np.where(grouped, 0.0, weight))
        total = spread + point
        total[np.abs(total) < 1e-9] = 0.0  # residues of the running sum of rates
        out[name] = total
    return pd.DataFrame(
        {"group": pooled["group"].to_numpy(), "time": pooled["time"].to_numpy(), **out}
    )


def grouped_intervals(summaries: dict[str, Summary], part: str = "events") -> pd.DataFrame:
    """The nodes' grouped intervals with events (start < end), per group: where the pooled
    curve is not known between its interval ends. Tables without `start` are exact."""
    rows = []
    for s in summaries.values():
        t = s.event_times(part).columns
        if "start" not in t or not len(t["time"]):
            continue
        keep = (t["start"] < t["time"]) & (t["events"] > 0)
        rows.append(
            pd.DataFrame(
                {"group": t["group"][keep], "start": t["start"][keep], "end": t["time"][keep]}
            )
        )
    if not rows:
        return pd.DataFrame({"group": [], "start": [], "end": []})
    return pd.concat(rows, ignore_index=True)


def sent_groups(summaries: dict[str, Summary], part: str = "events") -> dict[str, set[str]]:
    """Which groups each node sent rows for."""
    return {n: {str(g) for g in s.event_times(part).columns["group"]} for n, s in summaries.items()}


def event_method(
    summaries: dict[str, Summary], unit: str, columns: list[str], part: str = "events"
) -> dict[str, Any]:
    """A KM or log-rank result's method note: times exact or grouped, excluded nodes per group,
    complete cases."""
    grouped = len(grouped_intervals(summaries, part)) > 0 or any(
        (
            s.event_times(part).columns.get("start", s.event_times(part).columns["time"])
            < s.event_times(part).columns["time"]
        ).any()
        for s in summaries.values()
    )
    method = times_method(grouped, unit)
    excluded = excluded_nodes(summaries, sent_groups(summaries, part))
    if excluded:
        method["excluded"] = excluded
    method["complete_cases"] = complete_case_note(columns)
    return method


def km_curve(
    time: np.ndarray,
    events: np.ndarray,
    censored: np.ndarray,
    grouped_censored: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Product-limit estimate with exponential-Greenwood bounds at each distinct time.

    `grouped_censored`: censorings at each time that belong to a node's grouped interval
    ending there. They were at risk for part of the interval only, so, as in the actuarial
    life table (Cutler & Ederer 1958; Kalbfleisch & Prentice 2002, §1.3), they count half in the
    number at risk for its deaths, n' = n − c/2, in the estimate and in Greenwood's sum. Exact
    rows have none, so the exact path is the product-limit estimate unchanged."""
    removed = events + censored
    at_risk = removed[::-1].cumsum()[::-1]
    exposed = at_risk.astype(float)
    if grouped_censored is not None:
        exposed = exposed - grouped_censored / 2.0
    rest = exposed - events
    rest[np.abs(rest) < 1e-9] = 0.0  # spread counts: all who remain die, up to rounding
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        surv = np.cumprod(np.clip(rest / exposed, 0.0, 1.0))
        term = events / (exposed * rest)
        term[~np.isfinite(term)] = 0.0  # the last patients all dying: no variance term
        greenwood = np.cumsum(term)
        v = np.log(surv)
        spread = Z95 * np.sqrt(greenwood) / v
        low = np.exp(-np.exp(np.log(-v) - spread))
        high = np.exp(-np.exp(np.log(-v) + spread))
    low[surv == 1.0] = 1.0
    high[surv == 1.0] = 1.0
    low[surv == 0.0] = 0.0
    high[surv == 0.0] = 0.0
    return {"at_risk": at_risk, "survival": surv, "ci_low": low, "ci_high": high}


def first_below_half(time: np.ndarray, curve: np.ndarray) -> float | None:
    """Earliest time the curve is at or below 0.5 (None if it never gets there); a curve that is
    exactly one half up to rounding counts as reached."""
    hit = np.flatnonzero(curve <= 0.5 + 1e-12)
    return finite_or_none(time[hit[0]]) if hit.size else None


def landmarks(
    time: np.ndarray, curve: dict[str, np.ndarray], spans: np.ndarray | None = None
) -> list[Landmark]:
    """Survival at 1, 3 and 5 years (undefined beyond the group's last follow-up time).

    `spans` (rows of start, end): grouped intervals with events. A landmark strictly inside one
    is interpolated linearly between the curve at the pooled times either side of it (the
    life-table convention, Cutler & Ederer 1958; for one node, the interval's own ends), since
    the interval's deaths happened somewhere in it, not all after the landmark."""
    out = []
    for years in LANDMARK_YEARS:
        t = years * YEAR_DAYS
        if time.size == 0 or t > time[-1]:
            out.append(Landmark(years=years, survival=None, ci_low=None, ci_high=None))
            continue
        i = np.searchsorted(time, t, side="right") - 1
        keys = ("survival", "ci_low", "ci_high")
        before = [1.0, 1.0, 1.0] if i < 0 else [float(curve[k][i]) for k in keys]
        inside = spans is not None and bool(np.any((spans[:, 0] < t) & (t < spans[:, 1])))
        if inside and i + 1 < time.size and time[i + 1] > t:
            t0 = 0.0 if i < 0 else float(time[i])
            w = (t - t0) / (float(time[i + 1]) - t0)
            after = [float(curve[k][i + 1]) for k in keys]
            before = [b + w * (a - b) for b, a in zip(before, after, strict=True)]
        out.append(Landmark(years=years, survival=before[0], ci_low=before[1], ci_high=before[2]))
    return out


def km_group(
    name: str,
    block: pd.DataFrame,
    spans: np.ndarray | None = None,
    spread: pd.DataFrame | None = None,
) -> KMGroup:
    """One group's curve, median and landmarks from its pooled event table (`spans`: the
    nodes' grouped intervals with events in this group, see `landmarks`; `spread`: the counts
    spread within grouped intervals, see `spread_counts`, from which the curve is estimated
    where given; the table's counts stay the released ones)."""
    time = block["time"].to_numpy(dtype=float)
    ev = block["events"].to_numpy(dtype=np.int64)
    cen = block["censored"].to_numpy(dtype=np.int64)
    if spread is not None:
        src = spread.set_index("time").loc[time]
        c = km_curve(
            time,
            src["events"].to_numpy(dtype=float),
            src["censored"].to_numpy(dtype=float),
            src["grouped_censored"].to_numpy(dtype=float),
        )
        removed = ev + cen
        c["at_risk"] = removed[::-1].cumsum()[::-1]
    else:
        half = block["grouped_censored"].to_numpy() if "grouped_censored" in block else None
        c = km_curve(time, ev, cen, half)
    table = [
        KMRow(time=t, at_risk=a, events=e, survival=s, ci_low=lo, ci_high=hi)
        for t, a, e, s, lo, hi in zip(
            time.tolist(),
            c["at_risk"].tolist(),
            ev.tolist(),
            c["survival"].tolist(),
            c["ci_low"].tolist(),
            c["ci_high"].tolist(),
            strict=True,
        )
    ]
    return KMGroup(
        group=name,
        n=int(ev.sum() + cen.sum()),
        events=int(ev.sum()),
        median=first_below_half(time, c["survival"]),
        median_ci_low=first_below_half(time, c["ci_low"]),
        median_ci_high=first_below_half(time, c["ci_high"]),
        survival_at=landmarks(time, c, spans),
        table=table,
    )


class KaplanMeier(Analysis[KMParams]):
    """One round: nodes send event-time tables; the coordinator adds them and estimates."""

    name: ClassVar[str] = "km"
    params_model: ClassVar[type[AnalysisParams]] = KMParams
    result_model: ClassVar[type[AnalysisResult]] = KMResult

    def summary_parts(self, params: KMParams, request: dict) -> dict[str, PartSpec]:
        return event_table_spec(params.by)

    def followup_outcome(self, params: KMParams) -> str:
        return params.outcome

    def columns(self, params: KMParams) -> list[str]:
        return [*survival_columns(params.outcome), *params.by]

    def local(
        self, data: NodeData, params: KMParams, request: dict[str, Any], cache: dict
    ) -> Summary:
        part = event_table_part(data, params.outcome, params.by, params.time_unit)
        return Summary(parts={"events": part})

    def combine(self, params: KMParams, state: Any, summaries: dict[str, Summary]) -> Done:
        table = pooled_event_table(summaries)
        blocks = dict(list(table.groupby("group", sort=False)))
        spans = grouped_intervals(summaries)
        spans_of = {
            str(g): b[["start", "end"]].to_numpy(dtype=float)
            for g, b in spans.groupby("group", sort=False)
        }
        spread = dict(list(spread_counts(summaries).groupby("group", sort=False)))
        groups = [
            km_group(str(g), blocks[g], spans_of.get(str(g)), spread.get(g))
            for g in sorted(blocks, key=lambda g: label_key(str(g), params.by))
        ]
        method = event_method(summaries, params.time_unit, self.columns(params))
        return Done(
            KMResult(
                outcome=params.outcome,
                by=params.by,
                time_unit=params.time_unit,
                groups=groups,
                method=method,
            )
        )
