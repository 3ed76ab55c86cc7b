"""The FHIR export's fast paths write what the simple ones wrote, byte for byte.

Each fast path is checked against the slow, obvious one it replaced: ids against `uuid.uuid5`,
the orjson writer against `json.dumps`, the row conversion against pandas' `to_dict`; and the
export of the rare-cases store against the digest of the files the code wrote before any of them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccdp.exchange.fhir import export_store
from ccdp.exchange.fhir_build import dumps, jfloat, num, rid
from ccdp.exchange.fhir_write import bundles, records
from ccdp.exchange.output import ExportError
from ccdp.exchange.source import patient_batches
from ccdp.ingest.pipeline import ingest_frames, ingest_native
from ccdp.store import NodeStore
from ccdp.synth import generate
from tests.conftest import run_ccdp
from tests.exchange.test_fhir import EDGE_ROWS

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ccdp:fhir:")

EDGE_SHA256 = "1e59a6542b7af58a2c9350f67de0a4c9bf4545e027ff9ef6c011c983ca13574b"
"""sha256 of bundles-00000.ndjson of the rare-cases store (EDGE_ROWS) as written by the export
before its fast paths (commit a11d23d: pandas rows, `uuid.uuid5`, `json.dumps`). A deliberate
change of the mapping changes it: then recompute it, and say why in the commit."""


def _stdlib(bundle: dict[str, Any]) -> bytes:
    """The reference writer: what the export wrote before orjson."""
    return (json.dumps(bundle, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _pandas_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The reference row conversion: what the export did before `records`' column-wise path."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = out[col].dt.strftime("%Y-%m-%d")
    out = out.astype(object).where(out.notna(), None)
    rows: list[dict[str, Any]] = out.to_dict("records")
    return [{k: v for k, v in row.items() if not str(k).startswith("_")} for row in rows]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic store and the rare-cases store."""
    base = tmp_path_factory.mktemp("fhir_speed")
    generate(base / "synth", countries="FR", patients=150, seed=3)
    ingest_native(base / "synth.duckdb", base / "synth" / "FR", progress=False)
    frames = {t: pd.DataFrame(rows, dtype=object) for t, rows in EDGE_ROWS.items()}
    ingest_frames(base / "edge.duckdb", frames, "edge", progress=False)
    return {"synth": base / "synth.duckdb", "edge": base / "edge.duckdb"}


@given(kind=st.sampled_from(["Patient", "Condition", "Bundle", ""]), key=st.text(max_size=80))
def test_ids_are_uuid5_of_the_key(kind: str, key: str) -> None:
    expected = uuid.uuid5(NAMESPACE, f"{kind}/{key}")
    assert rid(kind, key) == str(expected)
    assert uuid.UUID(rid(kind, key)).version == 5


def test_ids_of_many_keys() -> None:
    keys = [f"P{i:07d}" for i in range(20_000)] + ["é/ü", "", "T1/MRD_day33/2014-06-04", "∞" * 300]
    for key in keys:
        assert rid("Observation", key) == str(uuid.uuid5(NAMESPACE, f"Observation/{key}"))


@given(
    value=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=1e-9, max_value=1e-3),
        st.floats(min_value=1e15, max_value=1e18),
        st.sampled_from([1e-05, 2.5e-07, 1e16, 1.5e16, 0.0001, 12.5, -0.0]),
    ),
    text=st.text(),
)
def test_the_writer_spells_numbers_and_text_as_json_dumps(value: float, text: str) -> None:
    doc = {"v": jfloat(value), "n": num(value), "t": text, "l": [jfloat(value), None, True, 3]}
    try:
        expected = _stdlib(doc)
        expected.decode()
    except UnicodeEncodeError:  # a lone surrogate: neither writer can write it
        return
    assert dumps(doc) == expected


def test_rows_are_what_pandas_gave(stores: dict[str, Path]) -> None:
    """Same values, same Python types (3 == 3.0 in Python: the type decides '3' or '3.0')."""
    checked = 0
    for store in stores.values():
        with NodeStore(store, read_only=True) as ns:
            for batch in patient_batches(ns, 64):
                for table in ("patient", "tumour", "event", "treatment", "biomarker"):
                    frame = batch.table(table)
                    fast, slow = records(frame), _pandas_records(frame)
                    assert fast == slow, table
                    pairs = [(a[k], b[k]) for a, b in zip(fast, slow, strict=True) for k in a]
                    assert [type(a) for a, _ in pairs] == [type(b) for _, b in pairs], table
                    checked += len(fast)
                frame = batch.table("specimen")
                assert records(frame) == _pandas_records(frame)
    assert checked > 500


def test_every_bundle_is_written_as_json_dumps_writes_it(stores: dict[str, Path]) -> None:
    written = 0
    for store in stores.values():
        with NodeStore(store, read_only=True) as ns:
            for batch in patient_batches(ns, 64):
                for bundle in bundles(batch):
                    assert dumps(bundle) == _stdlib(bundle)
                    written += 1
    assert written == 152


def test_the_rare_cases_export_is_the_pre_fast_path_file(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    with NodeStore(stores["edge"], read_only=True) as ns:
        export_store(ns, tmp_path / "edge")
    data = (tmp_path / "edge" / "bundles-00000.ndjson").read_bytes()
    assert hashlib.sha256(data).hexdigest() == EDGE_SHA256


def test_workers_write_the_same_files(stores: dict[str, Path], tmp_path: Path) -> None:
    """`ccdp export fhir --jobs 2` (batches written in worker processes) gives the files one
    process writes."""
    with NodeStore(stores["synth"], read_only=True) as ns:
        export_store(ns, tmp_path / "one", batch_size=64)
        with pytest.raises(ExportError, match="jobs"):
            export_store(ns, tmp_path / "none", jobs=0)
    done: list[int] = []
    with NodeStore(stores["synth"], read_only=True) as ns:
        summary = export_store(ns, tmp_path / "two", batch_size=64, jobs=2, progress=done.append)
    names = sorted(p.name for p in (tmp_path / "one").glob("*.ndjson"))
    assert names == ["bundles-00000.ndjson", "bundles-00001.ndjson", "bundles-00002.ndjson"]
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.ndjson"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert sorted(done)[-1] == 150 and summary.records["Bundle"] == 150
    out = tmp_path / "cli"
    cli = json.loads(
        run_ccdp(
            "export", "fhir", "--store", stores["synth"], "--out", out, "--jobs", "2", "--json"
        ).stdout
    )
    assert cli["records"] == summary.records
    data = (out / "bundles-00000.ndjson").read_bytes()
    assert data == b"".join((tmp_path / "one" / n).read_bytes() for n in names)
