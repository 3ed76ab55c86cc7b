"""Load the declarative data model (cdm.yaml) and derive DDL from it.

Every other stage asks this module what a table or field is; nothing else hard-codes field lists.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

FieldType = Literal["string", "integer", "float", "boolean", "date", "partial_date"]

DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "INTEGER",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "partial_date": "DATE",
}


class AppliesWhen(BaseModel):
    """The rows a conditional field applies to: those whose `field` (of the same table) holds
    one of `values`, e.g. a death date only for the dead; `rows` names them in reports ("of 12
    deceased"). Completeness is measured over those rows only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    values: list[Any] = Field(min_length=1)
    rows: str

    def sql(self, quote: Callable[[str], str]) -> str:
        """The condition as DuckDB SQL (`quote` quotes the column name)."""
        shown = ", ".join(
            str(v) if isinstance(v, int | float) else "'" + str(v).replace("'", "''") + "'"
            for v in self.values
        )
        return f"{quote(self.field)} IN ({shown})"


class FieldDef(BaseModel):
    """One field of a table: its type, whether it is required, and what values it may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: FieldType
    required: bool = False
    derived: bool = False
    identifier: bool = Field(
        False, description="a record key from site values: pseudonymised with patient ids"
    )
    allowed: list[Any] | None = None
    labels: dict[str, str] | None = Field(
        None, description="words a page shows for allowed values (the value itself otherwise)"
    )
    code_system: str | None = None
    min: float | None = None
    max: float | None = None
    unit: str | None = None
    applies_when: AppliesWhen | None = Field(
        None, description="the rows the field applies to (completeness is measured over them)"
    )
    description: str

    @model_validator(mode="after")
    def _labels_are_allowed(self) -> FieldDef:
        """A label names an allowed value, so values and their words are declared together."""
        if self.labels:
            known = {str(v) for v in self.allowed or []}
            stray = sorted(set(self.labels) - known)
            if stray:
                raise ValueError(f"field {self.name}: labels for values not allowed: {stray}")
        return self

    @property
    def duckdb_type(self) -> str:
        return DUCKDB_TYPES[self.type]

    def label(self, value: Any) -> str:
        """The words for an allowed value (its label, else the value as written)."""
        return (self.labels or {}).get(str(value), str(value))


class TableDef(BaseModel):
    """One table: its fields in order, its key and the keys it refers to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    primary_key: list[str]
    foreign_keys: dict[str, str] = Field(default_factory=dict)
    fields: list[FieldDef]

    @model_validator(mode="after")
    def _keys_are_fields(self) -> TableDef:
        names = {f.name for f in self.fields}
        missing = [k for k in [*self.primary_key, *self.foreign_keys] if k not in names]
        if missing:
            raise ValueError(f"table {self.name}: key field(s) {missing} are not fields")
        bad = [f.name for f in self.fields if f.identifier and f.type != "string"]
        if bad:
            raise ValueError(f"table {self.name}: identifier field(s) {bad} must be strings")
        stray = [
            f"{f.name} (applies_when {f.applies_when.field})"
            for f in self.fields
            if f.applies_when is not None and f.applies_when.field not in names
        ]
        if stray:
            raise ValueError(f"table {self.name}: conditions on unknown fields: {stray}")
        return self

    def field(self, name: str) -> FieldDef:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"table {self.name} has no field {name!r}")

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def identifier_fields(self) -> list[str]:
        """Fields holding record keys (pseudonymised at ingest when identifiers come in)."""
        return [f.name for f in self.fields if f.identifier]

    @property
    def input_fields(self) -> list[FieldDef]:
        """Fields a source supplies (everything but derived fields)."""
        return [f for f in self.fields if not f.derived]

    def ddl(self, extra_columns: dict[str, str] | None = None) -> str:
        """CREATE TABLE statement for DuckDB; extra_columns are system columns (name -> type)."""
        cols = [f'    "{f.name}" {f.duckdb_type}' for f in self.fields]
        cols += [f'    "{n}" {t}' for n, t in (extra_columns or {}).items()]
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" (\n' + ",\n".join(cols) + "\n)"


class Model(BaseModel):
    """The whole data model: an ordered mapping of table name to table definition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    tables: dict[str, TableDef]
    terms: dict[str, str] = Field(
        default_factory=dict, description="words for machine names that are not fields"
    )

    def table(self, name: str) -> TableDef:
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(
                f"no table {name!r} in the data model (tables: {', '.join(self.tables)})"
            ) from None

    @property
    def table_names(self) -> list[str]:
        return list(self.tables)

    def term(self, name: str) -> str:
        """The words for a machine name (an outcome, a standard, a column), else the name."""
        return self.terms.get(name, name)

    @model_validator(mode="after")
    def _identifiers_join(self) -> Model:
        """A foreign key and the key it refers to are pseudonymised alike, or neither is: else
        the pseudonymised child would no longer find its parent."""
        for table in self.tables.values():
            for fk, target in table.foreign_keys.items():
                parent, _, field = target.partition(".")
                if parent not in self.tables or field not in self.tables[parent].field_names:
                    raise ValueError(f"table {table.name}: {fk} refers to unknown {target}")
                if table.field(fk).identifier != self.tables[parent].field(field).identifier:
                    raise ValueError(
                        f"table {table.name}: {fk} and {target} must both be identifiers or "
                        "neither (pseudonyms must join)"
                    )
        return self


@cache
def load_model() -> Model:
    """The packaged data model, parsed and validated once per process."""
    text = resources.files("ccdp.model").joinpath("cdm.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    tables = {name: TableDef(name=name, **spec) for name, spec in raw["tables"].items()}
    return Model(version=raw["version"], tables=tables, terms=raw.get("terms") or {})
