"""One patient of the model as one GA4GH Phenopacket v2 message: the reference mapping.

The export writes its documents from SQL (`phenopackets_sql`): building a message per patient
and converting it with json_format costs about 25 times DuckDB's own JSON export of the rows.
This module stays the readable statement of the mapping, the reference the SQL must equal (the
tests compare every document), and it makes the `metaData` JSON for the SQL export.

The conventions (docs/exchange/phenopackets.md): times are ages (ISO 8601 durations from birth),
never dates; a tumour is a Disease whose term is its ICD-O-3 histology/behaviour
(`ICDO3:9836/3`) and whose primary site is its ICD-O-3 topography (`ICDO3:C42.1`); a specimen is
a Biosample whose histological diagnosis is the tumour's NCIt term where the sourced table has
one; surgery and HSCT are Procedures; systemic therapy and radiotherapy are TherapeuticRegimens
(the only action that carries a start and an end without a dose the model does not hold).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import pandas as pd
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from phenopackets import (
    Age,
    Biosample,
    Disease,
    ExternalReference,
    Individual,
    Measurement,
    MedicalAction,
    MetaData,
    OntologyClass,
    Phenopacket,
    Procedure,
    Quantity,
    Sex,
    TherapeuticRegimen,
    TimeElement,
    Value,
    VitalStatus,
)

from ccdp.exchange.phenopackets_terms import (
    Terms,
    age,
    fixed_terms,
    icdo3_histology_id,
    icdo3_site_id,
    local_id,
    morphology_labels,
    ncit_for_icdo3,
    topography_labels,
)
from ccdp.exchange.source import PatientBatch

SCHEMA_VERSION = "2.0"

Row = dict[str, Any]

_SEX = {"male": Sex.MALE, "female": Sex.FEMALE, "unknown": Sex.UNKNOWN_SEX}
_VITAL = {
    "alive": VitalStatus.ALIVE,
    "dead": VitalStatus.DECEASED,
    "unknown": VitalStatus.UNKNOWN_STATUS,
}
PROCEDURES = frozenset({"surgery", "hsct"})
"""Treatment types written as a Procedure; every other type is a TherapeuticRegimen."""

_UNITS = {"%": ("UCUM:%", "percent")}
"""Biomarker units with a UCUM code; any other unit is a local term."""


@dataclass(frozen=True)
class PatientRows:
    """Everything the store holds for one patient (rows as dicts, dates as `date`)."""

    patient: Row
    tumours: Sequence[Row]
    treatments: Sequence[Row]
    biomarkers: Sequence[Row]
    specimens: Sequence[Row]


@dataclass(frozen=True)
class Context:
    """What every document of an export shares."""

    created: datetime
    created_by: str = "ccdp"


class _Clock:
    """Ages of one patient, from their birth date and its precision."""

    def __init__(self, patient: Row) -> None:
        self.birth: date | None = patient.get("birth_date")
        self.month = patient.get("birth_date_precision") == "month"

    def at(self, when: date | None) -> TimeElement | None:
        text = age(self.birth, when, self.month)
        return TimeElement(age=Age(iso8601duration=text)) if text else None


def build(rows: PatientRows, ctx: Context) -> Phenopacket:
    """The Phenopacket of one patient."""
    terms, clock = Terms(), _Clock(rows.patient)
    pid = str(rows.patient["patient_id"])
    diseases = {str(t["tumour_id"]): _disease(t, terms, clock) for t in rows.tumours}
    packet = Phenopacket(
        id=pid,
        subject=_individual(rows, terms, clock),
        diseases=list(diseases.values()),
        biosamples=[_biosample(s, pid, rows.tumours, terms, clock) for s in rows.specimens],
        medical_actions=[_action(x, diseases, rows.tumours, terms, clock) for x in rows.treatments],
        measurements=[_measurement(b, terms, clock) for b in rows.biomarkers],
    )
    packet.meta_data.CopyFrom(meta_data(ctx, terms))
    return packet


def _set(message: Any, name: str, value: Any) -> None:
    """Set a message field only when there is a value (an absent time stays absent)."""
    if value is not None:
        getattr(message, name).CopyFrom(value)


def _individual(rows: PatientRows, terms: Terms, clock: _Clock) -> Individual:
    p = rows.patient
    person = Individual(id=str(p["patient_id"]), sex=_SEX.get(p.get("sex") or "", Sex.UNKNOWN_SEX))
    dates = [t["diagnosis_date"] for t in rows.tumours if t.get("diagnosis_date")]
    first_dx = min(dates, default=None)
    last = p.get("death_date") or p.get("last_contact_date")
    _set(person, "time_at_last_encounter", clock.at(last or first_dx))
    person.taxonomy.CopyFrom(terms.term(*fixed_terms()[("individual.taxonomy", "human")]))
    person.vital_status.CopyFrom(_vital_status(p, first_dx, last, terms, clock))
    return person


def _vital_status(
    p: Row, first_dx: date | None, last: date | None, terms: Terms, clock: _Clock
) -> VitalStatus:
    vs = VitalStatus(status=_VITAL.get(p.get("vital_status") or "", VitalStatus.UNKNOWN_STATUS))
    if p.get("vital_status") == "dead":
        _set(vs, "time_of_death", clock.at(p.get("death_date")))
        cause = p.get("cause_of_death")
        if cause:
            vs.cause_of_death.CopyFrom(terms.local("patient", "cause_of_death", cause))
    if first_dx is not None and last is not None and last >= first_dx:
        vs.survival_time_in_days = (last - first_dx).days
    return vs


def histology_term(tumour: Row, terms: Terms) -> OntologyClass:
    """The tumour's ICD-O-3 histology/behaviour term, labelled from ccdp's terminology."""
    morph, beh = str(tumour["morphology"]), int(tumour["behaviour"])
    label = morphology_labels().get(morph, f"ICD-O-3 {morph}")
    return terms.term(icdo3_histology_id(morph, beh), f"{label} ({morph}/{beh})")


def site_term(tumour: Row, terms: Terms) -> OntologyClass:
    topo = str(tumour["topography"])
    return terms.term(icdo3_site_id(topo), topography_labels().get(topo, f"ICD-O-3 {topo}"))


def _disease(t: Row, terms: Terms, clock: _Clock) -> Disease:
    disease = Disease(term=histology_term(t, terms), primary_site=site_term(t, terms))
    _set(disease, "onset", clock.at(t.get("diagnosis_date")))
    if t.get("stage"):
        system = t.get("stage_system") or "unspecified"
        disease.disease_stage.append(_stage(system, str(t["stage"]), terms))
    side = fixed_terms().get(("tumour.laterality", t.get("laterality") or ""))
    if side:
        disease.laterality.CopyFrom(terms.term(*side))
    return disease


def _stage(system: str, stage: str, terms: Terms) -> OntologyClass:
    """A stage as a local term `CCDP:tumour.stage.<system>.<stage>` (no sourced ontology ids
    exist here for the paediatric staging systems), labelled 'Toronto tier 2 stage L1'."""
    words = terms.local("tumour", "stage_system", system).label if system != "unspecified" else ""
    ident = local_id("tumour.stage", f"{system}.{stage}")
    return terms.term(ident, f"{words} stage {stage}".strip())


def _tumour(tumours: Sequence[Row], tumour_id: Any) -> Row | None:
    return next((t for t in tumours if t["tumour_id"] == tumour_id), None)


def _biosample(s: Row, pid: str, tumours: Sequence[Row], terms: Terms, clock: _Clock) -> Biosample:
    sample = Biosample(id=str(s["specimen_id"]), individual_id=pid)
    tumour = _tumour(tumours, s["tumour_id"])
    kind = s.get("type")
    if kind:
        sample.sample_type.CopyFrom(terms.local("specimen", "type", kind))
        tissue = fixed_terms().get(("specimen.type", kind))
        if tissue:
            sample.sampled_tissue.CopyFrom(terms.term(*tissue))
        elif kind == "tumour_tissue" and tumour is not None:
            sample.sampled_tissue.CopyFrom(site_term(tumour, terms))
    if tumour is not None:
        sample.histological_diagnosis.CopyFrom(_diagnosis(tumour, terms))
    _set(sample, "time_of_collection", clock.at(s.get("collection_date")))
    if s.get("available") is not None:
        sample.description = f"available for research: {'yes' if s['available'] else 'no'}"
    return sample


def _diagnosis(tumour: Row, terms: Terms) -> OntologyClass:
    """NCIt where the sourced table maps the histology/behaviour, else the ICD-O-3 term."""
    hit = ncit_for_icdo3().get((str(tumour["morphology"]), int(tumour["behaviour"])))
    return terms.term(*hit) if hit else histology_term(tumour, terms)


def _action(
    x: Row, diseases: dict[str, Disease], tumours: Sequence[Row], terms: Terms, clock: _Clock
) -> MedicalAction:
    action = MedicalAction()
    target = diseases.get(str(x["tumour_id"]))
    if target is not None:
        action.treatment_target.CopyFrom(target.term)
    if x["type"] in PROCEDURES:
        action.procedure.CopyFrom(_procedure(x, _tumour(tumours, x["tumour_id"]), terms, clock))
    else:
        action.therapeutic_regimen.CopyFrom(_regimen(x, terms, clock))
    return action


def _what(x: Row, terms: Terms) -> OntologyClass:
    """The agent as a local term when given, else the treatment type."""
    if x.get("agent"):
        return terms.term(local_id("treatment.agent", x["agent"]), str(x["agent"]))
    return terms.local("treatment", "type", x["type"])


def _procedure(x: Row, tumour: Row | None, terms: Terms, clock: _Clock) -> Procedure:
    proc = Procedure(code=_what(x, terms))
    if x["type"] == "surgery" and tumour is not None:
        proc.body_site.CopyFrom(site_term(tumour, terms))
    _set(proc, "performed", clock.at(x.get("start_date")))
    return proc


def _regimen(x: Row, terms: Terms, clock: _Clock) -> TherapeuticRegimen:
    """A regimen: identified by its protocol (an external reference) when named, else by its
    agent or type; started and ended as ages; COMPLETED when an end date is recorded."""
    regimen = TherapeuticRegimen()
    if x.get("protocol"):
        kind = terms.local("treatment", "type", x["type"]).label
        what = f"{kind}: {x['protocol']}" + (f" ({x['agent']})" if x.get("agent") else "")
        ref = ExternalReference(
            id=terms.local_ref("treatment.protocol", x["protocol"]),
            description=what,
        )
        regimen.external_reference.CopyFrom(ref)
    else:
        regimen.ontology_class.CopyFrom(_what(x, terms))
    _set(regimen, "start_time", clock.at(x.get("start_date")))
    _set(regimen, "end_time", clock.at(x.get("end_date")))
    if x.get("end_date"):
        regimen.regimen_status = TherapeuticRegimen.COMPLETED
    elif x.get("start_date"):
        regimen.regimen_status = TherapeuticRegimen.STARTED
    return regimen


def _measurement(b: Row, terms: Terms, clock: _Clock) -> Measurement:
    """A biomarker: numeric results as a Quantity (UCUM unit where known), others (positive,
    negative) as a local term."""
    m = Measurement(
        assay=terms.term(local_id("biomarker.marker", b["marker"]), str(b["marker"])),
        description=f"tumour {b['tumour_id']}",
    )
    raw = b.get("value")
    number = _number(raw)
    if number is not None:
        unit = _UNITS.get(b.get("unit") or "")
        unit_term = terms.term(*unit) if unit else _local_unit(b.get("unit"), terms)
        m.value.CopyFrom(Value(quantity=Quantity(unit=unit_term, value=number)))
    elif raw is not None:
        m.value.CopyFrom(
            Value(ontology_class=terms.term(local_id("biomarker.value", raw), str(raw)))
        )
    _set(m, "time_observed", clock.at(b.get("date")))
    return m


def _local_unit(unit: str | None, terms: Terms) -> OntologyClass:
    text = unit or "1"
    return terms.term(local_id("biomarker.unit", text), text)


def _number(raw: Any) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def meta_data(ctx: Context, terms: Terms) -> MetaData:
    """The document's metaData: the resources of the prefixes `terms` recorded."""
    created = Timestamp()
    created.FromDatetime(ctx.created)
    return MetaData(
        created=created,
        created_by=ctx.created_by,
        phenopacket_schema_version=SCHEMA_VERSION,
        resources=terms.resources(),
    )


# The reference writer: one message per patient, converted by json_format. The export writes
# the same documents from SQL (phenopackets_sql); tests compare the two, document by document.


def reference_lines(batch: PatientBatch, ctx: Context, counts: dict[str, int]) -> Iterator[str]:
    """The JSON lines of one batch as the protobuf builder writes them (adding to `counts`)."""
    for packet in batch_packets(batch, ctx):
        count(counts, packet)
        yield to_json_line(packet)


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


def count(counts: dict[str, int], packet: Phenopacket) -> None:
    """Add the document's elements to `counts` (the summary's records)."""
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
