"""OMOP CDM 5.4 with the Oncology extension: the model to a CDM database (one DuckDB file).

The tables are created by the official DuckDB DDL (OHDSI/CommonDataModel, shipped unchanged in
`data/`), filled by one `INSERT … SELECT` per table from the store (`omop_sql`). Primary keys
are not declared: ids are ranks, unique by construction, and an index per table would cost a
fifth of the export's time; `declare_primary_keys` adds the official ones (DuckDB checks them as
it adds them) for a user who wants them. Concept ids come from an Athena
folder the node downloaded itself (`omop_vocab`); without one every concept id is 0, and the
export says so in its summary and in the CDM's `metadata` table. See docs/exchange/omop.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from ccdp.exchange import omop_sql, omop_vocab
from ccdp.exchange.output import ExportError, ExportSummary
from ccdp.store import NodeStore

STANDARD = "OMOP CDM 5.4"
PROFILES = ["OMOP CDM Oncology extension (episode, episode_event)"]
DDL_FILE = "omop_cdm_5.4_duckdb_ddl.sql"
PRIMARY_KEYS_FILE = "omop_cdm_5.4_duckdb_primary_keys.sql"
SCHEMA_TOKEN = "@cdmDatabaseSchema"
NO_VOCABULARY = (
    "No vocabulary given (--vocab): every concept id is 0 ('No matching concept'); the source "
    "values (ICD-O-3 codes, agents, markers) are kept in the *_source_value columns."
)


def official_sql(name: str, schema: str = "cdm") -> str:
    """An official OHDSI script shipped in `data/`, its schema placeholder replaced."""
    text = resources.files("ccdp.exchange").joinpath("data", name).read_text(encoding="utf-8")
    return text.replace(SCHEMA_TOKEN, schema)


def export_store(
    store: NodeStore,
    out: Path,
    *,
    vocab: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write the CDM tables for every patient of `store` into the DuckDB file `out`."""
    if out.exists():
        raise ExportError(f"{out}: already exists; the OMOP export writes a new database")
    con = store.con.cursor()
    con.execute(f"ATTACH '{_quote(out)}' AS cdm (READ_WRITE)")
    kept = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()
    # every id is explicit, so the physical row order carries nothing: letting DuckDB write in
    # any order lets it insert in parallel (about half the wall time at 200,000 patients)
    con.execute("SET preserve_insertion_order = false")
    try:
        summary = _export(con, vocab, progress or (lambda done: None))
        con.execute("CHECKPOINT cdm")
    finally:
        con.execute(f"SET preserve_insertion_order = {bool(kept and kept[0])}")
        _drop_temps(con)
        con.execute("DETACH DATABASE IF EXISTS cdm")
        con.close()
        wal = out.with_name(out.name + ".wal")  # left only by a failed export
        if wal.exists():
            wal.unlink()
    return summary


def declare_primary_keys(db: Path) -> None:
    """Run the official primary-key script on the CDM database `db` (DuckDB refuses a
    duplicate or NULL key as it builds each index)."""
    import duckdb

    with duckdb.connect(str(db)) as con:
        con.execute(official_sql(PRIMARY_KEYS_FILE, "main"))


