"""Checks of an OMOP CDM 5.4 database, read from the official files rather than restated.

The Data Quality Dashboard's field- and table-level definitions
(`data/omop_dqd_5.4_*_level.csv`) give isRequired, isPrimaryKey, isForeignKey, fkDomain and
fkClass per field; the official primary-key and foreign-key scripts (`data/omop_cdm_5.4_duckdb_
{primary_keys,constraints}.sql`) are parsed and each key checked by a query, since DuckDB cannot
add a foreign key by ALTER TABLE. Each check counts violating rows the way the DQD's SQL does
(a foreign key counts non-NULL values absent from the referenced table: concept 0 passes only
because the concept table holds it; fkDomain ignores concept 0).

The shipped DQD CSVs carry no plausibility columns (plausibleValueLow/High,
plausibleTemporalAfter, plausibleGender), so `PLAUSIBLE` adds ccdp's own temporal and range
checks in their spirit: named `plausible*`, each a query stated below.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

FIELD_LEVEL = "omop_dqd_5.4_field_level.csv"
TABLE_LEVEL = "omop_dqd_5.4_table_level.csv"
PRIMARY_KEYS = "omop_cdm_5.4_duckdb_primary_keys.sql"
CONSTRAINTS = "omop_cdm_5.4_duckdb_constraints.sql"

_KEY = re.compile(
    r"ALTER TABLE @cdmDatabaseSchema\.(\w+) ADD CONSTRAINT (\w+) "
    r"(PRIMARY KEY|FOREIGN KEY) \(([\w, ]+)\)(?: REFERENCES @cdmDatabaseSchema\.(\w+) \((\w+)\))?",
    re.IGNORECASE,
)

_BIRTH = (
    "JOIN person p USING (person_id) WHERE {date} < make_date(p.year_of_birth, "
    "coalesce(p.month_of_birth, 1), 1)"
)
_IN_PERIOD = (
    "WHERE NOT EXISTS (SELECT 1 FROM observation_period o WHERE o.person_id = x.person_id "
    "AND {date} BETWEEN o.observation_period_start_date AND o.observation_period_end_date)"
)

PLAUSIBLE: list[tuple[str, str, str, str]] = [
    # (check, table, field, SQL counting violations over table `x`)
    ("plausibleValueLow", "person", "year_of_birth", "WHERE year_of_birth < 1850"),
    (
        "plausibleValueHigh",
        "person",
        "year_of_birth",
        "WHERE year_of_birth > year(current_date)",
    ),
    ("plausibleValue", "person", "month_of_birth", "WHERE month_of_birth NOT BETWEEN 1 AND 12"),
    ("plausibleValue", "person", "day_of_birth", "WHERE day_of_birth NOT BETWEEN 1 AND 31"),
    (
        "plausibleTemporalAfter",
        "observation_period",
        "observation_period_end_date",
        "WHERE observation_period_end_date < observation_period_start_date",
    ),
    (
        "plausibleTemporalAfter",
        "drug_exposure",
        "drug_exposure_end_date",
        "WHERE drug_exposure_end_date < drug_exposure_start_date",
    ),
    (
        "plausibleTemporalAfter",
        "procedure_occurrence",
        "procedure_end_date",
        "WHERE procedure_end_date < procedure_date",
    ),
    (
        "plausibleTemporalAfter",
        "episode",
        "episode_end_date",
        "WHERE episode_end_date < episode_start_date",
    ),
    *[
        ("plausibleTemporalAfter", table, field, _BIRTH.format(date=f"x.{field}"))
        for table, field in [
            ("observation_period", "observation_period_start_date"),
            ("condition_occurrence", "condition_start_date"),
            ("drug_exposure", "drug_exposure_start_date"),
            ("procedure_occurrence", "procedure_date"),
            ("measurement", "measurement_date"),
            ("specimen", "specimen_date"),
            ("death", "death_date"),
            ("episode", "episode_start_date"),
        ]
    ],
    *[
        ("plausibleDuringObservation", table, field, _IN_PERIOD.format(date=f"x.{field}"))
        for table, field in [
            ("condition_occurrence", "condition_start_date"),
            ("drug_exposure", "drug_exposure_start_date"),
            ("procedure_occurrence", "procedure_date"),
            ("measurement", "measurement_date"),
            ("specimen", "specimen_date"),
            ("death", "death_date"),
            ("episode", "episode_start_date"),
        ]
    ],
    (
        "plausibleValueLow",
        "measurement",
        "value_as_number",
        "WHERE value_as_number < 0",
    ),
]
"""ccdp's own plausibility checks (the shipped DQD files carry none)."""


@dataclass(frozen=True)
class CheckResult:
    """One check over one table or field: how many rows violate it."""

    check: str
    table: str
    field: str
    violations: int
    rule: str

    @property
    def failed(self) -> bool:
        return self.violations > 0

    def __str__(self) -> str:
        return f"{self.check} {self.table}.{self.field}: {self.violations} rows ({self.rule})"


def _data(name: str) -> str:
    return resources.files("ccdp.exchange").joinpath("data", name).read_text(encoding="utf-8")


def _csv(name: str) -> list[dict[str, str]]:
    """A shipped DQD CSV, its one-line source header skipped."""
    lines = [line for line in _data(name).splitlines() if not line.startswith("# Source:")]
    return list(csv.DictReader(lines))


def field_rules() -> list[dict[str, str]]:
    """The DQD's field-level definitions, one dict per CDM field."""
    return _csv(FIELD_LEVEL)


