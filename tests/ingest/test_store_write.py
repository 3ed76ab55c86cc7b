"""The store is written with one DuckDB thread, and a failure while writing still rolls back."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest

from ccdp.ingest import pipeline
from ccdp.ingest.pipeline import ingest_native, single_writer
from tests.ingest.registry import clean_registry, edited, store_digest, write_native

TODAY = date(2024, 1, 15)


def _threads(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])


def test_the_write_runs_on_one_thread_and_the_setting_comes_back() -> None:
    con = duckdb.connect()
    con.execute("SET threads = 2")
    with single_writer(con):
        assert _threads(con) == 1
    assert _threads(con) == 2


def test_a_duckdb_error_while_writing_rolls_back_and_is_the_error_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DuckDB error aborts the transaction, which then refuses even SET: restoring the
    thread count must not hide the error, and the store must be as it was."""
    rows = clean_registry()
    store = tmp_path / "node.duckdb"
    ingest_native(store, write_native(tmp_path / "a", rows), progress=False, today=TODAY)
    before = store_digest(store)
    changed = edited(rows, "patient", 0, last_contact_date="2023-01-01")

    def broken(con: duckdb.DuckDBPyConnection, _child: str) -> None:
        con.execute("INSERT INTO ingest_log (ingest_id) VALUES (NULL)")  # NOT NULL key

    monkeypatch.setattr(pipeline, "_clear_parent_flags", broken)
    with pytest.raises(duckdb.ConstraintException):
        ingest_native(store, write_native(tmp_path / "b", changed), progress=False, today=TODAY)
    assert store_digest(store) == before
