"""Render the data dictionary (Markdown for people, JSON for machines) from the model."""

from __future__ import annotations

import json
from typing import Any

from ccdp.model.schema import FieldDef, Model, load_model


def _values(f: FieldDef) -> str:
    parts: list[str] = []
    if f.allowed is not None:
        parts.append(" \\| ".join(str(v) for v in f.allowed))
    if f.code_system:
        parts.append(f"code system `{f.code_system}`")
    if f.min is not None or f.max is not None:
        lo = "" if f.min is None else f"{f.min:g}"
        hi = "" if f.max is None else f"{f.max:g}"
        parts.append(f"range {lo}–{hi}")
    return "; ".join(parts)


def _applies(f: FieldDef) -> str:
    """The rows a conditional field applies to, as the dictionary says it."""
    if f.applies_when is None:
        return ""
    values = " or ".join(str(v) for v in f.applies_when.values)
    return (
        f" Applies to {f.applies_when.rows} only ({f.applies_when.field} {values}): "
        "completeness is measured over them."
    )


def to_markdown(model: Model | None = None) -> str:
    """The dictionary as Markdown: one section per table, one row per field."""
    model = model or load_model()
    lines = [
        "# ccdp data dictionary",
        "",
        f"Common data model version {model.version}. Generated from `src/ccdp/model/cdm.yaml` by "
        "`ccdp dictionary --format md`; do not edit by hand.",
        "",
        "Native CSV layout: a folder with one `<table>.csv` per table, columns named exactly "
        "as the fields below (derived fields excluded), dates ISO 8601.",
        "",
    ]
    for table in model.tables.values():
        lines += [f"## `{table.name}`", "", table.description, ""]
        lines.append(f"Key: {', '.join(table.primary_key)}.")
        if table.foreign_keys:
            refs = ", ".join(f"{k} → {v}" for k, v in table.foreign_keys.items())
            lines.append(f"References: {refs}.")
        if table.identifier_fields:
            lines.append(
                f"Identifiers: {', '.join(table.identifier_fields)} (pseudonymised at ingest "
                "when the export carries direct identifiers)."
            )
        lines += [
            "",
            "| field | type | required | allowed values | unit | description |",
            "|---|---|---|---|---|---|",
        ]
        for f in table.fields:
            req = "derived" if f.derived else ("yes" if f.required else "no")
            lines.append(
                f"| `{f.name}` | {f.type} | {req} | {_values(f)} | {f.unit or ''} | "
                f"{f.description}{_applies(f)} |"
            )
        lines.append("")
    return "\n".join(lines)


def to_json(model: Model | None = None) -> str:
    """The dictionary as JSON (the model itself, serialised). Value labels and terms are left
    out: they serve the pages' wording, and the dictionary's JSON keeps the shape its readers
    know."""
    model = model or load_model()
    exclude: dict[str, Any] = {
        "terms": True,
        "tables": {"__all__": {"fields": {"__all__": {"labels"}}}},
    }
    return json.dumps(model.model_dump(mode="json", exclude_none=True, exclude=exclude), indent=2)
