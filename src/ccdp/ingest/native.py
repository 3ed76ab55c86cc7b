"""The native CSV layout: a folder with one `<table>.csv` per data-model table.

Columns are named exactly as the model's input fields (derived fields may be present and are
recomputed). Required fields and keys must be present; an optional column the registry does not
record may be left out and is read as empty (the ingest report lists it). Columns starting
with `_` are annotations (e.g. the reasons in a quarantine export) and are ignored, except
`_identifier_*` direct identifiers, which trigger pseudonymisation.
Every cell is read as text; typing and checks happen later, in SQL.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from ccdp.ingest.errors import IngestError
from ccdp.ingest.specbase import did_you_mean
from ccdp.model import load_model
from ccdp.store.typed import lit, q

IDENTIFIER_PREFIX = "_identifier_"
IDENTIFIERS_FILE = "identifiers.csv"  # direct identifiers keyed by patient_id (never stored)
CSV_BUFFER_BYTES = 16 * 2**20
MAX_LINE_BYTES = CSV_BUFFER_BYTES  # DuckDB reads no line longer than its buffer


@dataclass(frozen=True)
class NativeFile:
    """One native CSV: which table it feeds, its header, and the name used in messages."""

    table: str
    path: Path
    header: list[str]
    source_name: str

    @property
    def kept_columns(self) -> list[str]:
        """Header columns carried into ingest: input fields and direct identifiers."""
        fields = {f.name for f in load_model().table(self.table).input_fields}
        return [c for c in self.header if c in fields or c.startswith(IDENTIFIER_PREFIX)]

    def read_csv_sql(self) -> str:
        """A DuckDB read_csv call reading every column as text, strict about the CSV grammar.

        16 MiB buffers: with the default, a 1M-row tumour.csv (15 columns) costs ~30% more CPU
        to load in file order (more, smaller batches to stitch); other files are unaffected."""
        columns = "{" + ", ".join(f"{lit(c)}: 'VARCHAR'" for c in self.header) + "}"
        return (
            f"read_csv({lit(str(self.path))}, header = true, delim = ',', quote = '\"', "
            f"escape = '\"', columns = {columns}, auto_detect = false, strict_mode = true, "
            f"null_padding = false, encoding = 'utf-8', buffer_size = {CSV_BUFFER_BYTES}, "
            f"max_line_size = {MAX_LINE_BYTES})"
        )


def _read_header(path: Path, source_name: str) -> list[str]:
    """The header row, decoded strictly as UTF-8 (a BOM is allowed)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{source_name}: not UTF-8 encoded (invalid byte at offset {exc.start}); "
            "re-export the file as UTF-8"
        ) from exc
    except csv.Error as exc:
        raise IngestError(f"{source_name}: unreadable CSV header: {exc}") from exc
    if not header or all(not h.strip() for h in header):
        raise IngestError(f"{source_name}: empty file (no header row)")
    return [h.strip() for h in header]


def _check_header(table: str, header: list[str], source_name: str) -> None:
    """Unknown, duplicate or missing required columns stop the ingest with the file and column
    named; optional columns may be absent (a registry need not record every optional field)."""
    tdef = load_model().table(table)
    inputs = [f.name for f in tdef.input_fields]
    derived = {f.name for f in tdef.fields if f.derived}
    seen: set[str] = set()
    for col in header:
        if col in seen:
            raise IngestError(f"{source_name}: column {col!r} appears twice in the header")
        seen.add(col)
        if col.startswith("_") or col in inputs or col in derived:
            continue
        raise IngestError(
            f"{source_name}: unknown column {col!r} for table {table}"
            f"{did_you_mean(col, inputs)} (expected: {', '.join(inputs)})"
        )
    needed = [f.name for f in tdef.input_fields if f.required or f.name in tdef.primary_key]
    missing = [c for c in needed if c not in seen]
    if missing:
        raise IngestError(
            f"{source_name}: missing column(s) {', '.join(repr(m) for m in missing)} "
            f"for table {table} (required fields and keys must be present; optional ones may be "
            "left out)"
        )


def native_files(folder: str | Path) -> dict[str, NativeFile]:
    """The native CSVs of `folder`, by table, with their headers checked against the model."""
    root = Path(folder)
    if not root.is_dir():
        raise IngestError(f"{root}: not a folder (a native export is a folder of <table>.csv)")
    model = load_model()
    files: dict[str, NativeFile] = {}
    for path in sorted(root.glob("*.csv")):
        source_name = f"{root.name}/{path.name}" if root.name else path.name
        if path.name == IDENTIFIERS_FILE:
            continue
        if path.stem not in model.tables:
            raise IngestError(
                f"{source_name}: unknown table file {path.name!r} "
                f"(native tables: {', '.join(t + '.csv' for t in model.table_names)})"
            )
        header = _read_header(path, source_name)
        _check_header(path.stem, header, source_name)
        files[path.stem] = NativeFile(path.stem, path, header, source_name)
    if not files:
        raise IngestError(f"{root}: no native table files (<table>.csv) found")
    return files


