"""Validation edits as data: `data/edits.yaml` parsed into `Edit` models, checked at load."""

from __future__ import annotations

import csv
import re
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from ccdp.errors import SpecError
from ccdp.model import load_model

# libyaml's parser when PyYAML has it (same documents, ~10x less CPU than the pure-Python one)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Severity = Literal["error", "warning"]
Category = Literal["conformance", "completeness", "plausibility", "uniqueness", "relational"]
Check = Literal[
    "required",
    "type",
    "allowed",
    "range",
    "code",
    "date_range",
    "date_order",
    "key_text",
    "duplicate_key",
    "orphan",
    "parent_quarantined",
    "no_valid_child",
    "sql",
]


class Edit(BaseModel):
    """One validation edit. `sql` edits name their table and field and give `when`/`message`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    check: Check
    severity: Severity
    category: Category
    description: str
    code_system: str | None = None
    table: str | None = None
    field: str | None = None
    when: str | None = None
    join: str | None = None
    message: str | None = None
    child: str | None = None  # no_valid_child: the table whose rows refer to `table`

    @model_validator(mode="after")
    def _complete(self) -> Edit:
        if self.check == "sql":
            if not (self.table and self.field and self.when and self.message):
                raise ValueError(f"edit {self.id}: sql edits need table, field, when and message")
            load_model().table(self.table).field(self.field)
        if self.check == "no_valid_child":
            self._child_refers_to_table()
        if self.check == "code" and not self.code_system:
            raise ValueError(f"edit {self.id}: code edits need a code_system")
        return self

    def _child_refers_to_table(self) -> None:
        """A no_valid_child edit names a child table whose foreign key is `table`'s key."""
        if not (self.table and self.field and self.child and self.message):
            raise ValueError(
                f"edit {self.id}: no_valid_child edits need table, field, child, message"
            )
        if not self.child_key():
            raise ValueError(
                f"edit {self.id}: table {self.child} has no foreign key to {self.table}"
            )

    def child_key(self) -> tuple[str, str] | None:
        """(the child's foreign-key column, the parent column it refers to), or None."""
        if not self.child or not self.table:
            return None
        for col, ref in load_model().table(self.child).foreign_keys.items():
            parent, _, pcol = ref.partition(".")
            if parent == self.table:
                return col, pcol
        return None

    def parents(self) -> list[str]:
        """Parent tables (by alias = table name) the SQL refers to."""
        text = f"{self.when or ''} {self.join or ''} {self.message or ''}"
        return [t for t in load_model().table_names if re.search(rf"\b{t}\.", text)]


@cache
def load_edits() -> tuple[Edit, ...]:
    """The packaged edits, validated once per process; ids are unique."""
    text = resources.files("ccdp.quality").joinpath("data/edits.yaml").read_text(encoding="utf-8")
    try:
        edits = tuple(Edit(**item) for item in yaml.load(text, Loader=_LOADER)["edits"])
    except (ValueError, KeyError) as exc:
        raise SpecError(f"ccdp/quality/data/edits.yaml: {exc}") from exc
    ids = [e.id for e in edits]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SpecError(f"ccdp/quality/data/edits.yaml: duplicate edit ids {sorted(dupes)}")
    return edits


def edit(edit_id: str) -> Edit:
    """The edit with this id."""
    for e in load_edits():
        if e.id == edit_id:
            return e
    raise KeyError(f"no edit {edit_id!r}")


def edits_by_check(check: str) -> list[Edit]:
    return [e for e in load_edits() if e.check == check]


def reference_table(name: str) -> list[dict[str, str]]:
    """Rows of a packaged reference CSV (`data/<name>.csv`, `#` lines are its source note)."""
    text = resources.files("ccdp.quality").joinpath(f"data/{name}.csv").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return list(csv.DictReader(lines))


def edits_markdown() -> str:
    """The edit catalogue as Markdown (docs/quality-edits.md is generated from it)."""
    lines = [
        "# Quality edits",
        "",
        "Generated from `src/ccdp/quality/data/edits.yaml` by `ccdp edits --format md`;",
        "do not edit by hand.",
        "Every ingest runs every edit. `error`: the row goes to quarantine with every reason;",
        "`warning`: the row is stored and flagged in `quality_flag`. Messages name the source",
        "file, row, field, value and edit id. Reference ranges: `src/ccdp/quality/data/*.csv`.",
        "",
        "| id | severity | category | applies to | rule |",
        "|---|---|---|---|---|",
    ]
    for e in load_edits():
        where = f"{e.table}.{e.field}" if e.table else f"every field ({e.check})"
        if e.check == "code":
            where = f"fields coded in {e.code_system}"
        if e.check == "date_order":
            where = "dates read through a mapping's date_formats"
        if e.check in ("key_text", "duplicate_key", "orphan", "parent_quarantined"):
            where = "keys of every table"
        if e.check == "no_valid_child":
            where = f"{e.table} rows whose every {e.child} failed"
        lines.append(f"| `{e.id}` | {e.severity} | {e.category} | {where} | {e.description} |")
    return "\n".join(lines) + "\n"
