"""GA4GH Phenopackets v2: one Phenopacket per patient, as JSON Lines, one file per batch.

A million patients must not become a million files in one folder (or a million files at all:
small files cost inodes, copy and scan time). The export writes `phenopackets-00000.jsonl`,
... one file per batch of `source.patient_batches`, one Phenopacket per line in the schema's
canonical JSON (`google.protobuf.json_format`, camelCase names): each line is a complete
document that `json_format.Parse` reads back. Mapping conventions are in `phenopackets_build`
and docs/exchange/phenopackets.md.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from google.protobuf.json_format import MessageToDict
from phenopackets import MetaData, Phenopacket

from ccdp.exchange.output import ExportSummary
from ccdp.exchange.phenopackets_build import Context, PatientRows, Row, build
from ccdp.exchange.source import PatientBatch, patient_batches
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
    """Write one Phenopacket (JSON) per patient of `store` into the folder `out`."""
    ctx = Context(created=datetime.now(UTC).replace(microsecond=0))
    counts: dict[str, int] = defaultdict(int)
    done = 0
    for batch in patient_batches(store):
        path = out / FILE_PATTERN.format(batch.number)
        with path.open("w", encoding="utf-8") as fh:
            for packet in batch_packets(batch, ctx):
                fh.write(to_json_line(packet))
                _count(counts, packet)
        done += len(batch.patient)
        if progress is not None:
            progress(done)
    return ExportSummary(
        format="phenopackets",
        standard=STANDARD,
        profiles=[],
        patients=done,
        records=dict(counts),
        notes=list(NOTES),
    )


def to_json_line(packet: Phenopacket) -> str:
    """One document as one line of canonical Phenopacket JSON.

    `metaData` is the same for every patient who uses the same prefixes, so its JSON is made
    once per distinct value (json_format is pure Python and the resources are a quarter of a
    small document's fields); it is the last field of a Phenopacket, so order is unchanged."""
    body = Phenopacket()
    body.CopyFrom(packet)
    body.ClearField("meta_data")
    doc = MessageToDict(body)
    doc["metaData"] = _meta_json(packet.meta_data.SerializeToString(deterministic=True))
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"


@lru_cache(maxsize=256)
def _meta_json(serialised: bytes) -> dict[str, Any]:
    meta = MetaData()
    meta.ParseFromString(serialised)
    return MessageToDict(meta)


def _count(counts: dict[str, int], packet: Phenopacket) -> None:
    counts["Phenopacket"] += 1
    counts["Disease"] += len(packet.diseases)
    counts["Biosample"] += len(packet.biosamples)
    counts["MedicalAction"] += len(packet.medical_actions)
    counts["Measurement"] += len(packet.measurements)


def batch_packets(batch: PatientBatch, ctx: Context) -> Iterator[Phenopacket]:
    """The Phenopackets of one batch, in patient-key order: rows are grouped by patient once
    (a dict per table), never looked up row by row in a frame."""
    tumours = _records(batch.tumour)
    owner = {t["tumour_id"]: t["patient_id"] for t in tumours}
    by_patient = {
        "tumours": _group(tumours, lambda r: r["patient_id"]),
        "treatments": _group(_records(batch.treatment), lambda r: owner.get(r["tumour_id"])),
        "biomarkers": _group(_records(batch.biomarker), lambda r: owner.get(r["tumour_id"])),
        "specimens": _group(_records(batch.specimen), lambda r: owner.get(r["tumour_id"])),
    }
    for patient in _records(batch.patient):
        pid = patient["patient_id"]
        rows = PatientRows(patient=patient, **{k: v.get(pid, []) for k, v in by_patient.items()})
        yield build(rows, ctx)


def _group(rows: list[Row], key: Callable[[Row], Any]) -> dict[Any, list[Row]]:
    groups: dict[Any, list[Row]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def _records(frame: pd.DataFrame) -> list[Row]:
    """Rows as dicts with `date` values and None for every missing value (NaT, NaN, <NA>)."""
    columns: dict[str, list[Any]] = {}
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            values = [None if pd.isna(v) else v.date() for v in col]
        else:
            values = [None if _missing(v) else v for v in col.tolist()]
        columns[str(name)] = values
    names = list(columns)
    return [dict(zip(names, vals, strict=True)) for vals in zip(*columns.values(), strict=True)]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
