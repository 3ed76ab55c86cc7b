"""Excel workbooks (.xlsx), one sheet at a time, every cell turned into the text a person sees.

Excel stores dates as numbers and numbers as floats; we render date cells as ISO dates and
integral numbers without a trailing `.0`, so the mapping's value maps and date formats see the
same text whether a site sends CSV or a workbook. Date columns typed as plain numbers stay
serial numbers (the mapping's `excel_serial` date format converts them).
"""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ccdp.ingest.readers.base import SOURCE_ROW, ReaderError, ReaderOptions


def sheet_names(path: Path) -> list[str]:
    """The workbook's sheets, in order; a clear error when the file is not a readable workbook."""
    try:
        with pd.ExcelFile(path, engine="openpyxl") as book:
            return [str(s) for s in book.sheet_names]
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ReaderError(
            f"{path}: not a readable .xlsx workbook ({exc}); is the file truncated or corrupted?"
        ) from exc


def read_excel(path: Path, opts: ReaderOptions) -> pd.DataFrame:
    """One sheet (the named one, else the first) as strings/None plus `_source_row`."""
    sheets = sheet_names(path)
    if not sheets:
        raise ReaderError(f"{path}: the workbook has no sheets")
    sheet = opts.sheet if opts.sheet is not None else sheets[0]
    if sheet not in sheets:
        raise ReaderError(
            f"{path}: no sheet {sheet!r}; the workbook's sheets are: "
            + ", ".join(repr(s) for s in sheets)
        )
    try:
        raw = pd.read_excel(
            path, sheet_name=sheet, header=opts.header_row - 1, dtype=object, engine="openpyxl"
        )
    except (zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise ReaderError(f"{path}, sheet {sheet!r}: cannot read ({exc})") from exc
    return _to_text(raw, path, sheet)


def _to_text(raw: pd.DataFrame, path: Path, sheet: str) -> pd.DataFrame:
    names = [_column_name(c, i) for i, c in enumerate(raw.columns)]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ReaderError(f"{path}, sheet {sheet!r}: column {dup!r} appears more than once")
    frame = pd.DataFrame(
        {n: raw[c].map(cell_text) for n, c in zip(names, raw.columns, strict=True)}, dtype=object
    )
    frame = frame.where(frame.notna(), None)
    # Rows that are empty in every column are formatting residue, not data.
    keep = frame.notna().any(axis=1).to_numpy()
    frame[SOURCE_ROW] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame.loc[keep].reset_index(drop=True)


def _column_name(col: object, i: int) -> str:
    text = str(col).strip()
    if not text or text.startswith("Unnamed:"):
        return f"column_{i + 1}"
    # pandas de-duplicates repeated headers as "name.1"; that is still a duplicate to us.
    base, _, suffix = text.rpartition(".")
    return base if base and suffix.isdigit() else text


def cell_text(value: object) -> str | None:
    """What the cell shows: ISO text for dates, integers without '.0', None for empty."""
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, pd.Timestamp | dt.datetime):
        stamp = pd.Timestamp(value)
        if stamp.hour == stamp.minute == stamp.second == 0 and stamp.microsecond == 0:
            return stamp.strftime("%Y-%m-%d")
        return stamp.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    text = str(value).strip()
    return text or None
