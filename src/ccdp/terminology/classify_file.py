"""Recode a whole CSV file to ICCC-3, in chunks, keeping every input column.

Registry exports come in whatever encoding and delimiter the source system used, so the encoding is
detected (charset-normalizer) and the delimiter sniffed. The output is written to a temporary file
beside the target and renamed at the end, so a failure never leaves a half-written result.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from charset_normalizer import from_bytes

from ccdp.errors import CcdpError
from ccdp.terminology import iccc

REQUIRED_COLUMNS: tuple[str, ...] = ("morphology", "topography")
OPTIONAL_COLUMNS: tuple[str, ...] = ("behaviour",)
_SAMPLE_BYTES = 1 << 20
_PREFERRED_ENCODINGS: tuple[str, ...] = (
    "cp1252",
    "latin_1",
    "iso8859_15",
    "cp1250",
    "iso8859_2",
    "cp1251",
    "koi8_r",
    "cp1253",
    "cp1254",
    "iso8859_9",
    "cp1256",
    "cp1255",
    "gb18030",
    "big5",
    "shift_jis",
    "euc_kr",
)


class ClassifyInputError(CcdpError):
    """The input of `ccdp classify` cannot be used (undecodable file, missing column, bad value)."""


@dataclass
class ClassifySummary:
    """What a file run did: rows read, rows classified, unclassified (999) and rejected rows."""

    rows: int = 0
    classified: int = 0
    unclassified: int = 0
    errors: int = 0
    encoding: str = ""
    delimiter: str = ","
    by_group: dict[str, int] = field(default_factory=dict)


def detect_encoding(path: Path) -> str:
    """The text encoding of a file, judged on its first megabyte; ClassifyInputError if not text."""
    with path.open("rb") as fh:
        sample = fh.read(_SAMPLE_BYTES)
    if not sample:
        raise ClassifyInputError(f"{path}: the file is empty (expected a CSV with a header row)")
    if sample.startswith((b"\xef\xbb\xbf",)):
        return "utf-8-sig"
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the sample boundary is still UTF-8
        if exc.start >= len(sample) - 3 and len(sample) == _SAMPLE_BYTES:
            return "utf-8"
    matches = list(from_bytes(sample)) if b"\x00" not in sample else []
    if not matches:
        raise ClassifyInputError(
            f"{path}: cannot be decoded as text (no known character encoding fits; "
            "expected a CSV file in UTF-8, UTF-16, Latin-1 or another text encoding)"
        )
    # Short registry files are ambiguous between single-byte code pages; among the encodings that
    # read the sample equally cleanly, prefer the ones registries actually export in.
    least = min(m.chaos for m in matches)
    fitting: set[str] = set()
    for m in matches:
        if m.chaos <= least + 0.01:
            fitting.update((m.encoding, *m.could_be_from_charset))
    for encoding in _PREFERRED_ENCODINGS:
        if encoding in fitting:
            return encoding
    return matches[0].encoding


def _sniff_delimiter(text_sample: str) -> str:
    try:
        return csv.Sniffer().sniff(text_sample.split("\n", 20)[0], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _resolve_columns(path: Path, header: list[str]) -> dict[str, str]:
    """Map our field names to the file's header names (case and spaces ignored)."""
    lookup = {h.strip().lower(): h for h in header}
    missing = [c for c in REQUIRED_COLUMNS if c not in lookup]
    if missing:
        raise ClassifyInputError(
            f"{path}: missing column(s) {', '.join(repr(m) for m in missing)} "
            f"(needs morphology, topography and behaviour; found: {', '.join(header) or 'none'})"
        )
    return {c: lookup[c] for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in lookup}


def classify_csv(
    input_path: Path,
    output_path: Path,
    edition: str = "2017",
    chunk_size: int = 200_000,
    on_progress: Callable[[int, int], None] | None = None,
) -> ClassifySummary:
    """Classify every row of `input_path` and write input columns + ICCC columns to `output_path`.

    `on_progress(bytes_read, bytes_total)` is called after each chunk.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise ClassifyInputError(f"{input_path}: no such file")
    iccc.check_edition(edition)
    encoding = detect_encoding(input_path)
    total = input_path.stat().st_size
    summary = ClassifySummary(encoding=encoding)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output_path.name}.", dir=output_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with input_path.open("rb") as raw:
            text = io.TextIOWrapper(raw, encoding=encoding, newline="")
            try:
                head = text.read(64 * 1024)
            except UnicodeDecodeError as exc:
                raise ClassifyInputError(
                    f"{input_path}: cannot be decoded as {encoding} near byte {exc.start} "
                    f"({exc.reason}); save it as UTF-8 and try again"
                ) from None
            summary.delimiter = _sniff_delimiter(head)
            text.seek(0)
            reader = pd.read_csv(
                text,
                sep=summary.delimiter,
                dtype=str,
                keep_default_na=False,
                chunksize=chunk_size,
            )
            first = True
            try:
                for chunk in reader:
                    _classify_chunk(input_path, chunk, edition, summary, tmp, first)
                    first = False
                    if on_progress:
                        on_progress(min(raw.tell(), total), total)
            except UnicodeDecodeError as exc:
                raise ClassifyInputError(
                    f"{input_path}: cannot be decoded as {encoding} after row "
                    f"{summary.rows + 1} ({exc.reason}); save it as UTF-8 and try again"
                ) from None
            except pd.errors.EmptyDataError:
                raise ClassifyInputError(
                    f"{input_path}: no header row (expected columns morphology, topography, "
                    "behaviour)"
                ) from None
            except pd.errors.ParserError as exc:
                raise ClassifyInputError(f"{input_path}: not a readable CSV file ({exc})") from None
            if first:
                raise ClassifyInputError(f"{input_path}: no header row")
        tmp.replace(output_path)
    finally:
        tmp.unlink(missing_ok=True)
    return summary


def _classify_chunk(
    path: Path,
    chunk: pd.DataFrame,
    edition: str,
    summary: ClassifySummary,
    tmp: Path,
    first: bool,
) -> None:
    cols = _resolve_columns(path, [str(c) for c in chunk.columns])
    behaviour = chunk[cols["behaviour"]] if "behaviour" in cols else pd.Series([None] * len(chunk))
    result = iccc.classify(
        chunk[cols["morphology"]].to_numpy(),
        chunk[cols["topography"]].to_numpy(),
        behaviour.to_numpy(),
        edition=edition,
    )
    out = chunk.drop(columns=[c for c in iccc.OUTPUT_COLUMNS if c in chunk.columns])
    out = pd.concat([out.reset_index(drop=True), result], axis=1)
    out.to_csv(tmp, mode="w" if first else "a", header=first, index=False, encoding="utf-8")
    errors = int(result["error"].notna().sum())
    unclassified = int((result["iccc_recode"] == iccc.UNCLASSIFIED).sum())
    summary.rows += len(result)
    summary.errors += errors
    summary.unclassified += unclassified
    summary.classified += len(result) - errors - unclassified
    for group, n in result["iccc_group"].value_counts().items():
        summary.by_group[str(group)] = summary.by_group.get(str(group), 0) + int(n)
