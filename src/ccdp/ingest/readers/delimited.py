"""Delimited text files (CSV, semicolon, tab, pipe), read as strings with row numbers kept.

Site exports come from Excel in a local locale, from SPSS, from hospital systems: any delimiter,
any 8-bit encoding. We detect both, and refuse loudly (naming file and line) when a row has the
wrong number of fields, because silently padding a short row is how a truncated export loses data.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import charset_normalizer
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from ccdp.ingest.readers.base import SOURCE_ROW, ReaderError, ReaderOptions

_CANDIDATE_DELIMITERS = ",;\t|"
_NAMED_DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
MAX_FIELD_CHARS = 16 * 2**20  # one cell; beyond this it is not a registry value but a broken export
_SNIFF_CHARS = 64_000
_ENCODING_SAMPLE = 1 << 20
_PREFERRED_ENCODINGS = ("cp1252", "cp1250", "iso8859_15", "iso8859_2")
_EXPECTED_LETTERS = frozenset(
    "àâæçéèêëîïôœùûüÿäößìíòóúąćęłńśźżáãõñ¿¡°ªº€ÀÂÆÇÉÈÊËÎÏÔŒÙÛÜŸÄÖÌÍÒÓÚĄĆĘŁŃŚŹŻÁÃÕÑ"
)


def read_delimited(path: Path, opts: ReaderOptions) -> pd.DataFrame:
    """One delimited file as a frame of strings/None plus `_source_row`."""
    text = read_text(path, opts.encoding)
    delimiter = resolve_delimiter(text, opts.delimiter, path)
    fast = _read_fast(text, delimiter, opts.quotechar, opts.header_row)
    if fast is not None:
        return fast
    rows = _parse(text, delimiter, opts.quotechar, path)
    return rows_to_frame(rows, opts.header_row, path, text, delimiter, opts.quotechar)


def _read_fast(text: str, delimiter: str, quotechar: str, header_row: int) -> pd.DataFrame | None:
    """Arrow's parser for well-formed files; None whenever anything is unusual, so the exact
    (slower) path can name the line: unbalanced quotes (truncation), ragged rows, duplicate,
    blank or padded header names, blank lines."""
    if text.count(quotechar) % 2 or "\n\n" in text or "\r" in text:
        return None
    lines = text.split("\n", header_row)
    if len(lines) <= header_row:
        return None
    header = next(csv.reader([lines[header_row - 1]], delimiter=delimiter, quotechar=quotechar))
    if len(set(header)) != len(header) or any(h != h.strip() or not h for h in header):
        return None
    bad: list[object] = []

    def invalid(row: object) -> str:
        bad.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(lines[header_row].encode("utf-8")),
            read_options=pacsv.ReadOptions(column_names=header, encoding="utf-8"),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char=quotechar,
                newlines_in_values=True,
                invalid_row_handler=invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (pa.ArrowInvalid, ValueError):
        return None
    if bad:
        return None
    frame = table.to_pandas()
    frame = frame.astype(object).where(frame.notna(), None)
    frame[SOURCE_ROW] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def read_text(path: Path, encoding: str = "auto") -> str:
    """Decode a text file: as declared, else UTF-8, else the encoding charset-normalizer finds."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReaderError(f"{path}: cannot read file ({exc.strerror})") from exc
    if not raw.strip():
        raise ReaderError(f"{path}: file is empty")
    _refuse_binary(raw, path)
    if encoding != "auto":
        return _decode_declared(raw, encoding, path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.start >= len(raw) - 4:
            lines = raw.count(b"\n") + 1
            raise ReaderError(
                f"{path}: the file ends in the middle of a character (line {lines}); "
                "it looks truncated"
            ) from exc
    best = detect_encoding(raw)
    if best is None:
        raise ReaderError(
            f"{path}: cannot detect the text encoding; set `encoding:` (e.g. latin-1, cp1252) "
            "in the mapping's source"
        )
    return raw.decode(best)


def detect_encoding(raw: bytes) -> str | None:
    """The encoding whose reading of `raw` looks most like the partnership's languages.

    charset-normalizer proposes; on short files several 8-bit code pages fit equally well for it
    (a Polish `ł` read as cp1252 becomes `³`), so among its proposal and the Windows/ISO code
    pages European and Latin American sites use, we keep the reading with the fewest characters
    foreign to French, German, Italian, Polish, Portuguese and Spanish text.
    """
    matches = list(charset_normalizer.from_bytes(raw))
    if not matches:
        return None
    sample = raw[:_ENCODING_SAMPLE]
    # On a tie the Windows Western page wins: it reads French, German, Spanish... text alike.
    candidates = ["cp1252", *(m.encoding for m in matches[:3]), *_PREFERRED_ENCODINGS]
    best: tuple[int, int] | None = None
    chosen = matches[0].encoding
    for rank, encoding in enumerate(dict.fromkeys(candidates)):
        try:
            text = sample.decode(encoding, errors="strict")
        except (UnicodeDecodeError, LookupError):
            # The sample may end inside a multi-byte character; judge the rest.
            try:
                text = sample[:-4].decode(encoding)
            except (UnicodeDecodeError, LookupError):
                continue
        foreign = sum(
            1
            for c in text
            if (ord(c) > 127 and c not in _EXPECTED_LETTERS) or (ord(c) < 32 and c not in "\t\r\n")
        )
        if best is None or (foreign, rank) < best:
            best, chosen = (foreign, rank), encoding
    return chosen


def _refuse_binary(raw: bytes, path: Path) -> None:
    """A workbook or other binary file given as text gets a message saying what it is."""
    if raw[:4] == b"PK\x03\x04":
        raise ReaderError(
            f"{path}: this is a zip archive (an .xlsx workbook?), not delimited text; "
            "set `format: xlsx` or give the file its .xlsx extension"
        )
    head = raw[:8192]
    utf16 = head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or (
        len(head) >= 8 and max(head[0::2].count(0), head[1::2].count(0)) > 0.8 * (len(head) // 2)
    )
    if b"\x00" in head and not utf16:
        raise ReaderError(f"{path}: binary content (NUL bytes), not a delimited text file")


def _decode_declared(raw: bytes, encoding: str, path: Path) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise ReaderError(f"{path}: unknown encoding {encoding!r} in the mapping") from exc
    try:
        return raw.decode(
            "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
        )
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        best = detect_encoding(raw)
        guess = f"; it looks like {best}" if best is not None else ""
        raise ReaderError(
            f"{path}: not valid {encoding} at byte {exc.start} (line {line}){guess}; "
            "fix `encoding:` in the mapping's source (or use `encoding: auto`)"
        ) from exc


def resolve_delimiter(text: str, declared: str, path: Path) -> str:
    """The declared delimiter, else the one csv.Sniffer finds among , ; tab |."""
    if declared != "auto":
        delimiter = _NAMED_DELIMITERS.get(declared.lower(), declared)
        if len(delimiter) != 1:
            raise ReaderError(f"{path}: delimiter must be one character, got {declared!r}")
        return delimiter
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS:
        sample = sample[: sample.rfind("\n") + 1] or sample
    try:
        return csv.Sniffer().sniff(sample, delimiters=_CANDIDATE_DELIMITERS).delimiter
    except csv.Error:
        header = sample.split("\n", 1)[0]
        counts = {d: header.count(d) for d in _CANDIDATE_DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


@contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """Python's csv module refuses cells over 128 KiB by default (a process-wide setting)."""
    old = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _parse(text: str, delimiter: str, quotechar: str, path: Path) -> list[list[str]]:
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar, strict=True
    )
    try:
        with _field_limit(MAX_FIELD_CHARS):
            return [row for row in reader if row]
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise ReaderError(_oversized_message(path, text, delimiter, quotechar)) from exc
        hint = " (the file looks truncated)" if "end of data" in str(exc) else ""
        raise ReaderError(f"{path}, line {reader.line_num}: {exc}{hint}") from exc


def _oversized_message(path: Path, text: str, delimiter: str, quotechar: str) -> str:
    found = oversized_field(io.StringIO(text, newline=""), delimiter, quotechar, MAX_FIELD_CHARS)
    limit = f"the limit of {MAX_FIELD_CHARS:,} characters ({MAX_FIELD_CHARS // 2**20} Mi) a cell"
    if found is None:  # cannot happen: the parser just met such a cell
        return f"{path}: a field is longer than {limit} may hold"
    line, row, column, size = found
    return (
        f"{path}, line {line} (data row {row}), field {column!r}: {size:,} characters, more "
        f"than {limit} may hold (an unclosed quote or a file pasted into a cell?)"
    )


def oversized_field(
    lines: Iterable[str],
    delimiter: str,
    quotechar: str,
    limit: int,
    header_row: int = 1,
    *,
    line_limit: bool = False,
    size: Callable[[str], int] = len,
) -> tuple[int, int, str, int] | None:
    """The first row with a cell over `limit` (characters, or what `size` measures) or, with
    `line_limit`, whose cells add up to more: (line it starts on, 1-based data row, column name,
    size of its largest cell). Streams the file with no size limit; only called once a reader
    refused it."""
    reader = csv.reader(lines, delimiter=delimiter, quotechar=quotechar)
    header: list[str] = []
    previous_end, seen = 0, 0
    with _field_limit(sys.maxsize):
        for row in reader:
            if not row:
                previous_end = reader.line_num
                continue
            seen += 1
            if seen == header_row:
                header = [h.strip() for h in row]
            elif seen > header_row:
                sizes = [size(v) for v in row]
                if (sum(sizes) if line_limit else max(sizes)) > limit:
                    i = sizes.index(max(sizes))
                    name = header[i] if i < len(header) and header[i] else f"column_{i + 1}"
                    return previous_end + 1, seen - header_row, name, max(sizes)
            previous_end = reader.line_num
    return None


def rows_to_frame(
    rows: list[list[str]],
    header_row: int,
    path: Path,
    text: str = "",
    delimiter: str = ",",
    quotechar: str = '"',
) -> pd.DataFrame:
    """Header + data rows as a frame; ragged rows are an error naming the line."""
    if len(rows) < header_row:
        raise ReaderError(f"{path}: no header on line {header_row} (the file has {len(rows)} rows)")
    header = [h.strip() for h in rows[header_row - 1]]
    data = rows[header_row:]
    while header and not header[-1]:
        col = len(header) - 1
        if any(len(r) > col and r[col].strip() for r in data):
            break
        header.pop()
    header = [h or f"column_{i + 1}" for i, h in enumerate(header)]
    _refuse_duplicates(header, path)
    width = len(header)
    lengths = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
    for i in np.flatnonzero(lengths != width):
        row = data[i]
        if len(row) > width and not any(v.strip() for v in row[width:]):
            data[i] = row[:width]
            continue
        _ragged(
            path,
            text,
            delimiter,
            quotechar,
            header_row,
            int(i),
            len(row),
            width,
            last=int(i) == len(data) - 1,
        )
    frame = pd.DataFrame(data, columns=header, dtype=object)
    frame = frame.where(frame != "", None)
    frame[SOURCE_ROW] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def _refuse_duplicates(header: list[str], path: Path) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise ReaderError(f"{path}: column {name!r} appears more than once in the header")
        seen.add(name)


def _ragged(
    path: Path,
    text: str,
    delimiter: str,
    quotechar: str,
    header_row: int,
    index: int,
    got: int,
    width: int,
    last: bool,
) -> None:
    """Raise for data row `index` (0-based), locating its physical line in the file."""
    line = _physical_line(text, delimiter, quotechar, header_row + index) if text else None
    where = f"line {line}" if line else f"data row {index + 1}"
    hint = " — the file ends mid-row, it looks truncated" if last and got < width else ""
    raise ReaderError(
        f"{path}, {where} (data row {index + 1}): {got} fields where the header has {width}{hint}"
    )


def _physical_line(text: str, delimiter: str, quotechar: str, row_index: int) -> int | None:
    """Line number on which the (0-based, blank lines skipped) parsed row `row_index` starts."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar)
    previous_end = 0
    seen = 0
    for row in reader:
        if row:
            if seen == row_index:
                return previous_end + 1
            seen += 1
        previous_end = reader.line_num
    return None
