"""The data-quality report of a node store: what is stored, what is missing, what failed.

`quality_summary` computes everything with SQL over the store (completeness per field, edits
failed with counts and examples, distributions of ICCC groups, age and diagnosis year);
`render_html` turns it into one self-contained page (jinja2, matplotlib figures inlined as SVG).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import jinja2
from pydantic import BaseModel, Field

from ccdp.model import load_model
from ccdp.quality.edits import load_edits
from ccdp.store import NodeStore
from ccdp.store.typed import q

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EXAMPLES = 3
ROMAN_ORDER = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"]
REASON_TYPE = (
    '[{"edit_id": "VARCHAR", "severity": "VARCHAR", "field": "VARCHAR", "value": "VARCHAR", '
    '"message": "VARCHAR"}]'
)


class TableQuality(BaseModel):
    rows: int
    quarantined: int
    flagged: int


class FieldCompleteness(BaseModel):
    """Rows with the field filled, of the rows it applies to: every row, or for a conditional
    field (data model `applies_when`) only those meeting its condition, named by `applies_to`."""

    table: str
    field: str
    required: bool
    filled: int
    total: int
    applies_to: str | None = Field(None, description="the rows counted, e.g. deceased")

    @property
    def share(self) -> float:
        return self.filled / self.total if self.total else 1.0


class EditFailures(BaseModel):
    edit_id: str
    severity: str
    category: str
    description: str
    rows: int = Field(description="rows failing the edit (quarantined or flagged)")
    examples: list[str]


class IngestEntry(BaseModel):
    ingest_id: str
    source: str
    finished_at: str
    rows_read: int
    accepted: int
    quarantined: int


class QualitySummary(BaseModel):
    """Everything the report shows; also the `ccdp quality --json` output."""

    store: str
    model_version: int | None
    generated_at: str
    tables: dict[str, TableQuality]
    completeness: list[FieldCompleteness]
    edits: list[EditFailures]
    iccc_groups: dict[str, int]
    age_at_diagnosis: dict[str, int]
    diagnosis_year: dict[str, int]
    countries: dict[str, int]
    ingests: list[IngestEntry]


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0] or 0)


def field_completeness(con: duckdb.DuckDBPyConnection) -> list[FieldCompleteness]:
    out: list[FieldCompleteness] = []
    """Completeness of every field, conditional fields over the rows they apply to (one scan
    of each table)."""
    for tdef in load_model().tables.values():
        counts: list[str] = []
        for f in tdef.fields:
            where = f" FILTER (WHERE {f.applies_when.sql(q)})" if f.applies_when else ""
            counts += [f"count({q(f.name)}){where}", f"count(*){where}"]
        row = con.execute(f"SELECT {', '.join(counts)} FROM {q(tdef.name)}").fetchall()[0]
        for i, f in enumerate(tdef.fields):
            out.append(
                FieldCompleteness(
                    table=tdef.name,
                    field=f.name,
                    required=f.required,
                    filled=int(row[2 * i]),
                    total=int(row[2 * i + 1]),
                    applies_to=f.applies_when.rows if f.applies_when else None,
                )
            )
    return out


def _edit_failures(con: duckdb.DuckDBPyConnection) -> list[EditFailures]:
    failures = con.execute(
        f"""
        WITH reasons AS (
            SELECT u.r.edit_id AS edit_id, u.r.message AS message, q.table_name, q.source_file,
                   q.source_row
            FROM quarantine q, unnest(from_json(q.reasons, '{REASON_TYPE}')) AS u(r)
            WHERE q.resolved_at IS NULL
            UNION ALL
            SELECT edit_id, message, table_name, source_file, source_row FROM quality_flag
        )
        SELECT edit_id, count(*) AS n,
               list(message ORDER BY table_name, source_file, source_row)[1:{EXAMPLES}]
        FROM reasons GROUP BY edit_id
        """
    ).fetchall()
    by_id = {e.id: e for e in load_edits()}
    out = []
    for edit_id, n, examples in failures:
        edit = by_id.get(edit_id)
        out.append(
            EditFailures(
                edit_id=edit_id,
                severity=edit.severity if edit else "error",
                category=edit.category if edit else "conformance",
                description=edit.description if edit else "",
                rows=int(n),
                examples=list(examples),
            )
        )
    return sorted(out, key=lambda e: (e.severity != "error", -e.rows, e.edit_id))


def _counts(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in con.execute(sql).fetchall()}


def _iccc_groups(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    raw = _counts(
        con,
        "SELECT coalesce(iccc_group, 'unclassified'), count(*) FROM tumour GROUP BY 1",
    )
    order = [*ROMAN_ORDER, "999", "unclassified"]
    return {k: raw[k] for k in sorted(raw, key=lambda g: (order.index(g) if g in order else 99, g))}


def quality_summary(store_path: str | Path) -> QualitySummary:
    """The data-quality summary of a store (read-only)."""
    with NodeStore(store_path, read_only=True) as store:
        con = store.con
        quarantined = _counts(
            con, "SELECT table_name, count(*) FROM quarantine WHERE resolved_at IS NULL GROUP BY 1"
        )
        flagged = _counts(
            con,
            "SELECT table_name, count(DISTINCT record_key) FROM quality_flag GROUP BY 1",
        )
        tables = {
            t: TableQuality(
                rows=store.count(t), quarantined=quarantined.get(t, 0), flagged=flagged.get(t, 0)
            )
            for t in load_model().table_names
        }
        age = _counts(
            con,
            """SELECT age, count(*) FROM (
                 SELECT date_sub('year', p.birth_date, t.diagnosis_date) AS age
                 FROM tumour t JOIN patient p USING (patient_id))
               WHERE age IS NOT NULL GROUP BY age ORDER BY age""",
        )
        year = _counts(
            con,
            "SELECT year(diagnosis_date) AS y, count(*) FROM tumour WHERE y IS NOT NULL "
            "GROUP BY y ORDER BY y",
        )
        countries = _counts(
            con, "SELECT country, count(*) FROM patient GROUP BY country ORDER BY country"
        )
        ingests = [
            IngestEntry(
                ingest_id=i,
                source=s,
                finished_at=str(f),
                rows_read=int(r),
                accepted=int(a),
                quarantined=int(qn),
            )
            for i, s, f, r, a, qn in con.execute(
                "SELECT ingest_id, source, finished_at, rows_read, accepted, quarantined "
                "FROM ingest_log ORDER BY finished_at"
            ).fetchall()
        ]
        return QualitySummary(
            store=str(store_path),
            model_version=store.version,
            generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            tables=tables,
            completeness=field_completeness(con),
            edits=_edit_failures(con),
            iccc_groups=_iccc_groups(con),
            age_at_diagnosis=age,
            diagnosis_year=year,
            countries=countries,
            ingests=ingests,
        )


# -- HTML ----------------------------------------------------------------------------------------
def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def bar_svg(counts: dict[str, int], title: str, xlabel: str) -> str:
    """A bar chart of counts as inline SVG (empty string when there is nothing to draw)."""
    if not counts:
        return ""
    # imported here: a node agent reads this module for its catalogue and never draws
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.0))
    ax = fig.subplots()
    labels = list(counts)
    ax.bar(range(len(labels)), list(counts.values()), color="#3b6ea5")
    step = max(1, len(labels) // 20)
    ax.set_xticks(range(0, len(labels), step), labels[::step])
    if len(labels) > 12:
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("tumours")
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def render_html(summary: QualitySummary) -> str:
    """The report as one self-contained HTML page."""
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: (
                resources.files("ccdp.quality")
                .joinpath(f"templates/{name}")
                .read_text(encoding="utf-8")
            )
        ),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    plots = {
        "iccc": bar_svg(summary.iccc_groups, "Tumours by ICCC-3 main group", "ICCC-3 group"),
        "age": bar_svg(summary.age_at_diagnosis, "Age at diagnosis", "age (completed years)"),
        "year": bar_svg(summary.diagnosis_year, "Year of diagnosis", "year"),
    }
    return env.get_template("report.html.j2").render(s=summary, plots=plots)


def write_html(summary: QualitySummary, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(summary), encoding="utf-8")
    return out
