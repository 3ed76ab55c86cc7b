"""The catalogue's row keys read a chunk at a time and its view read through Arrow over its own
bounded connection (issue 27) publish exactly what the old whole-table pandas frames and the
snapshot's view published: the same catalogue and the same ledger state."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.ledger import ledger_path
from ccdp.federation.node import catalogue as cat
from ccdp.federation.node.catalogue import EXTRA, VIEW_COLUMNS, NodeCatalogue, row_keys
from ccdp.federation.node.local import connect_store
from ccdp.model import load_model
from ccdp.store import memory
from ccdp.wire.records import ledger_keys
from tests.catalogue_kit import make_store

POLICY = "min_cell: 5\ncounts: exact\n"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


class ReferenceCatalogue(NodeCatalogue):
    """The code before issue 27: every table's key columns held as pandas frames, the view
    read from the node's in-memory snapshot."""

    def _view(self, con: Any) -> pd.DataFrame:
        return self.node._read(VIEW_COLUMNS, CohortSpec(), dedup=self.node._linked())

    def _table_frames(self, con: Any, present: set[str]) -> dict[str, pd.DataFrame]:
        out = {}
        for tdef in load_model().tables.values():
            if tdef.name not in present:
                continue
            cols = ", ".join(f'"{c}"' for c in [*tdef.primary_key, *EXTRA.get(tdef.name, [])])
            frame = con.execute(f'SELECT {cols} FROM store."{tdef.name}"').df()
            frame["_key"] = row_keys(tdef.name, frame, list(tdef.primary_key))
            if tdef.name == "patient":
                frame["_one"] = True
            out[tdef.name] = frame
        return out

    @staticmethod
    def _patient_rows(frame: pd.DataFrame) -> pd.DataFrame:
        keys = ledger_keys(frame["patient_id"], frame["patient_id"], frame["_one"], "patients")
        return frame.assign(_key=keys)

    @staticmethod
    def _specimen_owners(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        spec = tables["specimen"].rename(columns={"type": "specimen.type"})
        tumours = tables.get("tumour")
        patient = (
            spec["tumour_id"].map(tumours.set_index("tumour_id")["patient_id"])
            if tumours is not None
            else pd.Series(None, index=spec.index, dtype=object)
        )
        patient = patient.fillna("")
        owner = ledger_keys(patient, patient, pd.Series(True, spec.index), "patients")
        return spec.assign(_owner=owner)


def ledger_state(store: Path) -> tuple[list[Any], list[Any]]:
    con = sqlite3.connect(ledger_path(store))
    try:
        keys = con.execute("SELECT key FROM keys ORDER BY key").fetchall()
        sets = con.execute("SELECT size, digest, members FROM released ORDER BY digest").fetchall()
    finally:
        con.close()
    return keys, sets


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of one store of 2,500 children (more than one chunk of rows), with a
    specimen of an unknown tumour (its child is the unknown one)."""
    (tmp_path / "a").mkdir()
    store = make_store(tmp_path / "a" / "node.duckdb", n=2500, seed=3)
    con = duckdb.connect(str(store))
    try:
        con.execute(
            "INSERT INTO specimen (specimen_id, tumour_id, type) VALUES ('SX', 'no', 'dna')"
        )
    finally:
        con.close()
    other = tmp_path / "b" / "node.duckdb"
    other.parent.mkdir()
    shutil.copy(store, other)
    for path in (store, other):  # exact counts: the perturbation's secret is per node
        path.with_name("node.policy.yaml").write_text(POLICY, encoding="utf-8")
    return store, other


def test_chunked_keys_publish_the_same_catalogue_and_ledger(stores, monkeypatch):
    monkeypatch.setattr(cat, "CHUNK_VECTORS", 1)  # 2,048 rows a chunk: several per table
    old, new = stores
    before = ReferenceCatalogue.for_store(old, name="FR").publish(NOW)
    after = NodeCatalogue.for_store(new, name="FR").publish(NOW)
    assert after.catalogue.model_dump(mode="json") == before.catalogue.model_dump(mode="json")
    assert after.catalogue.patients.count == 2500  # type: ignore[union-attr]
    assert ledger_state(new) == ledger_state(old)
    assert len(ledger_state(new)[1]) > 10


def test_node_connections_are_bounded_and_spill_beside_the_store(stores, monkeypatch):
    store, _ = stores
    con = connect_store(store)
    try:
        (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone()
        (spill,) = con.execute("SELECT current_setting('temp_directory')").fetchone()
    finally:
        con.close()
    share = memory.machine_memory() * memory.MEMORY_SHARE / 2**30
    assert abs(float(limit.split()[0]) - share) < 0.1 * share  # DuckDB shows it in GiB
    assert Path(spill).parent == store.parent and Path(spill).name.startswith("node.spill-")
    assert not Path(spill).exists()  # made only when DuckDB spills, removed when it closes
    monkeypatch.setenv(memory.MEMORY_ENV, "300MB")
    con = connect_store(store)
    try:
        (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone()
    finally:
        con.close()
    assert limit == "286.1 MiB"
