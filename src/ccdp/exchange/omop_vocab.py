"""OMOP vocabularies for the export: an Athena download loaded into the CDM's vocabulary tables,
and the concept ids ccdp's values map to.

Vocabularies cannot be redistributed (several carry their own licences, e.g. CPT4, MedDRA), so
ccdp ships none: the node downloads its own from Athena and passes the folder with `--vocab`.
Without it every concept id is 0 ("No matching concept") and the concept table holds that one
row, as Athena's own does, so that every concept foreign key still resolves.

Every lookup is by code or name inside a named vocabulary, never by a hard-coded concept id,
and asks for a standard concept of the domain the CDM field requires (the DQD's `fkDomain`):
a value that finds none keeps concept id 0 and its source value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ccdp.exchange.output import ExportError

ATHENA_FILES = {
    "concept": "CONCEPT.csv",
    "vocabulary": "VOCABULARY.csv",
    "domain": "DOMAIN.csv",
    "concept_class": "CONCEPT_CLASS.csv",
    "relationship": "RELATIONSHIP.csv",
    "concept_relationship": "CONCEPT_RELATIONSHIP.csv",
    "concept_synonym": "CONCEPT_SYNONYM.csv",
    "concept_ancestor": "CONCEPT_ANCESTOR.csv",
    "drug_strength": "DRUG_STRENGTH.csv",
}
"""CDM vocabulary table → the file Athena writes for it (tab-separated, a header row)."""

REQUIRED_FILES = ("concept", "concept_relationship")

NO_MATCH = {
    "concept": "(0, 'No matching concept', 'Metadata', 'None', 'Undefined', NULL, "
    "'No matching concept', DATE '1970-01-01', DATE '2099-12-31', NULL)",
    "vocabulary": "('None', 'OMOP Standardized Vocabularies', NULL, NULL, 0)",
    "domain": "('Metadata', 'Metadata', 0)",
    "concept_class": "('Undefined', 'Undefined', 0)",
}
"""Without a vocabulary: concept 0 as Athena writes it, and the three rows its keys point at."""


def _named(name: str) -> str:
    """The SQL condition: the concept `c` is called `name` (any case)."""
    return f"lower(c.concept_name) = '{name}'"


CONSTANTS: dict[str, tuple[str, str, str]] = {
    # key: (vocabulary_id, domain_id, SQL condition on the concept `c`)
    "male": ("Gender", "Gender", "c.concept_code = 'M'"),
    "female": ("Gender", "Gender", "c.concept_code = 'F'"),
    "registry": ("Type Concept", "Type Concept", _named("registry")),
    "positive": ("SNOMED", "Meas Value", _named("positive")),
    "negative": ("SNOMED", "Meas Value", _named("negative")),
    "first_occurrence": ("Episode", "Episode", _named("disease first occurrence")),
    "recurrence": ("Episode", "Episode", _named("disease recurrence")),
    "progression": ("Episode", "Episode", _named("disease progression")),
    "regimen": ("Episode", "Episode", _named("treatment regimen")),
    "field_condition": (
        "CDM",
        "Metadata",
        _named("condition_occurrence.condition_occurrence_id"),
    ),
    "field_drug": ("CDM", "Metadata", _named("drug_exposure.drug_exposure_id")),
    "field_procedure": (
        "CDM",
        "Metadata",
        _named("procedure_occurrence.procedure_occurrence_id"),
    ),
    "field_measurement": ("CDM", "Metadata", _named("measurement.measurement_id")),
    "cdm_version": ("CDM", "Metadata", "lower(c.concept_name) LIKE 'omop cdm version 5.4%'"),
}
"""The fixed concepts the export writes, each found by its code or name (ids differ by release
only in theory, but a test fixture must be able to use made-up ids)."""

UCUM = {"%": "%", "10^9/L": "10*9/L"}
"""Units the model writes → their UCUM codes (Athena's UCUM concept codes)."""


class VocabularyError(ExportError):
    """An Athena vocabulary folder that cannot be loaded (missing file, column or bad row)."""


def load_no_vocabulary(con: Any) -> None:
    """Concept 0 and the rows its keys reference: every concept foreign key resolves."""
    for table, row in NO_MATCH.items():
        con.execute(f"INSERT INTO cdm.{table} VALUES {row}")


def load_athena(con: Any, folder: Path) -> dict[str, int]:
    """Load every Athena file present in `folder` into its CDM vocabulary table."""
    if not folder.is_dir():
        raise VocabularyError(f"{folder}: no vocabulary folder here (--vocab)")
    counts: dict[str, int] = {}
    for table, name in ATHENA_FILES.items():
        path = folder / name
        if not path.is_file():
            if table in REQUIRED_FILES:
                raise VocabularyError(f"{path}: missing; an Athena download always has {name}")
            continue
        counts[table] = _load_file(con, table, path)
    return counts


def _load_file(con: Any, table: str, path: Path) -> int:
    """Insert one Athena file, every column cast to the CDM's type (dates are YYYYMMDD)."""
    cols = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = 'cdm' "
        "AND table_name = ? ORDER BY column_index",
        [table],
    ).fetchall()
    src = (
        f"read_csv('{_quote(path)}', delim = '\t', header = true, quote = '', escape = '', "
        "all_varchar = true, normalize_names = true)"
    )
    header = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    missing = [c for c, _ in cols if c not in header and _required(con, table, c)]
    if missing:
        raise VocabularyError(f"{path}: column(s) {', '.join(missing)} missing (CDM {table})")
    exprs = [_cast(c, t) if c in header else f"NULL AS {c}" for c, t in cols]
    try:
        con.execute(f"INSERT INTO cdm.{table} SELECT {', '.join(exprs)} FROM {src}")
    except Exception as err:  # duckdb's Conversion/Constraint errors: name the file
        raise VocabularyError(f"{path}: cannot load into CDM {table}: {err}") from err
    row = con.execute(f"SELECT count(*) FROM cdm.{table}").fetchone()
    return int(row[0]) if row else 0


