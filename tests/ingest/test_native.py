"""Reading the native layout, and refusing broken files with one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccdp.ingest.errors import IngestError
from ccdp.ingest.native import read_native_folder
from ccdp.ingest.pipeline import ingest_native
from tests.ingest.registry import clean_registry, store_digest, write_native


def test_frames_are_strings_with_source_file_and_row(tmp_path: Path) -> None:
    rows = clean_registry()
    frames = read_native_folder(write_native(tmp_path / "FR", rows))
    assert set(frames) == {t for t, r in rows.items() if r}
    patient = frames["patient"]
    assert patient["_source_file"].unique().tolist() == ["FR/patient.csv"]
    assert patient["_source_row"].tolist() == list(range(1, len(rows["patient"]) + 1))
    assert patient["birth_date"].tolist() == [r["birth_date"] for r in rows["patient"]]
    assert patient["death_date"].iloc[0] is None
    assert all(isinstance(v, str) for v in frames["tumour"]["behaviour"])


def test_quoted_newlines_and_bom_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "treatment.csv").write_bytes(
        "\ufefftreatment_id,tumour_id,type,agent,protocol,start_date,end_date\n"
        'X1,T1,surgery,"resection,\nleft",,2010-01-01,\n'
        "X2,T1,surgery,,,,\n".encode()
    )
    frame = read_native_folder(folder)["treatment"]
    assert frame["agent"].tolist() == ["resection,\nleft", None]
    assert frame["_source_row"].tolist() == [1, 2]


BROKEN = [
    ("notes.csv", "a,b\n1,2\n", "x/notes.csv: unknown table file 'notes.csv'"),
    ("patient.csv", "patient_id,sex,colour\n", "x/patient.csv: unknown column 'colour'"),
    ("patient.csv", "patient_id,sex\nP1,male\n", "x/patient.csv: missing column(s) 'birth_date'"),
    ("patient.csv", "", "x/patient.csv: empty file"),
    ("patient.csv", "patient_id,patient_id\n", "column 'patient_id' appears twice"),
]


@pytest.mark.parametrize(("name", "text", "message"), BROKEN)
def test_bad_files_name_the_file_and_column(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / name).write_text(text, encoding="utf-8")
    with pytest.raises(IngestError) as err:
        read_native_folder(folder)
    assert message in str(err.value)


def test_not_a_folder_or_no_tables(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="not a folder"):
        read_native_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no native table files"):
        read_native_folder(tmp_path / "empty")


def _corrupt_truncated(folder: Path) -> None:
    text = (folder / "tumour.csv").read_text(encoding="utf-8")
    (folder / "tumour.csv").write_text(text[: len(text) - 40], encoding="utf-8")


def _corrupt_encoding(folder: Path) -> None:
    text = (folder / "patient.csv").read_text(encoding="utf-8")
    (folder / "patient.csv").write_bytes(text.replace("P003", "Pé03").encode("latin-1"))


def _corrupt_header_encoding(folder: Path) -> None:
    text = (folder / "event.csv").read_text(encoding="utf-8")
    (folder / "event.csv").write_bytes(text.replace("event_type", "évent_type").encode("cp1252"))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_corrupt_truncated, "site/tumour.csv: CSV Error on Line: 7"),
        (_corrupt_encoding, "site/patient.csv:"),
        (_corrupt_header_encoding, "site/event.csv: not UTF-8 encoded"),
    ],
)
def test_corrupted_input_stops_and_leaves_the_store_unchanged(
    tmp_path: Path, corrupt, message: str
) -> None:
    store = tmp_path / "node.duckdb"
    ingest_native(store, write_native(tmp_path / "first", clean_registry(3)), progress=False)
    before = store_digest(store)
    folder = write_native(tmp_path / "site", clean_registry(6))
    corrupt(folder)
    with pytest.raises(IngestError) as err:
        ingest_native(store, folder, progress=False)
    assert message in str(err.value)
    assert store_digest(store) == before


def test_identifiers_file_needs_patient_id(tmp_path: Path) -> None:
    folder = write_native(tmp_path / "x", clean_registry(2))
    (folder / "identifiers.csv").write_text("given_name,family_name\nA,B\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"x/identifiers\.csv: missing column .patient_id."):
        ingest_native(tmp_path / "s.duckdb", folder, progress=False)
    assert not (tmp_path / "s.duckdb").exists()
