"""SQL that turns a table of raw strings (native canonical form) into typed work columns.

For every input field the work table keeps the typed value under the field's name and, when the
type is not a string, the trimmed raw text as `<field>__raw`, so that edits can say which value
failed and quarantine can keep what the site sent. Nothing here loops over rows: it is one SELECT.
"""

from __future__ import annotations

import duckdb

from ccdp.model import FieldDef, TableDef

RAW_SUFFIX = "__raw"
# the text a field had in the source before `replace_raw` rewrote it (a key before its
# pseudonym): kept in the work table so quarantine can name the row as the site knows it
SOURCE_SUFFIX = "__source"

# LIKE fixes the shape (digits are then checked by strptime); 4x cheaper than a regex
_ISO_DAY = "'____-__-__'"
_ISO_MONTH = "'____-__'"
_INTEGER = r"'[+-]?\d+'"
_NUMBER = r"'[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?'"

TYPE_WORDS: dict[str, str] = {
    "string": "text",
    "integer": "an integer",
    "float": "a number",
    "boolean": "true or false",
    "date": "a date (YYYY-MM-DD)",
    "partial_date": "a date (YYYY-MM-DD or YYYY-MM)",
}


def q(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: object) -> str:
    """An SQL literal for a string or number."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def raw_column(field: FieldDef) -> str:
    """Name of the work column holding the raw text of `field`."""
    return field.name if field.type == "string" else field.name + RAW_SUFFIX


def clean_text(expr: str) -> str:
    """Trimmed text, empty -> NULL (a missing value is written as an empty cell). Only values
    with a space at either end are trimmed: half the cost of trimming every cell."""
    text = f"CAST({expr} AS VARCHAR)"
    return (
        f"CASE WHEN {text} LIKE ' %' OR {text} LIKE '% ' THEN NULLIF(TRIM({text}), '') "
        f"ELSE NULLIF({text}, '') END"
    )


def typed_expr(field: FieldDef, raw: str) -> str:
    """Typed value of the raw text `raw` (an SQL expression); NULL when it does not parse."""
    match field.type:
        case "string":
            return raw
        case "integer":
            return (
                f"CASE WHEN regexp_full_match({raw}, {_INTEGER}) "
                f"THEN TRY_CAST({raw} AS INTEGER) END"
            )
        case "float":
            return (
                f"CASE WHEN regexp_full_match({raw}, {_NUMBER}) THEN TRY_CAST({raw} AS DOUBLE) END"
            )
        case "boolean":
            return f"CASE lower({raw}) WHEN 'true' THEN true WHEN 'false' THEN false END"
        case "date":
            return (
                f"CASE WHEN {raw} LIKE {_ISO_DAY} AND {raw} NOT LIKE '%-_-%' "
                f"THEN CAST(try_strptime({raw}, '%Y-%m-%d') AS DATE) END"
            )
        case "partial_date":
            return (
                f"CASE WHEN {raw} LIKE {_ISO_DAY} AND {raw} NOT LIKE '%-_-%' "
                f"THEN CAST(try_strptime({raw}, '%Y-%m-%d') AS DATE) "
                f"WHEN {raw} LIKE {_ISO_MONTH} "
                f"THEN CAST(try_strptime({raw} || '-15', '%Y-%m-%d') AS DATE) END"
            )
    raise ValueError(f"unknown field type {field.type}")


def precision_expr(raw: str, typed: str) -> str:
    """'day' or 'month' for a partial date that parsed; NULL otherwise."""
    return (
        f"CASE WHEN {typed} IS NULL THEN NULL WHEN length({raw}) = 10 THEN 'day' ELSE 'month' END"
    )


def work_select(
    table: TableDef,
    source: str,
    present: set[str],
    *,
    provenance: dict[str, str] | None = None,
    replace_raw: dict[str, str] | None = None,
) -> str:
    """SELECT building the work table of `table` from relation `source`.

    `present` are the source's columns (missing fields become NULL); `provenance` maps `_row`,
    `_source_file`, `_source_row` to SQL over `src` (omitted when the caller derives them from
    the work table's rowid); `replace_raw` maps a field to an SQL expression over its cleaned
    text `{raw}` (used to pseudonymise keys at the door); the text before the replacement is
    kept as `<field>__source`.
    """
    cols = [f"{expr} AS {q(name)}" for name, expr in (provenance or {}).items()]
    for field in table.input_fields:
        raw = (
            clean_text(f"src.{q(field.name)}") if field.name in present else "CAST(NULL AS VARCHAR)"
        )
        if replace_raw and field.name in replace_raw:
            cols.append(f"{raw} AS {q(field.name + SOURCE_SUFFIX)}")
            raw = replace_raw[field.name].format(raw=raw)
        if field.type == "string":
            cols.append(f"{raw} AS {q(field.name)}")
            continue
        cols.append(f"{raw} AS {q(field.name + RAW_SUFFIX)}")
    # typed columns from the raw ones, in a second projection so each raw text is cleaned once
    outer = ["w.*"]
    for field in table.input_fields:
        if field.type == "string":
            continue
        raw = f"w.{q(field.name + RAW_SUFFIX)}"
        typed = typed_expr(field, raw)
        outer.append(f"{typed} AS {q(field.name)}")
        precision = field.name + "_precision"
        if field.type == "partial_date" and precision in table.field_names:
            outer.append(f"{precision_expr(raw, typed)} AS {q(precision)}")
    inner = f"SELECT {', '.join(cols)} FROM {source} AS src"
    return f"SELECT {', '.join(outer)} FROM ({inner}) AS w"


def raw_text_expr(field: FieldDef, typed: str, precision: str | None = None) -> str:
    """The canonical text of a stored typed value (what `typed_expr` reads back to it), so that
    stored rows can be checked again by the same SQL as fresh ones; `precision` is the SQL of a
    partial date's precision column."""
    match field.type:
        case "string":
            return typed
        case "date":
            return f"strftime({typed}, '%Y-%m-%d')"
        case "partial_date" if precision:
            return (
                f"CASE WHEN {precision} = 'month' THEN strftime({typed}, '%Y-%m') "
                f"ELSE strftime({typed}, '%Y-%m-%d') END"
            )
        case "partial_date":
            return f"strftime({typed}, '%Y-%m-%d')"
        case "boolean":
            return f"CASE WHEN {typed} THEN 'true' WHEN NOT {typed} THEN 'false' END"
    return f"CAST({typed} AS VARCHAR)"


def any_row(con: duckdb.DuckDBPyConnection, relation: str, where: str = "true") -> bool:
    """Whether a relation has a row (lets writes skip whole-table work that would do nothing)."""
    sql = f"SELECT EXISTS (SELECT 1 FROM {relation} WHERE {where})"
    return bool(con.execute(sql).fetchall()[0][0])
