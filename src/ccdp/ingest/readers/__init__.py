"""Readers: any site export (CSV, xlsx, REDCap, FHIR) as a frame of strings with row numbers.

`read_table(path, options)` is the one entry point the mapping uses; each format's module holds
its own details. Every reader returns text cells (`str` or `None`) and `_source_row`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ccdp.ingest.readers.base import (
    SOURCE_FILE,
    SOURCE_ROW,
    ReaderError,
    ReaderOptions,
    detect_format,
)


def read_table(path: Path, options: ReaderOptions | None = None) -> pd.DataFrame:
    """Read one table (file, sheet or FHIR resource type) from `path` as strings."""
    opts = options or ReaderOptions()
    if not path.is_file():
        raise ReaderError(f"{path}: no such file")
    fmt = detect_format(path, opts.format)
    if fmt == "csv":
        from ccdp.ingest.readers.delimited import read_delimited

        return read_delimited(path, opts)
    if fmt == "xlsx":
        from ccdp.ingest.readers.excel import read_excel

        return read_excel(path, opts)
    if fmt == "redcap":
        from ccdp.ingest.readers.redcap import read_redcap

        return read_redcap(path, opts)
    from ccdp.ingest.readers.fhir import read_fhir

    return read_fhir(path, opts)


__all__ = [
    "SOURCE_FILE",
    "SOURCE_ROW",
    "ReaderError",
    "ReaderOptions",
    "detect_format",
    "read_table",
]
