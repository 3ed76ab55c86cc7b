"""Encodings made at ingest, before identifiers are pseudonymised, and never the identifiers:
`ccdp ingest` of a native folder holding `identifiers.csv` with a linkage secret set writes one
encoding per stored patient, keyed by the stored (pseudonymised) key; a failing encoder leaves
the store as it was; `ccdp linkage encode` replaces every encoding after a rotation."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from ccdp.federation.linkage import core
from ccdp.federation.linkage.node import ingest_hook
from ccdp.federation.node.audit import AuditLog
from ccdp.ingest.pipeline import ingest_native
from ccdp.ingest.pseudonym import pseudonym
from ccdp.store.config import pseudonym_key
from ccdp.synth import generate
from tests.conftest import run_ccdp
from tests.linkage.linkwire_kit import SECRET, secret_file


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(str(out), countries="FR", patients=150, seed=3, with_identifiers=True)
    return out / "FR"


def _rows(store: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_ingest_writes_one_encoding_per_patient_and_no_identifier(
    export: Path, tmp_path: Path
) -> None:
    store = tmp_path / "fr.duckdb"
    run_ccdp(
        "linkage", "secret", "--store", str(store), "--file", str(secret_file(tmp_path, SECRET))
    )
    out = run_ccdp("ingest", str(export), "--store", str(store))
    assert "record-linkage encodings written" in out.stdout
    ids = pd.read_csv(export / "identifiers.csv", dtype=str, keep_default_na=False)
    key = pseudonym_key(store, create=False)
    # reference: the export encoded directly, keyed as ingest keys patients (HMAC of the id)
    ref = core.encode_frame(ids.replace({"": None}), SECRET)
    expected = {pseudonym(key, pid): ref.clk(i) for i, pid in enumerate(ids["patient_id"])}
    stored = dict(_rows(store, "SELECT patient_id, clk FROM linkage_encoding"))
    patients = {r[0] for r in _rows(store, "SELECT patient_id FROM patient")}
    assert set(stored) == patients == set(expected)
    assert all(bytes(stored[p]) == expected[p] for p in patients)
    meta = _rows(store, "SELECT DISTINCT schema_id, secret_id FROM linkage_encoding")
    assert meta == [(core.schema_id(), core.secret_id(SECRET))]
    years = dict(_rows(store, "SELECT patient_id, block_year FROM linkage_encoding"))
    birth = {
        pseudonym(key, p): int(d[:4]) for p, d in zip(ids.patient_id, ids.birth_date, strict=True)
    }
    assert years == birth
    _assert_no_identifier_stored(store, ids)


def _assert_no_identifier_stored(store: Path, ids: pd.DataFrame) -> None:
    """No table of the store holds a site id, a family name, a given name or a national id."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        text = []
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            cols = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "AND data_type = 'VARCHAR'",
                    [table],
                ).fetchall()
            ]
            for c in cols:
                text += [str(v[0]) for v in con.execute(f'SELECT "{c}" FROM "{table}"').fetchall()]
    finally:
        con.close()
    blob = "\n".join(text)
    needles = [*ids.patient_id, *ids.national_id[ids.national_id != ""]]
    needles += [n for n in [*ids.family_name, *ids.given_name] if len(n) >= 7]
    found = [n for n in needles if n in blob]
    assert not found, found[:5]


def test_no_secret_no_encoding(export: Path, tmp_path: Path) -> None:
    store = tmp_path / "fr.duckdb"
    assert ingest_hook(store) is None
    ingest_native(store, export, progress=False, on_identifiers=ingest_hook(store))
    assert _rows(store, "SELECT count(*) FROM linkage_encoding") == [(0,)]
    assert _rows(store, "SELECT count(*) FROM patient")[0][0] > 0


def test_a_failing_encoder_leaves_the_store_as_it_was(export: Path, tmp_path: Path) -> None:
    store = tmp_path / "fr.duckdb"

    def broken(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> None:
        con.execute(
            "INSERT INTO linkage_encoding (patient_id, clk, schema_id, secret_id) "
            "VALUES ('x', 'x'::BLOB, 's', 'k')"
        )
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError, match="encoder failed"):
        ingest_native(store, export, progress=False, on_identifiers=broken)
    assert not store.exists()  # a first ingest that fails removes the store it created


