"""`ccdp map ...`: commands that help a data manager write a mapping spec."""

from __future__ import annotations

from pathlib import Path

import typer

map_app = typer.Typer(
    help="Draft and check mapping specs (site export -> data model).", no_args_is_help=True
)


@map_app.command("suggest")
def suggest_command(
    source: Path = typer.Argument(..., help="Folder (or file) of the site's export."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the YAML here."),
    country: str | None = typer.Option(
        None, "--country", help="ISO 3166-1 alpha-2 code for patient.country if no column."
    ),
) -> None:
    """Draft a mapping spec by matching the export's columns and values to model fields."""
    from ccdp.ingest.suggest import suggest, to_yaml

    draft = suggest(source, country=country)
    text = to_yaml(draft, source)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    checks = text.count("# check:")
    typer.echo(
        f"wrote {output}: {len(draft.spec['tables'])} tables, "
        f"{sum(len(t['fields']) for t in draft.spec['tables'].values())} fields, "
        f"{checks} to check"
    )


@map_app.command("check")
def check_command(
    mapping: Path = typer.Argument(..., help="Mapping spec (YAML or JSON)."),
    source: Path | None = typer.Argument(None, help="Apply it to this export and count rows."),
) -> None:
    """Validate a mapping spec; with SOURCE, also apply it and print rows per table."""
    from ccdp.ingest.mapping import apply_mapping, load_mapping

    spec = load_mapping(mapping)
    if source is None:
        typer.echo(f"{mapping}: valid ({', '.join(spec.tables)})")
        return
    for table, frame in apply_mapping(spec, source).items():
        typer.echo(f"{table}: {len(frame)} rows")


@map_app.command("compare")
def compare_command(
    draft: Path = typer.Argument(..., help="Mapping to measure (e.g. a `map suggest` draft)."),
    reference: Path = typer.Argument(..., help="Hand-written mapping taken as right."),
) -> None:
    """Share of the reference's field mappings the draft feeds from the same place."""
    from ccdp.ingest.mapping import load_mapping
    from ccdp.ingest.suggest import agreement

    per = agreement(load_mapping(draft), load_mapping(reference))
    right = sum(r for r, _ in per.values())
    total = sum(t for _, t in per.values())
    for table, (r, t) in per.items():
        typer.echo(f"{table}: {r}/{t}")
    typer.echo(f"total: {right}/{total} = {100 * right / max(total, 1):.1f}%")
