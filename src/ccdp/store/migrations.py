"""Schema migrations of the node store, keyed by the data-model version they lead to.

A migration step for version N holds the SQL that turns a version N-1 store into version N where
that needs more than the model says (renames, conversions). Additive changes (a new table, a new
field) need no step: `sync_with_model` adds every table and column the model has and the store
lacks, after the explicit steps ran. What the DDL does not carry needs neither a step nor a new
version: model columns are never NOT NULL (a required field is an ingest edit), so a field made
optional (patient.last_contact_date) or given an `applies_when` leaves every stored row valid.
"""

from __future__ import annotations

import duckdb

from ccdp.model import load_model

# Version the model reached -> SQL statements run, in order, to get there from the version before.
MIGRATIONS: dict[int, list[str]] = {
    # quarantine entries keep the source's own key beside the pseudonym, and are marked resolved
    # (by the ingest that accepted the row) instead of being deleted
    2: [
        "ALTER TABLE IF EXISTS quarantine ADD COLUMN IF NOT EXISTS source_key VARCHAR",
        "ALTER TABLE IF EXISTS quarantine ADD COLUMN IF NOT EXISTS resolved_at TIMESTAMP",
        "ALTER TABLE IF EXISTS quarantine ADD COLUMN IF NOT EXISTS resolved_by VARCHAR",
    ],
    # version 3: record linkage (issue 25): the node's encodings and its records' link groups,
    # both system tables (created by sync_with_model), node-only and never exported
    3: [],
}

# System columns added to every data-model table: where the row came from and which ingest wrote it.
SYSTEM_COLUMNS: dict[str, str] = {
    "_source_file": "VARCHAR",
    "_source_row": "INTEGER",
    "_ingest_id": "VARCHAR",
}

# Store-only tables (not part of the data model): their DDL, created with the model tables.
SYSTEM_TABLES: dict[str, str] = {
    "schema_version": """CREATE TABLE IF NOT EXISTS schema_version (
        model_version INTEGER NOT NULL,
        applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        note VARCHAR
    )""",
    "ingest_log": """CREATE TABLE IF NOT EXISTS ingest_log (
        ingest_id VARCHAR PRIMARY KEY,
        source VARCHAR,
        started_at TIMESTAMP,
        finished_at TIMESTAMP,
        rows_read BIGINT,
        accepted BIGINT,
        quarantined BIGINT,
        flagged BIGINT,
        report VARCHAR
    )""",
    "quarantine": """CREATE TABLE IF NOT EXISTS quarantine (
        ingest_id VARCHAR NOT NULL,
        table_name VARCHAR NOT NULL,
        source_file VARCHAR,
        source_row INTEGER,
        record_key VARCHAR,
        edit_ids VARCHAR,
        fields VARCHAR,
        messages VARCHAR,
        reasons VARCHAR,
        raw VARCHAR,
        quarantined_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        source_key VARCHAR,  -- the key as the site wrote it (before pseudonyms): node-only
        resolved_at TIMESTAMP,  -- set when a later ingest accepted the row
        resolved_by VARCHAR  -- the ingest_id that accepted it
    )""",
    "quality_flag": """CREATE TABLE IF NOT EXISTS quality_flag (
        ingest_id VARCHAR NOT NULL,
        table_name VARCHAR NOT NULL,
        source_file VARCHAR,
        source_row INTEGER,
        record_key VARCHAR,
        edit_id VARCHAR NOT NULL,
        severity VARCHAR NOT NULL,
        field VARCHAR,
        value VARCHAR,
        message VARCHAR
    )""",
    # Bloom-filter encodings (CLKs) of a patient's identifiers, computed at ingest before the
    # identifiers are pseudonymised; the identifiers themselves are never stored (docs/linkage.md)
    "linkage_encoding": """CREATE TABLE IF NOT EXISTS linkage_encoding (
        patient_id VARCHAR PRIMARY KEY,  -- the stored (pseudonymised) patient key
        clk BLOB NOT NULL,  -- the encoding's bits, packed
        schema_id VARCHAR NOT NULL,  -- the linkage schema (fields, q-grams, sizes) it follows
        secret_id VARCHAR NOT NULL,  -- names the shared secret (its hash prefix), never the secret
        block_year INTEGER,  -- the stable field the encoding is salted with (birth year)
        encoded_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    # the link group of each of this node's patients found in another registry by a linkage run,
    # and whether this node's copy is the one pooled results count (`keep`)
    "link_group": """CREATE TABLE IF NOT EXISTS link_group (
        patient_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        group_id VARCHAR NOT NULL,
        keep BOOLEAN NOT NULL,  -- false: a linked duplicate that pooled results set aside
        group_size INTEGER NOT NULL,  -- registries holding this child (2 or more)
        linked_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
}


def stored_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The model version recorded in the store, or None for a store not yet created."""
    # fetchall, not fetchone: DuckDB keeps a half-read result open and refuses other work
    (exists,) = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_version' AND table_schema = 'main'"
    ).fetchall()[0]
    if exists == 0:
        return None
    (version,) = con.execute("SELECT max(model_version) FROM schema_version").fetchall()[0]
    return None if version is None else int(version)


def sync_with_model(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create missing tables and add missing columns; returns what was added (for the log)."""
    added: list[str] = []
    for ddl in SYSTEM_TABLES.values():
        con.execute(ddl)
    for table in load_model().tables.values():
        existing = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = ? AND table_schema = 'main'",
                [table.name],
            ).fetchall()
        }
        if not existing:
            con.execute(table.ddl(SYSTEM_COLUMNS))
            added.append(table.name)
            continue
        wanted = {f.name: f.duckdb_type for f in table.fields} | SYSTEM_COLUMNS
        for col, typ in wanted.items():
            if col not in existing:
                con.execute(f'ALTER TABLE "{table.name}" ADD COLUMN "{col}" {typ}')
                added.append(f"{table.name}.{col}")
    return added


def migrate(con: duckdb.DuckDBPyConnection, from_version: int, to_version: int) -> None:
    """Run the explicit steps from_version+1 .. to_version, then add what the model adds."""
    for version in range(from_version + 1, to_version + 1):
        for statement in MIGRATIONS.get(version, []):
            con.execute(statement)
    added = sync_with_model(con)
    con.execute(
        "INSERT INTO schema_version (model_version, note) VALUES (?, ?)",
        [to_version, f"migrated from {from_version}; added: {', '.join(added) or 'nothing'}"],
    )
