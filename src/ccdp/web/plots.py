"""A study's result as the Studies page shows and serves it: its tables and its figures.

Everything here starts from the record `GET /api/studies/{id}` returns (the page never reads
the hub otherwise) and reuses the report stage: `report.html` for the tables a reader wants
first and their captions, `analyses.plots` for the figures (KM curves with the number at risk,
forest plots, incidence bars), drawn on `matplotlib.figure.Figure` (no pyplot state), so a
server thread can draw them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ccdp.analyses.axes import at_risk_at, whole_ticks
from ccdp.analyses.tables import cell_3sig_grouped
from ccdp.cohort.labels import (
    column_label,
    group_label,
    model_term_label,
    term_label,
    variable_label,
)
from ccdp.report.html import caption, dash_note, node_label, result_frame, shown_reason, worded

if TYPE_CHECKING:
    import pandas as pd

PNG_DPI = 110


@dataclass
class ResultTable:
    """One table of a result: its key (the CSV's `table`), a title, the frame and a caption."""

    key: str
    title: str
    frame: pd.DataFrame
    caption: str = ""
    # the same rows with their values in words, for the page (the CSV keeps machine names)
    words: pd.DataFrame | None = None

    def header(self) -> list[str]:
        """Column headings in words ('95% CI lower', not ci_low)."""
        return [column_label(c) for c in self.frame.columns]

    def rows(self, limit: int | None = None) -> list[list[str]]:
        """The rows as the page prints them, values in words ('—' for a withheld value)."""
        frame = self.frame if self.words is None else self.words
        shown = frame if limit is None else frame.head(limit)
        rows = shown.astype(object).itertuples(index=False)
        return [[cell_3sig_grouped(whole(v)) for v in row] for row in rows]

    def csv(self) -> str:
        """The table as CSV, numbers at full precision; a withheld value is an empty field."""
        return self.frame.to_csv(index=False, lineterminator="\n")


def whole(value: Any) -> Any:
    """A float that is a whole number (a time in days, a count) printed as one: 1051, not
    1.05e+03."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


@dataclass
class ResultFigure:
    """One figure of a result: what it shows (its alt text) and how to draw it."""

    title: str
    alt: str


def rebuilt(record: dict[str, Any]) -> Any | None:
    """The analysis result (a model with `.plot()`, `.to_frame()`) of a finished study record,
    or None while it has none."""
    from ccdp.federation.client import study_result

    out = record.get("result") or {}
    if out.get("result") is None:
        return None
    return study_result(out).result


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
        frame.columns.name = None
    return frame


def at_risk_frame(result: Any) -> pd.DataFrame:
    """Numbers at risk per KM group at the plot's whole-year ticks (the figure's lower panel,
    as a table: what a screen reader or a spreadsheet gets)."""
    import pandas as pd

    scale, _ = result.time_scale(True)
    t_max = max((g.table[-1].time for g in result.groups if g.table), default=1.0) / scale
    ticks = whole_ticks(t_max)
    rows = []
    for g in result.groups:
        counts = at_risk_at(g.table, ticks * scale)
        at = {f"{t:g} y": n for t, n in zip(ticks, counts, strict=True)}
        rows.append({result.group_heading(): group_label(g.group, result.by), **at})
    return pd.DataFrame(rows)


def result_tables(result: Any) -> list[ResultTable]:
    """The tables of a result: first the one a reader wants first (report.html.result_frame),
    then the number at risk (KM), then the full data (to_frame) when it differs."""
    first = result_frame(result)
    note = caption(result)
    if getattr(result, "analysis", None) == "km":
        steps = _plain(result.to_frame(steps=True))
        words = steps.assign(group=[group_label(g, result.by) for g in steps["group"]])
        return [
            ResultTable("summary", "Medians and survival at landmarks", first, note),
            ResultTable(
                "at_risk",
                "Number at risk",
                at_risk_frame(result),
                "Patients still at risk (followed, without the event) at each whole year: the "
                "figure's lower panel.",
            ),
            ResultTable(
                "curves",
                "Survival table",
                steps,
                "At each event time: number at risk, events, survival and its 95% CI; "
                "times in days.",
                words,
            ),
        ]
    data = _plain(result.to_frame())
    if first.columns.equals(data.columns) and first.equals(data):
        return [ResultTable("result", "Result", first, note)]
    return [
        ResultTable("summary", "Result", first, note),
        ResultTable(
            "data", "Full table", data, "Every column of the result, unformatted.", worded(data)
        ),
    ]


def default_table(tables: list[ResultTable]) -> ResultTable:
    """What result.csv serves without `table`: the full data (the last table)."""
    return tables[-1]


def has_dash(tables: list[ResultTable], result: Any) -> str:
    """The dash note when any shown cell is a dash."""
    if any("—" in row for t in tables for row in t.rows(limit=200)):
        return dash_note(result)
    return ""


def result_figures(result: Any, record: dict[str, Any]) -> list[ResultFigure]:
    """The figures a result has (each result type draws its own; none for counts)."""
    if result is None or not hasattr(result, "plot"):
        return []
    kind = getattr(result, "analysis", record.get("analysis"))
    if kind == "km":
        by = ", ".join(variable_label(b) for b in result.by) or "the whole cohort"
        groups = ", ".join(f"{group_label(g.group, result.by)} (n={g.n})" for g in result.groups)
        return [
            ResultFigure(
                "Kaplan–Meier curves",
                f"Kaplan–Meier curves of {term_label(result.outcome)} by {by} with 95% CI bands "
                f"and the number at risk below: {groups}. The same figures are in the tables.",
            )
        ]
    if kind in ("cox", "logistic", "poisson"):
        terms = ", ".join(
            model_term_label(c.term) for c in result.coefficients if c.term != "(Intercept)"
        )
        return [ResultFigure("Forest plot", f"Forest plot of the ratios with 95% CIs: {terms}.")]
    if kind == "incidence":
        return [
            ResultFigure(
                "Incidence",
                "Bars of the age-standardised incidence per million person-years with 95% CIs, "
                "one per group (values in the table).",
            )
        ]
    return [ResultFigure("Figure", f"The {kind} result's figure.")]


def draw(result: Any, n: int, fmt: str) -> bytes:
    """Figure `n` of the result as SVG or PNG bytes (IndexError when it has no such figure)."""
    import matplotlib

    matplotlib.use("Agg")
    if n != 0 or not hasattr(result, "plot"):
        raise IndexError(n)
    fig = result.plot()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, bbox_inches="tight", dpi=PNG_DPI)
    return buf.getvalue()


def node_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Per node asked: its status as text (node_label), a tone for the tag and the reason;
    nodes that have not answered yet read 'waiting'."""
    out = record.get("result") or {}
    statuses = out.get("nodes") or {}
    names = list(dict.fromkeys([*(record.get("nodes") or []), *statuses]))
    rows = []
    for name in names:
        st = statuses.get(name)
        if st is None:
            status = "failed" if record.get("status") == "failed" else "waiting"
            rows.append({"name": name, "status": status, "label": status, "reason": None})
            continue
        label = node_label(st["status"], st.get("reason"))
        reason = shown_reason(st.get("reason"))
        rows.append({"name": name, "status": st["status"], "label": label, "reason": reason})
    for r in rows:
        r["tone"] = {"answered": "good", "failed": "bad", "waiting": ""}.get(r["status"], "warn")
    return rows