def native_identifiers(folder: str | Path) -> Path | None:
    """The folder's `identifiers.csv` (names, national ids by patient_id), checked, if any.

    Its presence means the export carries direct identifiers: ingest then pseudonymises every
    identifier field (patient_id, tumour_id, ...; see the model) and stores none of these
    columns."""
    path = Path(folder) / IDENTIFIERS_FILE
    if not path.exists():
        return None
    source_name = f"{Path(folder).name}/{IDENTIFIERS_FILE}"
    header = _read_header(path, source_name)
    if "patient_id" not in header:
        raise IngestError(
            f"{source_name}: missing column 'patient_id' (identifiers are by patient)"
        )
    return path


def load_native_file(con: duckdb.DuckDBPyConnection, native: NativeFile, into: str) -> None:
    """Read one CSV into temp table `into`, in file order: its `rowid + 1` is the data row."""
    cols = ", ".join(q(c) for c in native.kept_columns)
    try:
        con.execute(f"CREATE TEMP TABLE {q(into)} AS SELECT {cols} FROM {native.read_csv_sql()}")
    except duckdb.Error as exc:
        raise IngestError(native_csv_error(native.path, native.source_name, str(exc))) from exc


def native_csv_error(path: Path, source_name: str, message: str) -> str:
    """DuckDB's error on reading a native CSV, in short; a line over DuckDB's limit is looked
    for first (streaming, only on a failure) to name its line, data row and field. DuckDB's own
    words for such a line vary by release and size ('maximum line size', 'Parallel CSV Reader
    ... full read' past two buffers in 2.0, 'unterminated quote' for a long quoted cell), so
    every CSV error is checked, not only those naming the line size."""
    from ccdp.ingest.readers.delimited import oversized_field

    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            found = oversized_field(fh, ",", '"', MAX_LINE_BYTES, line_limit=True, size=_utf8_size)
    except (OSError, UnicodeDecodeError, csv.Error):  # DuckDB's words are all there is
        found = None
    limit = f"the limit of {MAX_LINE_BYTES:,} bytes ({MAX_LINE_BYTES // 2**20} MiB) for one line"
    if found is None:
        if "maximum line size" not in message.lower():
            return f"{source_name}: {csv_error_text(message)}"
        return f"{source_name}: a line is longer than {limit} ({csv_error_text(message)})"
    line, row, column, size = found
    return (
        f"{source_name}, line {line} (data row {row}), field {column!r}: {size:,} bytes, "
        f"more than {limit} (an unclosed quote or a file pasted into a cell?)"
    )


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def csv_error_text(message: str) -> str:
    """DuckDB's CSV errors are long; keep what went wrong and where, then the offending line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    lines = [re.sub(r"^[A-Za-z ]+ Error: ", "", ln) for ln in lines]
    original = [ln for ln in lines if ln.startswith("Original Line:")]
    keep = [
        ln
        for ln in lines
        if not ln.startswith(("Possible", "*", "file =", "delimiter", "Original Line:"))
        and " = " not in ln
    ][:2]
    if original:
        text = original[0].removeprefix("Original Line:").strip()
        keep.append(f"(line reads: {text[:80]}{'...' if len(text) > 80 else ''})")
    return "; ".join(keep)


def read_native_folder(folder: str | Path) -> dict[str, pd.DataFrame]:
    """Every native CSV of `folder` as a DataFrame of strings (None for empty cells), with
    `_source_file` and `_source_row` (1-based data row) columns: the frame contract of ingest."""
    frames: dict[str, pd.DataFrame] = {}
    con = duckdb.connect()
    try:
        for table, native in native_files(folder).items():
            load_native_file(con, native, f"n_{table}")
            df = con.execute(
                f"SELECT *, rowid + 1 AS _source_row FROM {q('n_' + table)} ORDER BY rowid"
            ).df()
            df.insert(0, "_source_file", native.source_name)
            df["_source_row"] = df["_source_row"].astype("int64")
            frames[table] = df.astype({c: object for c in native.kept_columns}).where(
                df.notna(), None
            )
        ids = native_identifiers(folder)
        if ids is not None and "patient" in frames:
            frames["patient"] = _with_identifiers(con, frames["patient"], ids)
    finally:
        con.close()
    return frames


def _with_identifiers(
    con: duckdb.DuckDBPyConnection, patient: pd.DataFrame, path: Path
) -> pd.DataFrame:
    """The patient frame with the identifier columns joined on as `_identifier_<name>`."""
    ids = con.execute(
        f"SELECT * FROM read_csv({lit(str(path))}, header = true, all_varchar = true)"
    ).df()
    ids = ids.drop_duplicates("patient_id").rename(
        columns={c: IDENTIFIER_PREFIX + c for c in ids.columns if c != "patient_id"}
    )
    merged = patient.merge(ids, on="patient_id", how="left")
    return merged.astype(object).where(merged.notna(), None)
