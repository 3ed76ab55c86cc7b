"""A native line far over DuckDB's line limit is named by file, line, data row and field, whatever
DuckDB itself says of it (DuckDB 2.0: 'The Parallel CSV Reader currently does not support a full
read on this file' past two buffers; 'unterminated quote' for a long quoted cell)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ccdp.ingest.errors import IngestError
from ccdp.ingest.native import MAX_LINE_BYTES
from ccdp.ingest.pipeline import ingest_native
from tests.ingest.registry import clean_registry, edited, write_native

TODAY = date(2024, 1, 15)


@pytest.mark.parametrize(
    ("cell", "label"),
    [
        ("x" * (2 * MAX_LINE_BYTES + 100), "past two read buffers"),
        ("x" * MAX_LINE_BYTES + "\n" + "y" * MAX_LINE_BYTES, "quoted, with a line break"),
    ],
)
def test_a_huge_cell_is_named_by_line_row_and_field(tmp_path: Path, cell: str, label: str) -> None:
    folder = write_native(tmp_path / "b", edited(clean_registry(), "patient", 2, sex=cell))
    with pytest.raises(IngestError) as err:
        ingest_native(tmp_path / "node.duckdb", folder, progress=False, today=TODAY)
    size = len(cell.encode("utf-8"))
    assert str(err.value).startswith(
        f"b/patient.csv, line 4 (data row 3), field 'sex': {size:,} bytes, more than the limit"
    ), label
    assert not (tmp_path / "node.duckdb").exists()
