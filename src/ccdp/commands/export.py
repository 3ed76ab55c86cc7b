"""CLI: `ccdp export fhir|omop|phenopackets` and `ccdp import fhir` (a custodian's tools at the
node: patient-level, never sent to the hub, each one logged in the node's audit)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import typer

export_app = typer.Typer(
    help="Export the node store in a standard format (patient-level: stays at the node).",
    no_args_is_help=True,
)
import_app = typer.Typer(help="Import records written in a standard format.", no_args_is_help=True)

_STORE = typer.Option(..., "--store", help="Node store (DuckDB file) to export.")
_REPLACE = typer.Option(False, "--replace", help="Write over an earlier export at --out.")
_JSON = typer.Option(False, "--json", help="Print the export's manifest as one JSON object.")

Exporter = Callable[..., object]


@export_app.command("fhir")
def export_fhir(
    store: Path = _STORE,
    out: Path = typer.Option(
        ..., "--out", help="Folder for the Bundles (NDJSON: one Bundle per patient, per line)."
    ),
    replace: bool = _REPLACE,
    json_out: bool = _JSON,
    jobs: int = typer.Option(
        1,
        "--jobs",
        min=1,
        help="Worker processes writing batches of Bundles (same files whatever the number).",
    ),
) -> None:
    """FHIR R4: one Bundle per patient (PanCareSurPass and mCODE profiles)."""
    from ccdp.exchange import fhir

    _export("fhir", fhir.export_store, store, out, replace, json_out, jobs=jobs)


@export_app.command("omop")
def export_omop(
    store: Path = _STORE,
    out: Path = typer.Option(..., "--out", help="OMOP CDM 5.4 database to write (DuckDB file)."),
    vocab: Path | None = typer.Option(
        None,
        "--vocab",
        help="Athena vocabulary folder (CONCEPT.csv ...) for concept ids; without it, 0.",
    ),
    replace: bool = _REPLACE,
    json_out: bool = _JSON,
) -> None:
    """OMOP CDM 5.4 with the Oncology extension's episodes, in one DuckDB file."""
    from ccdp.exchange import omop

    _export("omop", omop.export_store, store, out, replace, json_out, is_file=True, vocab=vocab)


@export_app.command("phenopackets")
def export_phenopackets(
    store: Path = _STORE,
    out: Path = typer.Option(
        ..., "--out", help="Folder for the Phenopackets (JSON Lines: one per patient, per line)."
    ),
    replace: bool = _REPLACE,
    json_out: bool = _JSON,
) -> None:
    """GA4GH Phenopackets v2: one Phenopacket per patient."""
    from ccdp.exchange import phenopackets

    _export("phenopackets", phenopackets.export_store, store, out, replace, json_out)


@import_app.command("fhir")
def import_fhir(
    source: Path = typer.Argument(..., help="A Bundle (JSON/NDJSON) file or a folder of them."),
    store: Path = typer.Option(..., "--store", help="Node store (DuckDB file); created if absent."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (the report)."),
) -> None:
    """Import FHIR R4 Bundles written to the PanCareSurPass/mCODE profiles (ccdp's own export
    among them) through the same checks as any ingest: every row kept or quarantined."""
    from ccdp.commands.ingest import _print_report
    from ccdp.exchange import fhir

    report = fhir.import_bundles(source, store, progress=not json_out)
    if json_out:
        typer.echo(json.dumps(report.summary()))
        return
    _print_report(report)


def _export(
    fmt: str,
    exporter: Exporter,
    store: Path,
    out: Path,
    replace: bool,
    json_out: bool,
    *,
    is_file: bool = False,
    **options: object,
) -> None:
    """Stage, write, manifest, move into place, then log in the node's audit."""
    from ccdp.exchange.output import ExportError, ExportSummary, staged, write_manifest
    from ccdp.exchange.source import count_patients
    from ccdp.federation.node.audit import AuditLog
    from ccdp.store import NodeStore

    if not store.exists():
        raise ExportError(f"{store}: no node store here")
    started = time.monotonic()
    with NodeStore(store, read_only=True) as ns:
        bar = _progress(fmt, count_patients(ns), json_out)
        with bar as tick, staged(out, replace, is_file=is_file) as stage:
            summary = exporter(ns, stage, progress=tick, **options)
            assert isinstance(summary, ExportSummary)
            summary.store, summary.out = str(store.resolve()), str(out.resolve())
            summary.seconds = round(time.monotonic() - started, 2)
            write_manifest(stage, summary, is_file=is_file)
    AuditLog.for_store(store).append(
        {
            "time": summary.created,
            "event": "export",
            "format": fmt,
            "standard": summary.standard,
            "out": summary.out,
            "patients": summary.patients,
            "records": summary.records,
        }
    )
    if json_out:
        typer.echo(json.dumps(summary.model_dump(mode="json")))
        return
    _print_summary(summary)


class _progress:
    """A progress bar over patients (silent under --json)."""

    def __init__(self, fmt: str, total: int, quiet: bool) -> None:
        self.fmt, self.total, self.quiet = fmt, total, quiet
        self._bar: object | None = None

    def __enter__(self) -> Callable[[int], None]:
        if self.quiet:
            return lambda done: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        bar.__enter__()
        task = bar.add_task(f"exporting {self.fmt}: patients", total=self.total)
        self._bar = bar
        return lambda done: bar.update(task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)  # type: ignore[attr-defined]


def _print_summary(summary: object) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ccdp.exchange.output import ExportSummary

    assert isinstance(summary, ExportSummary)
    console = Console()
    table = Table(title=escape(f"{summary.standard}: {summary.patients} patients → {summary.out}"))
    table.add_column("written")
    table.add_column("records", justify="right")
    for name, n in summary.records.items():
        table.add_row(escape(name), str(n))
    console.print(table)
    for line in [*summary.notes, *(f"warning: {w}" for w in summary.warnings)]:
        console.print(escape(line))
    console.print(f"{summary.seconds:.1f} s; logged in the node's audit")
