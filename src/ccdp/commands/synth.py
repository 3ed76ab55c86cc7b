"""`ccdp synth`: write synthetic multi-country registries with known truth."""

from __future__ import annotations

from pathlib import Path

import typer

from ccdp.errors import CcdpError


def _parse_years(text: str) -> tuple[int, int]:
    try:
        a, _, b = text.partition("-")
        first, last = int(a), int(b or a)
    except ValueError:
        raise CcdpError(f"--years {text!r}: expected FIRST-LAST, e.g. 2005-2019") from None
    return first, last


def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write <CC>/*.csv and truth.json into."),
    countries: str = typer.Option("FR,DE,IT,PL,BR,KE", "--countries", help="ISO alpha-2 codes."),
    patients: int | None = typer.Option(
        None, "--patients", help="Total patients across countries (scales the populations)."
    ),
    years: str = typer.Option("2005-2019", "--years", help="Diagnosis years FIRST-LAST."),
    seed: int = typer.Option(1, "--seed", help="Random seed; the same seed gives the same bytes."),
    format: str = typer.Option("native", "--format", help="native (data-model CSVs) or messy."),
    with_identifiers: bool = typer.Option(
        False, "--with-identifiers", help="Add names, birth dates and national ids."
    ),
) -> None:
    """Generate synthetic childhood cancer registries (one folder per country) and truth.json."""
    from rich.console import Console
    from rich.progress import Progress

    from ccdp.synth.generate import generate, parse_countries

    codes = parse_countries(countries)
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("drawing registries", total=len(codes))
        result = generate(
            out_dir,
            countries=codes,
            patients=patients,
            years=_parse_years(years),
            seed=seed,
            format=format,  # type: ignore[arg-type]
            with_identifiers=with_identifiers,
            progress=lambda code: bar.update(task, advance=1, description=f"wrote {code}"),
        )
    for code, rows in result.rows.items():
        summary = ", ".join(f"{k} {v}" for k, v in rows.items())
        typer.echo(f"{code}: {summary}")
    typer.echo(f"{result.patients} patients in {result.out_dir}; truth in {result.truth_path}")
