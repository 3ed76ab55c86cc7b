"""CLI: `ccdp quality` (summary, --json, --html report)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def quality(
    store: Path = typer.Option(..., "--store", help="Node store (DuckDB file)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    html: Path | None = typer.Option(None, "--html", help="Write the HTML report here."),
) -> None:
    """Summarise the store's data quality: tables, edits failed, completeness, distributions."""
    from ccdp.quality.report import quality_summary, write_html

    summary = quality_summary(store)
    if html is not None:
        write_html(summary, html)
    if json_out:
        typer.echo(json.dumps(summary.model_dump(mode="json")))
        return
    _print(summary, html)


def _print(summary: object, html: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from ccdp.quality.report import QualitySummary

    assert isinstance(summary, QualitySummary)
    console = Console()
    tables = Table(title=f"data quality of {summary.store}")
    for col in ("table", "stored", "quarantined", "flagged"):
        tables.add_column(col, justify="left" if col == "table" else "right")
    for name, t in summary.tables.items():
        tables.add_row(name, str(t.rows), str(t.quarantined), str(t.flagged))
    console.print(tables)
    if summary.edits:
        edits = Table(title="edits failed")
        for col in ("edit", "severity", "rows", "example"):
            edits.add_column(col, overflow="fold")
        for e in summary.edits:
            edits.add_row(e.edit_id, e.severity, str(e.rows), e.examples[0] if e.examples else "")
        console.print(edits)
    incomplete = [c for c in summary.completeness if c.required and c.total and c.share < 1]
    for c in incomplete:
        console.print(f"required field {c.table}.{c.field} filled in {100 * c.share:.1f}% of rows")
    if html is not None:
        console.print(f"report written to {html}")


def edits(
    format: str = typer.Option("md", "--format", help="md or json"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to a file."),
) -> None:
    """Print the catalogue of quality edits (id, severity, category, rule)."""
    from ccdp.quality.edits import edits_markdown, load_edits

    if format not in ("md", "json"):
        from ccdp.errors import CcdpError

        raise CcdpError(f"--format {format!r}: use md or json")
    text = (
        edits_markdown()
        if format == "md"
        else json.dumps([e.model_dump(exclude_none=True) for e in load_edits()], indent=1)
    )
    if output:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    else:
        typer.echo(text)
