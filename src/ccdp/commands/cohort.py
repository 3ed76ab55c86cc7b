"""`ccdp cohort variables`: the analysis view's dictionary; `ccdp cohort check-feasibility`: whether
a study may be asked as a feasibility count (docs/feasibility.md)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

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


@cohort_app.command("check-feasibility")
def check_feasibility(
    spec: Path = typer.Argument(..., help="Study spec (YAML or JSON): analysis, cohort, by."),
) -> None:
    """Check a study against the feasibility tier's rules, without data.

    A feasibility count filters and groups on declared levels, bands and groupings only
    (docs/feasibility.md); anything else is refused naming the variable and the rule."""
    from ccdp.cohort.feasibility import check_feasibility_study
    from ccdp.cohort.spec import CohortError
    from ccdp.specfile import read_spec

    raw, where = read_spec(spec, "study spec", "analysis, cohort, by", CohortError)
    by = raw.get("by") or []
    by = [by] if isinstance(by, str) else list(by)
    try:
        check_feasibility_study(str(raw.get("analysis")), raw.get("cohort"), by)
    except CohortError as exc:
        raise CohortError(f"{where}: {exc}") from None
    typer.echo(f"{where}: within the feasibility tier's rules (declared levels, bands, groupings)")