def test_reencode_after_rotation_replaces_every_encoding(export: Path, tmp_path: Path) -> None:
    store = tmp_path / "fr.duckdb"
    run_ccdp(
        "linkage", "secret", "--store", str(store), "--file", str(secret_file(tmp_path, SECRET))
    )
    run_ccdp("ingest", str(export), "--store", str(store))
    before = dict(_rows(store, "SELECT patient_id, clk FROM linkage_encoding"))
    rotated = os.urandom(32)
    new_file = secret_file(tmp_path, rotated, "rotated.txt")
    run_ccdp("linkage", "secret", "--store", str(store), "--file", str(new_file))
    out = run_ccdp(
        "linkage",
        "encode",
        "--store",
        str(store),
        "--identifiers",
        str(export / "identifiers.csv"),
        "--json",
    )
    assert f'"replaced": {len(before)}' in out.stdout
    after = dict(_rows(store, "SELECT patient_id, clk FROM linkage_encoding"))
    assert set(after) == set(before)
    assert not any(bytes(after[p]) == bytes(before[p]) for p in after)
    assert _rows(store, "SELECT DISTINCT secret_id FROM linkage_encoding") == [
        (core.secret_id(rotated),)
    ]
    # the same children still encode alike under the new secret: Dice 1 with the reference
    ids = pd.read_csv(export / "identifiers.csv", dtype=str)
    ref = core.encode_frame(ids, rotated)
    key = pseudonym_key(store, create=False)
    got = np.array(
        [bytes(after[pseudonym(key, p)]) == ref.clk(i) for i, p in enumerate(ids.patient_id)]
    )
    assert got.all()
    assert AuditLog.for_store(store).records()[-1]["event"] == "linkage-reencoded"


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET)
    path.chmod(0o644)
    out = run_ccdp(
        "linkage", "secret", "--store", str(tmp_path / "s.duckdb"), "--file", str(path), check=False
    )
    assert out.returncode != 0 and "chmod 600" in out.stderr + out.stdout
    short = secret_file(tmp_path, b"too short", "short.txt")
    out = run_ccdp(
        "linkage",
        "secret",
        "--store",
        str(tmp_path / "s.duckdb"),
        "--file",
        str(short),
        check=False,
    )
    assert out.returncode != 0 and "at least 16 bytes" in out.stderr + out.stdout


def test_a_mapped_export_is_encoded_alike(tmp_path: Path) -> None:
    """The messy export of a draw, ingested with its mapping spec, gives each stored patient the
    encoding its native identifiers.csv gives (same draw, same secret): the mapping's names,
    birth dates and sexes reach the encoder as the native file has them."""
    generate(
        str(tmp_path / "messy"),
        countries="FR",
        patients=150,
        seed=3,
        format="messy",
        with_identifiers=True,
    )
    generate(str(tmp_path / "native"), countries="FR", patients=150, seed=3, with_identifiers=True)
    store = tmp_path / "fr.duckdb"
    secret = secret_file(tmp_path, SECRET)
    run_ccdp("linkage", "secret", "--store", str(store), "--file", str(secret))
    mapping = Path(__file__).resolve().parents[2] / "examples" / "mappings" / "FR.yaml"
    out = run_ccdp(
        "ingest", str(tmp_path / "messy" / "FR"), "--mapping", str(mapping), "--store", str(store)
    )
    assert "record-linkage encodings written" in out.stdout
    ids = pd.read_csv(tmp_path / "native" / "FR" / "identifiers.csv", dtype=str)
    ref = core.encode_frame(ids, SECRET)
    key = pseudonym_key(store, create=False)
    expected = {pseudonym(key, p): ref.clk(i) for i, p in enumerate(ids.patient_id)}
    stored = dict(_rows(store, "SELECT patient_id, clk FROM linkage_encoding"))
    patients = {r[0] for r in _rows(store, "SELECT patient_id FROM patient")}
    assert set(stored) == patients and len(patients) > 100
    same = [p for p in patients if bytes(stored[p]) == expected[p]]
    assert len(same) == len(patients), f"{len(patients) - len(same)} encodings differ"
