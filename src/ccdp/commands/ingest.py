"""CLI: `ccdp ingest` and `ccdp quarantine list|export`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

quarantine_app = typer.Typer(help="List or export quarantined rows.", no_args_is_help=True)


def ingest(
    source: Path = typer.Argument(..., help="Native folder, or the source a mapping spec reads."),
    store: Path = typer.Option(..., "--store", help="Node store (DuckDB file); created if absent."),
    mapping: Path | None = typer.Option(None, "--mapping", help="Mapping spec (YAML)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (the report)."),
) -> None:
    """Ingest a site's export into the node store: check every row, quarantine failures."""
    from ccdp.federation.linkage.node import ingest_hook
    from ccdp.ingest.pipeline import ingest_frames, ingest_native

    encoder = ingest_hook(store)  # None without a linkage secret: nothing is encoded
    if mapping is None:
        report = ingest_native(store, source, progress=not json_out, on_identifiers=encoder)
    else:
        from ccdp.ingest.mapping import apply_mapping, load_mapping

        spec = load_mapping(mapping)
        frames = apply_mapping(spec, source)
        report = ingest_frames(
            store, frames, str(source), progress=not json_out, on_identifiers=encoder
        )
    if json_out:
        typer.echo(json.dumps(report.summary()))
        return
    _print_report(report)
    if encoder is not None:
        typer.echo(f"{encoder.encoded} record-linkage encodings written (identifiers not stored)")


def _print_report(report: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from ccdp.ingest.pipeline import IngestReport

    assert isinstance(report, IngestReport)
    table = Table(title=f"ingest {report.ingest_id} into {report.store}")
    columns = ["rows_read", "accepted", "quarantined", "flagged"]
    if report.rechecked:  # stored children checked again after a change of their parent
        columns += ["rechecked", "requarantined"]
    for col in ["table", *columns]:
        table.add_column(col.replace("_", " "), justify="left" if col == "table" else "right")
    for name, t in report.tables.items():
        table.add_row(name, *(str(getattr(t, c)) for c in columns))
    table.add_row("total", *(str(getattr(report, c)) for c in columns))
    console = Console()
    console.print(table)
    for name, columns in report.absent_columns.items():
        console.print(f"absent columns in {name} (stored as null): {', '.join(columns)}")
    if report.edits:
        console.print("edits failed: " + ", ".join(f"{k} {v}" for k, v in report.edits.items()))
    if report.quarantined or report.requarantined:
        console.print(f"see them with: ccdp quarantine list --store {report.store}")


@quarantine_app.command("list")
def quarantine_list(
    store: Path = typer.Option(..., "--store", help="Node store (DuckDB file)."),
    table: str | None = typer.Option(None, "--table", help="Only this table."),
    resolved: bool = typer.Option(
        False, "--resolved", help="Show the entries a later ingest accepted instead."
    ),
    all_entries: bool = typer.Option(False, "--all", help="Show open and resolved entries."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Open quarantine entries (rows still to fix): table, file, row, key, field(s), edit id,
    message; with --resolved or --all, also those a later ingest accepted."""
    from ccdp.ingest.quarantine import Status, quarantine_counts, quarantine_rows

    if resolved and all_entries:
        raise typer.BadParameter("give --resolved or --all, not both", param_hint="--resolved")
    status: Status = "all" if all_entries else "resolved" if resolved else "open"
    rows = quarantine_rows(store, table, status)
    if json_out:
        typer.echo(json.dumps(rows))
        return
    counts = quarantine_counts(store, table)
    typer.echo(
        f"{counts['open']} open, {counts['resolved']} resolved quarantine entries in {store}"
        + ("" if status == "open" or not rows else f" (showing {status})")
    )
    for r in rows:
        # each message already names the file, row, field, value and edit id
        source = (
            f" (source key {r['source_key']})" if r["source_key"] not in (None, r["key"]) else ""
        )
        done = f" resolved by ingest {r['resolved_by']}" if r["resolved_by"] else ""
        typer.echo(f"{r['table']} {r['key'] or '(no key)'}{source}:{done}")
        for reason in r["reasons"]:
            typer.echo(f"  {reason['severity']}: {reason['message']}")
    if counts["resolved"] and status == "open":
        typer.echo("resolved entries: add --resolved (or --all)")


@quarantine_app.command("export")
def quarantine_export(
    store: Path = typer.Option(..., "--store", help="Node store (DuckDB file)."),
    out: Path = typer.Option(..., "--out", help="Folder for the CSVs (native layout)."),
) -> None:
    """Write quarantined rows as native CSVs with reason columns, to fix and re-ingest: values
    as the site sent them (dates in the source's own format, `_parsed__<field>` the ISO date
    ingest read); README.txt in the folder says which column is which."""
    from ccdp.ingest.quarantine import export_quarantine

    written = export_quarantine(store, out)
    for table, path in written.items():
        typer.echo(f"{table}: {path}")
    if not written:
        typer.echo("quarantine is empty")
    else:
        typer.echo(f"columns: {out / 'README.txt'}")
        typer.echo(
            "fix the values in the source and ingest it again; or here (dates as YYYY-MM-DD), "
            f"then: ccdp ingest {out} --store {store}"
        )
