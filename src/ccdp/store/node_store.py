"""The node store: one DuckDB file holding the data-model tables, the quarantine and the logs.

Tables come from the model (`TableDef.ddl`) plus system columns saying where each row came from.
Every write goes through `transaction()`, so a failed ingest leaves the file as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import duckdb
import pandas as pd

from ccdp.model import load_model
from ccdp.store.errors import StoreError, StoreVersionError
from ccdp.store.migrations import SYSTEM_TABLES, migrate, stored_version, sync_with_model


class NodeStore:
    """A node's DuckDB store. Use as a context manager: `with NodeStore(path) as s: ...`.

    `read_only` stores must already exist; writable stores are created on `create()`. Opening a
    store written by a newer model version fails; an older one is migrated (writable only).
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> NodeStore:
        """Connect, and check (or bring up to date) the schema version."""
        if self._con is not None:
            return self
        if self.read_only and not self.path.exists():
            raise StoreError(f"no node store at {self.path} (run `ccdp ingest ... --store` first)")
        try:
            self._con = duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open node store {self.path}: {exc}") from exc
        try:
            self._check_version()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> NodeStore:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection, for SQL readers (e.g. the cohort view)."""
        if self._con is None:
            raise StoreError(f"node store {self.path} is not open (use `with NodeStore(...)`)")
        return self._con

    # -- schema ----------------------------------------------------------------------------------
    @property
    def version(self) -> int | None:
        """Model version of the store's schema, None if not created yet."""
        return stored_version(self.con)

    @property
    def is_created(self) -> bool:
        return self.version is not None

    def _check_version(self) -> None:
        code_version = load_model().version
        found = stored_version(self.con)
        if found is None:
            if self.read_only:
                raise StoreError(f"{self.path} is not a ccdp node store (no schema_version table)")
            return
        if found > code_version:
            raise StoreVersionError(
                f"node store {self.path} has schema version {found}, newer than this ccdp "
                f"(data model version {code_version}); upgrade ccdp to open it"
            )
        if found < code_version:
            if self.read_only:
                raise StoreVersionError(
                    f"node store {self.path} has schema version {found}, older than data model "
                    f"version {code_version}; open it writable once to migrate it"
                )
            with self.transaction():
                migrate(self.con, found, code_version)

    def create(self) -> None:
        """Create every model and system table (idempotent) and record the schema version."""
        if self.read_only:
            raise StoreError(f"node store {self.path} is open read-only; cannot create tables")
        if self.is_created:
            return
        with self.transaction():
            sync_with_model(self.con)
            self.con.execute(
                "INSERT INTO schema_version (model_version, note) VALUES (?, 'created')",
                [load_model().version],
            )

    # -- writes and reads -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing: commit if the block finishes, roll back on any exception."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def tables(self) -> list[str]:
        """Names of the model tables and system tables in the store."""
        return [*load_model().table_names, *SYSTEM_TABLES]

    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A whole table as a DataFrame (model fields then system columns), in key order."""
        if table not in self.tables():
            raise StoreError(f"no table {table!r} in the node store (tables: {self.tables()})")
        cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
        order = ""
        if table in load_model().tables:
            order = " ORDER BY " + ", ".join(
                f'"{k}"' for k in load_model().table(table).primary_key
            )
        return self.con.execute(f'SELECT {cols} FROM "{table}"{order}').df()

    def count(self, table: str) -> int:
        """Number of rows in a table."""
        if table not in self.tables():
            raise StoreError(f"no table {table!r} in the node store")
        return int(self.con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])