def _export(con: Any, vocab: Path | None, progress: Callable[[int], None]) -> ExportSummary:
    """Create, load and count: the whole export on an attached `cdm` database."""
    con.execute(official_sql(DDL_FILE))
    for sql in omop_sql.KEYS:
        con.execute(sql)
    summary = ExportSummary(format="omop", standard=STANDARD, profiles=list(PROFILES))
    if vocab is None:
        omop_vocab.load_no_vocabulary(con)
        summary.notes.append(NO_VOCABULARY)
    else:
        loaded = omop_vocab.load_athena(con, vocab)
        summary.notes.append(f"Vocabulary loaded from {vocab}: " + _counts(loaded))
    omop_vocab.build_maps(con)
    values = _values(con)
    con.execute(omop_sql.BLASTS.format(**values))
    con.execute(omop_sql.MEASUREMENTS.format(**values))
    patients = _scalar(con, "SELECT count(*) FROM _omop_person")
    tables = list(omop_sql.TABLES.items())
    for i, (_table, sql) in enumerate(tables, start=1):
        con.execute(sql.format(**values))
        progress(patients * i // (len(tables) + 1))
    summary.warnings.extend(_lost(con))
    if vocab is not None:
        summary.notes.extend(_unmapped(con))
    _write_source(con, vocab, summary)
    progress(patients)
    summary.patients = patients
    summary.records = {t: _scalar(con, f"SELECT count(*) FROM cdm.{t}") for t, _ in tables}
    return summary


def _values(con: Any) -> dict[str, int]:
    """The placeholders of `omop_sql.TABLES`: fixed concepts and the episode id offsets."""
    values = omop_vocab.constants(con)
    values["n_tumours"] = _scalar(con, "SELECT count(*) FROM _omop_tumour")
    values["n_courses"] = _scalar(con, "SELECT count(*) FROM _omop_course")
    values["n_biomarkers"] = _scalar(con, "SELECT count(*) FROM biomarker WHERE date IS NOT NULL")
    return values


def _write_source(con: Any, vocab: Path | None, summary: ExportSummary) -> None:
    """cdm_source (one row) and metadata rows: what this database is and what it lacks."""
    from ccdp import __version__

    version = "none (concept ids 0)"
    if vocab is not None:
        row = con.execute(
            "SELECT vocabulary_version FROM cdm.vocabulary WHERE vocabulary_id = 'None'"
        ).fetchone()
        version = str(row[0]) if row and row[0] else f"Athena folder {vocab.name}"
    cdm_version = omop_vocab.constants(con)["cdm_version"]
    today = date.today()
    con.execute(
        "INSERT INTO cdm.cdm_source VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            "ccdp node store",
            "ccdp",
            "the node's custodian",
            "Childhood-cancer registry data exported from a ccdp node store.",
            None,
            f"ccdp {__version__} (ccdp export omop)",
            today,
            today,
            "5.4",
            cdm_version,
            version[:20],
        ],
    )
    rows = [
        *(("ccdp export note", n) for n in [*summary.notes, f"exported by ccdp {__version__}"]),
        *(("ccdp export warning", w) for w in summary.warnings),
    ]
    for i, (name, text) in enumerate(rows, start=1):
        con.execute(
            "INSERT INTO cdm.metadata VALUES (?, 0, 0, ?, ?, NULL, NULL, ?, NULL)",
            [i, name, text[:250], today],
        )


def _lost(con: Any) -> list[str]:
    """Warnings for rows the CDM cannot hold."""
    lost = []
    for what, sql in omop_sql.LOST.items():
        n = _scalar(con, sql)
        if n:
            lost.append(f"{n} {what} not exported (OMOP requires the date)")
    return lost


def _unmapped(con: Any) -> list[str]:
    """With a vocabulary: how many conditions and drugs found no standard concept."""
    checks = {
        "condition_occurrence rows without a standard concept (condition_concept_id 0)": (
            "SELECT count(*) FROM cdm.condition_occurrence WHERE condition_concept_id = 0"
        ),
        "drug_exposure rows without an RxNorm ingredient (drug_concept_id 0)": (
            "SELECT count(*) FROM cdm.drug_exposure WHERE drug_concept_id = 0"
        ),
    }
    return [f"{_scalar(con, sql)} {what}" for what, sql in checks.items()]


def _drop_temps(con: Any) -> None:
    con.execute("DROP VIEW IF EXISTS temp._omop_measure")
    for name in (
        *("_omop_blasts", "_omop_treatment", "_omop_course", "_omop_person", "_omop_tumour"),
        *("_omop_condition", "_omop_drug", "_omop_unit"),
    ):
        con.execute(f"DROP TABLE IF EXISTS temp.{name}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {t}" for t, n in counts.items())


def _scalar(con: Any, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")
