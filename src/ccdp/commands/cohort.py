"""`ccdp cohort variables`: the analysis view's dictionary."""

from __future__ import annotations

import json
from enum import StrEnum

import typer

cohort_app = typer.Typer(help="The analysis view and cohort specs.", no_args_is_help=True)


class Format(StrEnum):
    md = "md"
    json = "json"


@cohort_app.command("variables")
def variables(format: Format = typer.Option(Format.md, "--format", help="md or json")) -> None:
    """Print every analysis-view variable with its type, meaning and derivation."""
    from ccdp.cohort.view import describe, to_markdown

    typer.echo(to_markdown() if format is Format.md else json.dumps(describe(), indent=2))
