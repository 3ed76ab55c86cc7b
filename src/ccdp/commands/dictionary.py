"""CLI commands over the data model."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer


class DictFormat(StrEnum):
    md = "md"
    json = "json"


def dictionary(
    format: DictFormat = typer.Option(DictFormat.md, "--format", help="md or json"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to a file."),
) -> None:
    """Print the data dictionary: every table and field, with type and allowed values."""
    from ccdp.model.dictionary import to_json, to_markdown

    text = to_markdown() if format is DictFormat.md else to_json()
    if output:
        output.write_text(text + "\n", encoding="utf-8")
    else:
        typer.echo(text)
