"""What every reader shares: its options, its error class and the shape of what it returns.

A reader turns one source file (or one sheet / FHIR resource type of it) into a DataFrame of
strings: every cell a `str` or `None` (empty), column names as in the source, plus
`_source_row`, the 1-based data-row number (first row under the header is 1; for FHIR, the
entry number in the bundle), so that any later message can point the data manager at the row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ccdp.errors import CcdpError
from ccdp.ingest.specbase import StrictModel

SOURCE_ROW = "_source_row"
SOURCE_FILE = "_source_file"

Format = Literal["auto", "csv", "xlsx", "redcap", "fhir"]

_EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".tab": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".json": "fhir",
    ".ndjson": "fhir",
}


class ReaderError(CcdpError):
    """A source file cannot be read as declared (encoding, truncation, ragged rows, sheet...)."""


class ReaderOptions(StrictModel):
    """How to read a source file; every option has a sensible 'auto' default."""

    format: Format = Field("auto", description="csv, xlsx, redcap, fhir; auto: from the extension")
    encoding: str = Field("auto", description="Text encoding; auto: UTF-8, else detected")
    delimiter: str = Field("auto", description="Field separator; auto: sniffed from the file")
    quotechar: str = Field('"', description="Quote character of delimited files")
    header_row: int = Field(1, ge=1, description="1-based line/row holding the column names")
    sheet: str | None = Field(None, description="Excel sheet name; default: the first sheet")
    resource: str | None = Field(None, description="FHIR resource type, e.g. Patient")
    record_id: str | None = Field(None, description="REDCap record id column; default: first")
    inherit: bool = Field(
        True, description="REDCap: repeat-instrument rows inherit their record's base-row values"
    )

    def reader_key(self) -> tuple:
        """Options that change what is read (used to cache a file read once per mapping)."""
        return (
            self.format,
            self.encoding,
            self.delimiter,
            self.quotechar,
            self.header_row,
            self.sheet,
            self.resource,
            self.record_id,
            self.inherit,
        )


def detect_format(path: Path, declared: str = "auto") -> str:
    """The reader for `path`: the declared one, else from the extension (CSV when unknown)."""
    if declared != "auto":
        return declared
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        if path.suffix.lower() == ".xls":
            raise ReaderError(
                f"{path}: legacy .xls workbooks are not supported; save the file as .xlsx"
            )
        return "csv"
    if fmt == "csv" and _looks_like_redcap(path):
        return "redcap"
    return fmt


def _looks_like_redcap(path: Path) -> bool:
    """A REDCap flat export names its repeating-instrument column in the header."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    first_line = head.split(b"\n", 1)[0]
    return b"redcap_repeat_instrument" in first_line or b"redcap_event_name" in first_line
