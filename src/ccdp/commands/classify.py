"""`ccdp classify`: the registry clerk's ICCC-3 recoder, for one tumour or a whole CSV file."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from ccdp.errors import CcdpError


class Edition(StrEnum):
    iarc2017 = "2017"
    who2008 = "who2008"


def classify(
    morphology: str | None = typer.Option(
        None, "--morphology", "-m", help="ICD-O-3 morphology, e.g. 9836 or 9836/3."
    ),
    topography: str | None = typer.Option(
        None, "--topography", "-t", help="ICD-O-3 topography, e.g. C42.1."
    ),
    behaviour: str | None = typer.Option(
        None, "--behaviour", "-b", help="ICD-O-3 behaviour (0,1,2,3,6,9)."
    ),
    input: Path | None = typer.Option(
        None, "--input", "-i", help="CSV with columns morphology, topography, behaviour."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write the input columns plus the ICCC-3 columns."
    ),
    edition: Edition = typer.Option(
        Edition.iarc2017, "--edition", help="2017 (IARC update, default) or who2008."
    ),
    chunk_size: int = typer.Option(200_000, "--chunk-size", min=1, help="Rows per chunk."),
) -> None:
    """Classify tumours into ICCC-3 (group, subgroup, extended code, 3-digit recode)."""
    if input is not None:
        if output is None:
            raise CcdpError("classify --input needs --output (where to write the result)")
        _classify_file(input, output, edition.value, chunk_size)
    elif morphology is not None or topography is not None:
        _classify_one(morphology, topography, behaviour, edition.value)
    else:
        raise CcdpError(
            "classify: give --morphology/--topography/--behaviour for one tumour, "
            "or --input FILE.csv --output OUT.csv for a file"
        )


def _classify_one(
    morphology: str | None, topography: str | None, behaviour: str | None, edition: str
) -> None:
    from rich.console import Console
    from rich.table import Table

    from ccdp.terminology.classify_file import ClassifyInputError
    from ccdp.terminology.iccc import classify_one

    result = classify_one(morphology, topography, behaviour, edition=edition)
    if result.error:
        raise ClassifyInputError(result.error)
    table = Table(title=f"ICCC-3 ({edition})", show_header=True, header_style="bold")
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("morphology", result.morphology),
        ("topography", result.topography),
        ("behaviour", result.behaviour),
        ("iccc_group", _with_label(result.iccc_group, result.group_label)),
        ("iccc_subgroup", _with_label(result.iccc_subgroup, result.subgroup_label)),
        ("iccc_extended", result.iccc_extended),
        ("iccc_recode", result.iccc_recode),
        ("iccc_label", result.iccc_label),
    ]
    for name, value in rows:
        table.add_row(name, "" if value is None else str(value))
    Console().print(table)


def _with_label(code: str | None, label: str | None) -> str | None:
    return f"{code}  {label}" if code and label else code


def _classify_file(input: Path, output: Path, edition: str, chunk_size: int) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from ccdp.terminology.classify_file import classify_csv

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"classifying {input.name}", total=input.stat().st_size or None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = classify_csv(
            input, output, edition=edition, chunk_size=chunk_size, on_progress=tick
        )
    console.print(
        f"{summary.rows} rows ({summary.encoding}, delimiter {summary.delimiter!r}): "
        f"{summary.classified} classified, {summary.unclassified} unclassified (999), "
        f"{summary.errors} with errors -> {output}",
        highlight=False,
    )
