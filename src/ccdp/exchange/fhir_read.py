"""FHIR R4 Bundles (PCSP / mCODE profiles, ccdp's export among them) read back into the model's
tables as text, for the ingest pipeline to check like any source.

Structural faults (not JSON, not a Bundle, a resource with no profile ccdp reads, a reference
that names no resource of the Bundle) stop the import with an error naming file, line, resource
and element: nothing sensible can be stored from them. A missing data element (a tumour without
its topography) becomes an empty cell: the ingest quarantines that row and says why, with the
file and line as the row's source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccdp.exchange import fhir_codes as c
from ccdp.exchange.output import MANIFEST
from ccdp.ingest.errors import IngestError

Json = dict[str, Any]
Row = dict[str, str | None]

TABLES = ("patient", "tumour", "event", "treatment", "trial_enrolment", "biomarker", "specimen")


class FhirImportError(IngestError):
    """A FHIR file cannot be read as profiled Bundles (named: file, line, resource, element)."""


@dataclass
class Rows:
    """The rows read so far, table by table, and whether direct identifiers were seen."""

    tables: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in TABLES})
    identified: bool = False
    bundles: int = 0


def bundle_files(source: Path) -> list[Path]:
    """The .json / .ndjson files of `source` (a file or a folder, searched recursively)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FhirImportError(f"{source}: no such file or folder")
    files = sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and p.suffix in (".json", ".ndjson") and p.name != MANIFEST
    )
    if not files:
        raise FhirImportError(f"{source}: no .json or .ndjson file in this folder")
    return files


def read_file(path: Path, rows: Rows) -> None:
    """Every Bundle of one file into `rows` (NDJSON: one Bundle a line; JSON: one Bundle)."""
    if path.suffix == ".ndjson":
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    read_bundle(_parse(line, path, number), _Where(path, number), rows)
    else:
        read_bundle(_parse(path.read_text(encoding="utf-8"), path, 0), _Where(path, 0), rows)


