"""The node store: created from the model, versioned, migrated, transactional."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from ccdp.model import load_model
from ccdp.store import NodeStore, StoreError, StoreVersionError
from ccdp.store.migrations import SYSTEM_COLUMNS, SYSTEM_TABLES


def columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(f'DESCRIBE "{table}"').fetchall()}


def test_create_makes_every_model_table_with_system_columns(tmp_path: Path) -> None:
    with NodeStore(tmp_path / "s.duckdb") as store:
        store.create()
        store.create()  # idempotent
        assert store.version == load_model().version
        for table in load_model().tables.values():
            cols = columns(store.con, table.name)
            assert list(cols)[: len(table.fields)] == table.field_names
            for f in table.fields:
                assert cols[f.name] == f.duckdb_type
            for name, typ in SYSTEM_COLUMNS.items():
                assert cols[name] == typ
        for name in SYSTEM_TABLES:
            assert store.count(name) == (1 if name == "schema_version" else 0)


def test_a_store_from_newer_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with NodeStore(path) as store:
        store.create()
        store.con.execute("INSERT INTO schema_version (model_version) VALUES (99)")
    with pytest.raises(StoreVersionError, match="schema version 99, newer than this ccdp"):
        NodeStore(path).open()


def test_an_older_store_is_migrated_to_the_model(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with NodeStore(path) as store:
        store.create()
        store.con.execute('ALTER TABLE patient DROP COLUMN "consent"')
        store.con.execute("DROP TABLE specimen")
        store.con.execute("DELETE FROM schema_version")
        store.con.execute("INSERT INTO schema_version (model_version) VALUES (0)")
    with pytest.raises(StoreVersionError, match="open it writable once"):
        NodeStore(path, read_only=True).open()
    with NodeStore(path) as store:
        assert store.version == load_model().version
        assert "consent" in columns(store.con, "patient")
        assert store.count("specimen") == 0
        note = store.con.execute(
            "SELECT note FROM schema_version ORDER BY applied_at DESC, model_version DESC LIMIT 1"
        ).fetchall()[0][0]
        assert "patient.consent" in note and "specimen" in note


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with NodeStore(tmp_path / "s.duckdb") as store:
        store.create()
        with pytest.raises(ValueError), store.transaction() as con:
            con.execute(
                "INSERT INTO population (country, year, sex, age_group, population) "
                "VALUES ('FR', 2010, 'male', '0', 1)"
            )
            raise ValueError("boom")
        assert store.count("population") == 0
        with store.transaction() as con:
            con.execute(
                "INSERT INTO population (country, year, sex, age_group, population) "
                "VALUES ('FR', 2010, 'male', '0', 1)"
            )
        assert store.read("population")["population"].tolist() == [1.0]


def test_read_only_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no node store at"):
        NodeStore(tmp_path / "missing.duckdb", read_only=True).open()
    duckdb.connect(str(tmp_path / "other.duckdb")).close()
    with pytest.raises(StoreError, match="not a ccdp node store"):
        NodeStore(tmp_path / "other.duckdb", read_only=True).open()
    with NodeStore(tmp_path / "s.duckdb") as store:
        store.create()
        with pytest.raises(StoreError, match="no table 'patients'"):
            store.read("patients")
    with pytest.raises(StoreError, match="not open"):
        _ = NodeStore(tmp_path / "s.duckdb").con


def test_a_version_1_store_gains_the_quarantine_resolution_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with NodeStore(path) as store:
        store.create()
        for col in ("source_key", "resolved_at", "resolved_by"):
            store.con.execute(f"ALTER TABLE quarantine DROP COLUMN {col}")
        store.con.execute(
            "INSERT INTO quarantine (ingest_id, table_name, record_key) "
            "VALUES ('old', 'patient', 'P1')"
        )
        store.con.execute("DELETE FROM schema_version")
        store.con.execute("INSERT INTO schema_version (model_version) VALUES (1)")
    with NodeStore(path) as store:
        assert store.version == load_model().version == 3
        assert {"source_key", "resolved_at", "resolved_by"} <= set(columns(store.con, "quarantine"))
        # the entry of the old store is kept, and open
        assert store.con.execute("SELECT record_key, resolved_at FROM quarantine").fetchall() == [
            ("P1", None)
        ]


def test_a_version_2_store_gains_the_linkage_tables_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with NodeStore(path) as store:
        store.create()
        store.con.execute("DROP TABLE linkage_encoding")
        store.con.execute("DROP TABLE link_group")
        store.con.execute(
            "INSERT INTO patient (patient_id, sex, birth_date, country, vital_status) "
            "VALUES ('P1', 'male', DATE '2010-01-01', 'FR', 'alive')"
        )
        store.con.execute("DELETE FROM schema_version")
        store.con.execute("INSERT INTO schema_version (model_version) VALUES (2)")
    with pytest.raises(StoreVersionError, match="open it writable once"):
        NodeStore(path, read_only=True).open()
    with NodeStore(path) as store:
        assert store.version == 3
        held = store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        assert {("linkage_encoding",), ("link_group",)} <= set(held)
        assert store.count("patient") == 1
        assert store.con.execute("SELECT count(*) FROM link_group").fetchall() == [(0,)]


def test_an_existing_store_takes_a_child_without_last_contact_without_migration(
    tmp_path: Path,
) -> None:
    """Making last_contact_date optional changed no DDL (model columns are never NOT NULL), so
    a store created before opens at the same version and takes such a row as it is."""
    path = tmp_path / "s.duckdb"
    with NodeStore(path) as store:
        store.create()
        nullable = store.con.execute(
            "SELECT DISTINCT is_nullable FROM information_schema.columns "
            "WHERE table_name IN (SELECT unnest(?))",
            [load_model().table_names],
        ).fetchall()
        assert nullable == [("YES",)]
        store.con.execute(
            "INSERT INTO patient (patient_id, sex, birth_date, country, vital_status) "
            "VALUES ('P1', 'male', DATE '2010-01-01', 'FR', 'alive')"
        )
    with NodeStore(path, read_only=True) as store:
        assert store.version == load_model().version and store.count("patient") == 1