def key_rules() -> list[tuple[str, str, str, list[str], str | None, str | None]]:
    """(kind, table, name, columns, ref_table, ref_column) for every key in the official files."""
    keys = []
    for name in (PRIMARY_KEYS, CONSTRAINTS):
        for m in _KEY.finditer(_data(name)):
            table, cname, kind, cols, ref, refcol = m.groups()
            columns = [c.strip().lower() for c in cols.split(",")]
            keys.append(
                (
                    kind.upper(),
                    table.lower(),
                    cname,
                    columns,
                    ref and ref.lower(),
                    refcol and refcol.lower(),
                )
            )
    return keys


def run_checks(db: Path | str, *, tables: set[str] | None = None) -> list[CheckResult]:
    """Every check over the CDM database `db` (or only over `tables`): the DQD's table- and
    field-level checks, the official keys, and `PLAUSIBLE`."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        wanted = present if tables is None else present & tables
        results = _table_checks(con, present, tables)
        results += _field_checks(con, present, wanted)
        results += _key_checks(con, present, wanted)
        results += [
            CheckResult(check, table, field, _count(con, f"FROM {table} x {sql}"), sql)
            for check, table, field, sql in PLAUSIBLE
            if table in wanted
        ]
        return results
    finally:
        con.close()


def _count(con: Any, sql: str) -> int:
    row = con.execute(f"SELECT count(*) {sql}").fetchone()
    return int(row[0]) if row else 0


def _table_checks(con: Any, present: set[str], tables: set[str] | None) -> list[CheckResult]:
    """cdmTable: every table of the DQD's list exists; a required one holds rows."""
    results = []
    for rule in _csv(TABLE_LEVEL):
        table = rule["cdmTableName"].lower()
        if tables is not None and table not in tables:
            continue
        exists = table in present
        results.append(CheckResult("cdmTable", table, "", 0 if exists else 1, "table exists"))
        if rule["isRequired"] == "Yes":
            rows = _count(con, f"FROM {table}") if exists else 0
            results.append(
                CheckResult("isRequired", table, "", 0 if rows else 1, "required table has rows")
            )
    return results


def _field_checks(con: Any, present: set[str], wanted: set[str]) -> list[CheckResult]:
    """isRequired, isPrimaryKey, isForeignKey, fkDomain and fkClass, as the DQD states them."""
    cols = {
        (r[0], r[1])
        for r in con.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall()
    }
    results = []
    for rule in field_rules():
        table, field = rule["cdmTableName"].lower(), rule["cdmFieldName"].lower().strip('"')
        if table not in wanted:
            continue
        if (table, field) not in cols:
            results.append(CheckResult("cdmField", table, field, 1, "field exists"))
            continue
        results.extend(_field(con, rule, table, field, present))
    return results


def _field(
    con: Any, rule: dict[str, str], table: str, field: str, present: set[str]
) -> list[CheckResult]:
    out = []
    col = f'"{field}"'  # quoted: the CDM has a field called "offset"
    if rule["isRequired"] == "Yes":
        out.append(
            CheckResult(
                "isRequired",
                table,
                field,
                _count(con, f"FROM {table} WHERE {col} IS NULL"),
                "not NULL",
            )
        )
    if rule["isPrimaryKey"] == "Yes":
        sql = f"FROM (SELECT {col} FROM {table} GROUP BY {col} HAVING count(*) > 1)"
        out.append(CheckResult("isPrimaryKey", table, field, _count(con, sql), "unique"))
    ref, refcol = rule["fkTableName"].lower(), rule["fkFieldName"].lower()
    if rule["isForeignKey"] == "Yes" and ref in present:
        out.append(
            CheckResult(
                "isForeignKey",
                table,
                field,
                _fk(con, table, col, ref, refcol),
                f"in {ref}.{refcol}",
            )
        )
    if rule["fkDomain"] != "NA" and "concept" in present:
        domains = ", ".join(f"'{d.strip()}'" for d in rule["fkDomain"].split(","))
        sql = (
            f"FROM {table} x JOIN concept c ON c.concept_id = x.{col} "
            f"WHERE c.concept_id <> 0 AND c.domain_id NOT IN ({domains})"
        )
        out.append(
            CheckResult("fkDomain", table, field, _count(con, sql), f"domain {rule['fkDomain']}")
        )
    if rule["fkClass"] != "NA" and "concept" in present:
        sql = (
            f"FROM {table} x JOIN concept c ON c.concept_id = x.{col} "
            f"WHERE c.concept_id <> 0 AND c.concept_class_id <> '{rule['fkClass']}'"
        )
        out.append(
            CheckResult("fkClass", table, field, _count(con, sql), f"class {rule['fkClass']}")
        )
    return out


def _fk(con: Any, table: str, field: str, ref: str, refcol: str) -> int:
    """Non-NULL values of `table.field` absent from `ref.refcol` (the DQD's isForeignKey)."""
    return _count(
        con,
        f"FROM {table} x LEFT JOIN {ref} r ON x.{field} = r.{refcol} "
        f"WHERE r.{refcol} IS NULL AND x.{field} IS NOT NULL",
    )


def _key_checks(con: Any, present: set[str], wanted: set[str]) -> list[CheckResult]:
    """The official primary keys (unique, not NULL) and foreign keys (each value referenced)."""
    results = []
    for kind, table, name, columns, ref, refcol in key_rules():
        if table not in wanted:
            continue
        if kind == "PRIMARY KEY":
            keys = ", ".join(columns)
            sql = f"FROM (SELECT {keys} FROM {table} GROUP BY {keys} HAVING count(*) > 1)"
            results.append(CheckResult("primaryKey", table, keys, _count(con, sql), name))
        elif ref in present and ref is not None and refcol is not None:
            n = _fk(con, table, columns[0], ref, refcol)
            results.append(CheckResult("foreignKey", table, columns[0], n, name))
    return results