def _parse(text: str, path: Path, line: int) -> Json:
    """One JSON object; `line` is the NDJSON line (0: a whole .json file)."""
    try:
        value = json.loads(text, parse_float=str)  # decimals kept exactly as written
    except json.JSONDecodeError as exc:
        at = line or exc.lineno
        raise FhirImportError(
            f"{path}, line {at}: not JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(value, dict):
        raise FhirImportError(f"{_place(path, line)}: a JSON object (a Bundle) is expected")
    return value


def _place(path: Path, line: int) -> str:
    return f"{path}, line {line}" if line else str(path)


@dataclass(frozen=True)
class _Where:
    path: Path
    line: int

    def error(
        self, res: Json | None, element: str, problem: str, entry: int = -1
    ) -> FhirImportError:
        who = "Bundle" if res is None else f"{res.get('resourceType')}/{res.get('id')}"
        if entry >= 0:
            who = f"entry[{entry}] {who}"
        return FhirImportError(
            f"{_place(self.path, self.line)}: {who}, element {element}: {problem}"
        )


# -- the Bundle --------------------------------------------------------------------------------
class _Bundle:
    """One Bundle's resources, with its references resolved to store keys."""

    def __init__(self, bundle: Json, where: _Where) -> None:
        self.where = where
        if bundle.get("resourceType") != "Bundle":
            raise where.error(None, "resourceType", f"{bundle.get('resourceType')!r}, not Bundle")
        entries = bundle.get("entry")
        if not isinstance(entries, list) or not entries:
            raise where.error(None, "entry", "required (1..*), absent or empty")
        self.resources: list[Json] = []
        self.by_ref: dict[str, Json] = {}
        self.entry: dict[int, int] = {}  # id(resource) -> its entry index, for errors
        for n, entry in enumerate(entries):
            res = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(res, dict) or "resourceType" not in res:
                raise where.error(None, f"entry[{n}].resource", "required (1..1), absent")
            self.resources.append(res)
            self.entry[id(res)] = n
            if entry.get("fullUrl"):
                self.by_ref[str(entry["fullUrl"])] = res
            if res.get("id"):
                self.by_ref[f"{res['resourceType']}/{res['id']}"] = res

    def error(self, res: Json, element: str, problem: str) -> FhirImportError:
        """An error naming file, line, entry, resource and element."""
        return self.where.error(res, element, problem, self.entry.get(id(res), -1))

    def target(self, res: Json, element: str, reference: Any) -> Json:
        """The resource a Reference names (it must be in the Bundle)."""
        text = reference.get("reference") if isinstance(reference, dict) else None
        if not text:
            raise self.error(res, element, "required reference, absent")
        found = self.by_ref.get(str(text))
        if found is None:
            raise self.error(res, element, f"{text} names no resource of this Bundle")
        return found

    def key(self, res: Json, element: str, reference: Any, key_field: str) -> str:
        """The store key of the resource a Reference names."""
        return resource_key(self.target(res, element, reference), key_field)


def resource_key(res: Json, key_field: str) -> str:
    """A resource's store key: its ccdp identifier, else its first identifier, else its id."""
    idents = [i for i in res.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    for ident in idents:
        if ident.get("system") == c.ccdp_system(key_field):
            return str(ident["value"])
    if idents:
        return str(idents[0]["value"])
    return str(res.get("id") or "")


# -- element helpers ---------------------------------------------------------------------------
def _code(cc: Any, system: str) -> str | None:
    """The code of `system` in a CodeableConcept, if any."""
    if not isinstance(cc, dict):
        return None
    for coding in cc.get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == system and coding.get("code"):
            return str(coding["code"])
    return None


def _codes(ccs: Any, system: str) -> str | None:
    for cc in ccs if isinstance(ccs, list) else [ccs]:
        found = _code(cc, system)
        if found:
            return found
    return None


def _ext(res: Json, url: str) -> Json | None:
    for ext in res.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return None


def _reverse(mapping: dict[str, tuple[str, str]], code: str | None) -> str | None:
    return next((k for k, (v, _) in mapping.items() if v == code), None)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _day(value: Any) -> str | None:
    """The date of a FHIR date or dateTime (the model keeps days, not times)."""
    return None if not value else str(value)[:10]


def _profiles(res: Json) -> set[str]:
    meta = res.get("meta") if isinstance(res.get("meta"), dict) else {}
    return {str(p) for p in (meta or {}).get("profile") or []}


# -- resources -> rows -------------------------------------------------------------------------
def read_bundle(bundle: Json, where: _Where, rows: Rows) -> None:
    """One Bundle's resources into rows (patients first: the others refer to them)."""
    b = _Bundle(bundle, where)
    rows.bundles += 1
    tumours: dict[str, Row] = {}
    patients: dict[str, Row] = {}
    events: dict[str, Row] = {}
    pending: list[tuple[Json, str]] = []
    before = {t: len(rows.tables[t]) for t in TABLES}
    for res in b.resources:
        kind = _kind(b, res)
        if kind == "patient":
            row = _patient(res, rows)
            patients[str(row["patient_id"])] = row
        elif kind == "tumour":
            row = _tumour(b, res)
            tumours[str(row["tumour_id"])] = row
        elif kind == "event":
            row = _event(b, res)
            events[str(row["event_id"])] = row
        else:
            pending.append((res, kind))
    for res, kind in pending:
        _other(b, res, kind, rows, patients, tumours, events)
    src = {"_source_file": str(where.path), "_source_row": str(where.line)}
    for table, found in (("patient", patients), ("tumour", tumours), ("event", events)):
        rows.tables[table].extend({**r, **src} for r in found.values())
    for table in ("treatment", "trial_enrolment", "biomarker", "specimen"):
        for row in rows.tables[table][before[table] :]:
            row.update(src)


_KNOWN = {
    c.PATIENT[0]: "patient",
    c.PATIENT[1]: "patient",
    c.PRIMARY[1]: "tumour",
    c.STAGE[0]: "stage",
    c.DISEASE_STATUS[0]: "event",
    c.TUMOUR_MARKER[0]: "biomarker",
    c.SPECIMEN[0]: "specimen",
    c.MED_STATEMENT[0]: "treatment",
    c.RADIOTHERAPY[0]: "treatment",
    c.RADIOTHERAPY[1]: "treatment",
    c.SURGERY[0]: "treatment",
    c.SURGERY[1]: "treatment",
    c.SCT[0]: "treatment",
    c.OWN_PROCEDURE[0]: "treatment",
    c.OWN_FINDING[0]: "finding",
    c.OWN_CONSENT[0]: "consent",
    c.OWN_RESEARCH_SUBJECT[0]: "trial_enrolment",
}


def _kind(b: _Bundle, res: Json) -> str:
    """What a resource is to ccdp, from its profiles (and, for PCSP cancer Conditions, whether
    it follows another: a relapse or second malignancy is an event of the first tumour)."""
    profiles = _profiles(res)
    if c.PRIMARY[0] in profiles:
        follows = _ext(res, c.EXT_OCCURRED_FOLLOWING) is not None
        return "event" if follows or _codes(res.get("category"), c.SYS_EVENT_TYPE) else "tumour"
    kinds = {_KNOWN[p] for p in profiles if p in _KNOWN}
    if not kinds:
        raise b.error(
            res,
            "meta.profile",
            f"{sorted(profiles) or 'none'}: not a profile ccdp reads "
            "(see docs/exchange/fhir.md for the profiles read)",
        )
    kind = kinds.pop()
    if kind == "finding" and _codes(res.get("category"), c.SYS_EVENT_TYPE):
        return "event"
    return kind


def _identifying(res: Json) -> bool:
    """Does a Patient carry direct identifiers (a name, a telephone or e-mail, a street address,
    an identifier of another system than ccdp's pseudonymous key)?"""
    own = c.ccdp_system("patient_id")

    def valued(items: Any, *keys: str) -> bool:
        return any(
            isinstance(i, dict) and any(i.get(k) for k in keys)
            for i in (items if isinstance(items, list) else [])
        )

    contacts = [
        t for x in res.get("contact") or [] if isinstance(x, dict) for t in x.get("telecom") or []
    ]
    return (
        valued(res.get("name"), "family", "given", "text")
        or valued(res.get("telecom"), "value")
        or valued(contacts, "value")
        or valued(res.get("address"), "line", "city", "postalCode", "text")
        or any(
            isinstance(i, dict) and i.get("value") and i.get("system") != own
            for i in res.get("identifier") or []
        )
    )


def _patient(res: Json, rows: Rows) -> Row:
    rows.identified |= _identifying(res)
    if "deceasedDateTime" in res or res.get("deceasedBoolean") is True:
        status = "dead"
    elif res.get("deceasedBoolean") is False:
        status = "alive"
    else:
        status = "unknown"
    last = _ext(res, c.EXT_LAST_CONTACT)
    address = [a for a in res.get("address") or [] if isinstance(a, dict) and a.get("country")]
    return {
        "patient_id": resource_key(res, "patient_id"),
        "sex": _text(res.get("gender")),
        "birth_date": _text(res.get("birthDate")),
        "country": _text(address[0]["country"]) if address else None,
        "vital_status": status,
        "last_contact_date": _text(last.get("valueDate")) if last else None,
        "death_date": _day(res.get("deceasedDateTime")),
        "cause_of_death": None,
        "consent": None,
    }


def _morphology(res: Json) -> tuple[str | None, str | None]:
    """ICD-O-3 `NNNN/B` from the histology extension, else from code.coding."""
    ext = _ext(res, c.EXT_HISTOLOGY)
    code = _code(ext.get("valueCodeableConcept"), c.ICDO3) if ext else None
    code = code or _code(res.get("code"), c.ICDO3)
    if code and "/" in code:
        morph, beh = code.split("/", 1)
        return morph, beh
    return code, None


def _tumour(b: _Bundle, res: Json) -> Row:
    morph, beh = _morphology(res)
    site = (res.get("bodySite") or [None])[0]
    laterality = None
    if isinstance(site, dict):
        lat = _ext(site, c.EXT_LATERALITY) or _ext(site, c.EXT_LATERALITY_MCODE)
        cc = lat.get("valueCodeableConcept") if lat else None
        laterality = _code(cc, c.ccdp_system("laterality")) or _reverse(
            c.LATERALITY_SCT, _code(cc, c.SCT_SYS)
        )
        dar = _code(cc, c.DAR_SYS)
        if laterality is None and dar:
            laterality = {v: k for k, v in c.LATERALITY_DAR.items()}.get(dar)
    frontline = _ext(res, c.EXT_FRONTLINE_END)
    basis = _ext(res, c.EXT_BASIS)
    onset = res.get("onsetDateTime")
    return {
        "tumour_id": resource_key(res, "tumour_id"),
        "patient_id": b.key(res, "subject", res.get("subject"), "patient_id"),
        "diagnosis_date": _day(onset),
        "topography": _code(site, c.ICDO3),
        "morphology": morph,
        "behaviour": beh,
        "basis_of_diagnosis": _code(
            basis.get("valueCodeableConcept"), c.ccdp_system("basis_of_diagnosis")
        )
        if basis
        else None,
        "laterality": laterality,
        "frontline_end_date": _text(frontline.get("valueDate")) if frontline else None,
    }


def _event(b: _Bundle, res: Json) -> Row:
    kind = _codes(res.get("category"), c.SYS_EVENT_TYPE)
    if kind is None and res.get("resourceType") == "Condition":
        kind = "relapse" if _code(res.get("clinicalStatus"), c.CONDITION_CLINICAL) else None
        kind = kind or "second_malignancy"
    if kind is None:
        kind = _reverse(c.DISEASE_STATUS_SCT, _code(res.get("valueCodeableConcept"), c.SCT_SYS))
    if res.get("resourceType") == "Condition":
        follows = _ext(res, c.EXT_OCCURRED_FOLLOWING)
        if follows is None:
            raise b.error(res, "extension[condition-occurredFollowing]", "required, absent")
        tumour = b.key(
            res,
            "extension[condition-occurredFollowing]",
            follows.get("valueReference"),
            "tumour_id",
        )
        when = res.get("onsetDateTime")
        site = (res.get("bodySite") or [None])[0]
        relapse_site = _code(site, c.ccdp_system("relapse_site"))
    else:
        focus = (res.get("focus") or [None])[0]
        tumour = b.key(res, "focus", focus, "tumour_id")
        when, relapse_site = res.get("effectiveDateTime"), None
    return {
        "event_id": resource_key(res, "event_id"),
        "tumour_id": tumour,
        "event_type": kind,
        "event_date": _day(when),
        "relapse_site": relapse_site,
        "bm_blasts_pct": None,
    }


def _other(
    b: _Bundle,
    res: Json,
    kind: str,
    rows: Rows,
    patients: dict[str, Row],
    tumours: dict[str, Row],
    events: dict[str, Row],
) -> None:
    """Resources that add rows to the child tables or fields to a patient, tumour or event."""
    if kind == "treatment":
        rows.tables["treatment"].append(_treatment(b, res))
    elif kind == "biomarker":
        rows.tables["biomarker"].append(_biomarker(b, res))
    elif kind == "specimen":
        rows.tables["specimen"].append(_specimen(b, res))
    elif kind == "trial_enrolment":
        rows.tables["trial_enrolment"].append(_trial(b, res))
    elif kind == "consent":
        patient = _known(b, res, "patient", patients, "patient_id")
        purposes = (res.get("provision") or {}).get("purpose") or []
        patient["consent"] = " ".join(str(p.get("code")) for p in purposes) or None
    elif kind == "stage":
        tumour = _known(b, res, "focus", tumours, "tumour_id")
        value = res.get("valueCodeableConcept")
        tumour["stage_system"] = _code(res.get("method"), c.ccdp_system("stage_system"))
        system = tumour["stage_system"]
        stage = _code(value, c.ccdp_system(f"stage:{system}")) if system else None
        tumour["stage"] = stage or (value.get("text") if isinstance(value, dict) else None)
    elif kind == "finding":
        _finding(b, res, patients, tumours, events)


def _finding(
    b: _Bundle,
    res: Json,
    patients: dict[str, Row],
    tumours: dict[str, Row],
    events: dict[str, Row],
) -> None:
    code = _code(res.get("code"), c.SYS_FINDING)
    if code == "cause_of_death":
        _known(b, res, "subject", patients, "patient_id")["cause_of_death"] = _code(
            res.get("valueCodeableConcept"), c.ccdp_system("cause_of_death")
        )
    elif code in ("risk_group", "immunophenotype", "cns_status"):
        cc = res.get("valueCodeableConcept")
        _known(b, res, "focus", tumours, "tumour_id")[code] = _code(cc, c.ccdp_system(code)) or (
            cc or {}
        ).get("text")
    elif code == "wbc_at_diagnosis":
        _known(b, res, "focus", tumours, "tumour_id")[code] = _text(
            (res.get("valueQuantity") or {}).get("value")
        )
    elif code == "bm_blasts_pct":
        _known(b, res, "focus", events, "event_id")[code] = _text(
            (res.get("valueQuantity") or {}).get("value")
        )
    else:
        raise b.error(res, "code", f"{code!r}: not a ccdp finding code")


def _known(b: _Bundle, res: Json, element: str, found: dict[str, Row], key_field: str) -> Row:
    """The row (patient, tumour or event) of this Bundle that `element` refers to."""
    value = res.get(element)
    reference = value[0] if isinstance(value, list) and value else value
    key = b.key(res, element, reference, key_field)
    if key not in found:
        raise b.error(res, element, f"refers to {key}, which is not a {key_field[:-3]}")
    return found[key]


_TYPE_BY_PROFILE = {
    c.MED_STATEMENT[0]: "chemotherapy",
    c.RADIOTHERAPY[0]: "radiotherapy",
    c.RADIOTHERAPY[1]: "radiotherapy",
    c.SURGERY[0]: "surgery",
    c.SURGERY[1]: "surgery",
    c.SCT[0]: "hsct",
    c.OWN_PROCEDURE[0]: "other",
}


def _treatment(b: _Bundle, res: Json) -> Row:
    kind = _code(res.get("category"), c.SYS_TREATMENT_TYPE)
    if kind is None:
        kind = next(_TYPE_BY_PROFILE[p] for p in _profiles(res) if p in _TYPE_BY_PROFILE)
    if res["resourceType"] == "MedicationStatement":
        agent = (res.get("medicationCodeableConcept") or {}).get("text")
        period = res.get("effectivePeriod") or {}
    else:
        agent = (res.get("code") or {}).get("text")
        period = res.get("performedPeriod") or {}
        if "performedDateTime" in res:
            end = _ext(res, c.EXT_END_DATE)
            period = {"start": res["performedDateTime"], "end": end and end.get("valueDate")}
    reasons = res.get("reasonReference") or [None]
    based = [r for r in res.get("basedOn") or [] if isinstance(r, dict) and r.get("display")]
    return {
        "treatment_id": resource_key(res, "treatment_id"),
        "tumour_id": b.key(res, "reasonReference", reasons[0], "tumour_id"),
        "type": kind,
        "agent": _text(agent),
        "protocol": _text(based[0]["display"]) if based else None,
        "start_date": _text(period.get("start")),
        "end_date": _text(period.get("end")),
    }


def _biomarker(b: _Bundle, res: Json) -> Row:
    related = _ext(res, c.EXT_RELATED_CONDITION)
    reference = related.get("valueReference") if related else (res.get("focus") or [None])[0]
    code = res.get("code") or {}
    value: str | None
    unit: str | None = None
    if "valueQuantity" in res:
        value = _text(res["valueQuantity"].get("value"))
        unit = _text(res["valueQuantity"].get("unit") or res["valueQuantity"].get("code"))
    elif "valueCodeableConcept" in res:
        cc = res["valueCodeableConcept"]
        value = cc.get("text") or next((x.get("code") for x in cc.get("coding") or []), None)
    else:
        value = _text(res.get("valueString"))
        for note in res.get("note") or []:
            if str(note.get("text", "")).startswith("unit: "):
                unit = str(note["text"])[len("unit: ") :]
    return {
        "tumour_id": b.key(res, "extension[relatedCondition]", reference, "tumour_id"),
        "marker": _code(code, c.SYS_MARKER) or _text(code.get("text")),
        "value": value,
        "unit": unit,
        "date": _day(res.get("effectiveDateTime")),
    }


def _specimen(b: _Bundle, res: Json) -> Row:
    related = _ext(res, c.EXT_RELATED_CONDITION)
    if related is None:
        raise b.error(res, "extension[relatedCondition]", "required by ccdp, absent")
    stype = res.get("type")
    kind = _code(stype, c.ccdp_system("specimen_type")) or _reverse(
        c.SPECIMEN_SPTY, _code(stype, c.SPTY)
    )
    status = res.get("status")
    collected = (res.get("collection") or {}).get("collectedDateTime")
    return {
        "specimen_id": resource_key(res, "specimen_id"),
        "tumour_id": b.key(
            res, "extension[relatedCondition]", related.get("valueReference"), "tumour_id"
        ),
        "type": kind,
        "collection_date": _day(collected),
        "available": {"available": "true", "unavailable": "false"}.get(str(status)),
    }


def _trial(b: _Bundle, res: Json) -> Row:
    study = res.get("study") or {}
    trial = (study.get("identifier") or {}).get("value") or study.get("display")
    if not trial:
        raise b.error(res, "study", "required: the trial's identifier or display")
    risk = _ext(res, c.EXT_TRIAL_RISK)
    return {
        "patient_id": b.key(res, "individual", res.get("individual"), "patient_id"),
        "trial": str(trial),
        "arm": _text(res.get("assignedArm")),
        "enrolment_date": _text((res.get("period") or {}).get("start")),
        "risk_group": _text(risk.get("valueString")) if risk else None,
    }
