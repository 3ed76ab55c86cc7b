"""GA4GH Phenopackets v2: one Phenopacket per patient, as JSON Lines, one file per batch.

A million patients must not become a million files in one folder (or a million files at all:
small files cost inodes, copy and scan time). The export writes `phenopackets-00000.jsonl`,
... one file per batch of `source.patient_batches`, one Phenopacket per line in the schema's
canonical JSON (`google.protobuf.json_format`, camelCase names): each line is a complete
document that `json_format.Parse` reads back. Mapping conventions are in `phenopackets_build`
(the reference) and docs/exchange/phenopackets.md; the lines are made by DuckDB
(`phenopackets_sql`), the same documents as the reference writes, at a few times the cost of
DuckDB's own JSON export of the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ccdp.exchange.output import ExportSummary
from ccdp.exchange.phenopackets_build import Context
from ccdp.exchange.phenopackets_sql import batch_query, create_lookups, meta_tails
from ccdp.exchange.source import BATCH
from ccdp.store import NodeStore

STANDARD = "GA4GH Phenopacket Schema v2.0"
FILE_PATTERN = "phenopackets-{:05d}.jsonl"

NOTES = [
    "One Phenopacket per patient, one per line of phenopackets-NNNNN.jsonl (one file per "
    "batch of patients); each line parses with google.protobuf.json_format.Parse.",
    "Times are ages from birth (ISO 8601 durations); a birth date known to the month gives "
    "years and months only. Dates of birth are not written.",
    "Disease.term is the ICD-O-3 histology/behaviour (ICDO3:9836/3), primary_site the ICD-O-3 "
    "topography (ICDO3:C42.1); Biosample.histological_diagnosis is the NCIt term where "
    "data/ncit_icdo3.csv maps the code (its source named there), else the ICD-O-3 term.",
    "Stages, specimen types, causes of death, agents, protocols and biomarkers are local "
    "CCDP: terms (declared in metaData.resources); events (relapse, progression, remission) "
    "and trial enrolments have no Phenopacket element and are not written.",
]


def export_store(
    store: NodeStore, out: Path, *, progress: Callable[[int], None] | None = None
) -> ExportSummary:
    """Write one Phenopacket (JSON) per patient of `store` into the folder `out`, a file per
    batch of `source.BATCH` patients in key order (the batches of `source.patient_batches`)."""
    ctx = Context(created=datetime.now(UTC).replace(microsecond=0))
    con = store.con.cursor()
    counts = {"Phenopacket": 0, "Disease": 0, "Biosample": 0, "MedicalAction": 0, "Measurement": 0}
    try:
        ranges = _number_patients(con, BATCH)
        create_lookups(con)
        sql, tails = batch_query(_KEYS), pa.array(meta_tails(ctx), pa.string())
        for b, keys in enumerate(ranges):
            _write_batch(con, sql, [b, *keys], tails, out / FILE_PATTERN.format(b), counts)
            if progress is not None:
                progress(counts["Phenopacket"])
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_KEYS}")
        con.close()
    return ExportSummary(
        format="phenopackets",
        standard=STANDARD,
        profiles=[],
        patients=counts["Phenopacket"],
        records=counts if counts["Phenopacket"] else {},
        notes=list(NOTES),
    )


_KEYS = "_pp_key"


def _number_patients(con: duckdb.DuckDBPyConnection, size: int) -> list[tuple[str, ...]]:
    """Number patients by key into batches of `size` (as `source.patient_batches` does); for
    each batch, its first and last patient key and its tumours' first and last key."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {_KEYS} AS SELECT patient_id, "
        f"(row_number() OVER (ORDER BY patient_id) - 1) // {int(size)} AS b FROM patient"
    )
    rows = con.execute(
        f"SELECT k.b, min(k.patient_id), max(k.patient_id), "
        f"coalesce(min(t.tumour_id), ''), coalesce(max(t.tumour_id), '') "
        f"FROM {_KEYS} k LEFT JOIN tumour t USING (patient_id) GROUP BY k.b ORDER BY k.b"
    ).fetchall()
    return [tuple(str(v) for v in row[1:]) for row in rows]


def _write_batch(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: list[Any],
    tails: pa.Array,
    path: Path,
    counts: dict[str, int],
) -> None:
    """One batch's lines, made by DuckDB, ended by Arrow with their metaData, written at once."""
    table = con.sql(sql, params=params).to_arrow_table()
    lines = pc.binary_join_element_wise(table.column("line"), tails.take(table.column("mask")), "")
    with path.open("wb") as fh:
        for chunk in lines.chunks:
            fh.write(_utf8(chunk))
    counts["Phenopacket"] += table.num_rows
    for name, column in _COUNTED.items():
        counts[name] += int(pc.sum(table.column(column)).as_py() or 0)


def _utf8(strings: pa.Array) -> bytes | memoryview:
    """The text of an Arrow string array, its values one after another: the array's own data
    buffer when it has one (no copy into Python strings), else the values joined."""
    kind = {pa.string(): np.int32, pa.large_string(): np.int64}.get(strings.type)
    if kind is None or strings.null_count:
        return "".join(strings.to_pylist()).encode("utf-8")
    offsets = np.frombuffer(strings.buffers()[1], dtype=kind)
    start, end = int(offsets[strings.offset]), int(offsets[strings.offset + len(strings)])
    data = strings.buffers()[2]
    return memoryview(data)[start:end] if data is not None else b""


_COUNTED = {
    "Disease": "diseases",
    "Biosample": "biosamples",
    "MedicalAction": "actions",
    "Measurement": "measurements",
}