def _required(con: Any, table: str, column: str) -> bool:
    row = con.execute(
        "SELECT NOT is_nullable FROM duckdb_columns() WHERE database_name = 'cdm' "
        "AND table_name = ? AND column_name = ?",
        [table, column],
    ).fetchone()
    return bool(row and row[0])


def _cast(column: str, data_type: str) -> str:
    """An Athena text column as the CDM type: '' is NULL, dates YYYYMMDD (or ISO)."""
    v = f"nullif({column}, '')"
    if data_type == "DATE":
        return (
            f"coalesce(try_strptime({v}, '%Y%m%d'), try_strptime({v}, '%Y-%m-%d'))::DATE"
            f" AS {column}"
        )
    if data_type in ("INTEGER", "BIGINT"):
        return f"CAST({v} AS {data_type}) AS {column}"
    if data_type.startswith("DECIMAL") or data_type == "DOUBLE":
        return f"CAST({v} AS DOUBLE) AS {column}"
    return f"{v} AS {column}"


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def constants(con: Any) -> dict[str, int]:
    """The fixed concepts (`CONSTANTS`) found in the loaded vocabulary; 0 where absent."""
    found: dict[str, int] = {}
    for key, (vocabulary, domain, cond) in CONSTANTS.items():
        row = con.execute(
            "SELECT min(c.concept_id) FROM cdm.concept c WHERE c.vocabulary_id = ? "
            f"AND c.domain_id = ? AND c.standard_concept = 'S' AND c.invalid_reason IS NULL "
            f"AND {cond}",
            [vocabulary, domain],
        ).fetchone()
        found[key] = int(row[0]) if row and row[0] is not None else 0
    return found


def build_maps(con: Any) -> None:
    """Temp tables from source values to concepts (empty when no vocabulary is loaded):
    `_omop_condition` (ICD-O-3 `NNNN/B-CXX.X` via 'Maps to'), `_omop_drug` (RxNorm ingredient
    by name), `_omop_unit` (UCUM code)."""
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _omop_condition AS
        SELECT s.concept_code AS code, min(s.concept_id) AS source_concept_id,
               coalesce(min(t.concept_id), 0) AS concept_id
        FROM cdm.concept s
        LEFT JOIN cdm.concept_relationship r ON r.concept_id_1 = s.concept_id
             AND r.relationship_id = 'Maps to' AND r.invalid_reason IS NULL
        LEFT JOIN cdm.concept t ON t.concept_id = r.concept_id_2 AND t.standard_concept = 'S'
             AND t.domain_id = 'Condition' AND t.invalid_reason IS NULL
        WHERE s.vocabulary_id = 'ICDO3' AND s.concept_code IN (SELECT code FROM _omop_tumour)
        GROUP BY s.concept_code"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _omop_drug AS
        SELECT lower(c.concept_name) AS name, min(c.concept_id) AS concept_id
        FROM cdm.concept c
        WHERE c.vocabulary_id = 'RxNorm' AND c.concept_class_id = 'Ingredient'
          AND c.domain_id = 'Drug' AND c.standard_concept = 'S' AND c.invalid_reason IS NULL
          AND lower(c.concept_name) IN (SELECT DISTINCT lower(agent) FROM treatment)
        GROUP BY 1"""
    )
    units = ", ".join(f"('{k}', '{v}')" for k, v in UCUM.items())
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _omop_unit AS
        SELECT u.unit, min(c.concept_id) AS concept_id
        FROM (VALUES {units}) u(unit, ucum)
        JOIN cdm.concept c ON c.concept_code = u.ucum AND c.vocabulary_id = 'UCUM'
          AND c.domain_id = 'Unit' AND c.standard_concept = 'S' AND c.invalid_reason IS NULL
        GROUP BY 1"""
    )
