"""The model's rows as FHIR R4 resources (plain dicts): one patient's Bundle at a time.

Plain dicts (written by orjson, spelled as `json.dumps` spells them) keep a million-patient export
fast; the resources are validated against the FHIR models and the IG profiles in the tests, not
here. Every id is a UUID v5 of the store's key (same store, same files), and every store key is
also written as an `identifier` with a ccdp system so that an import reads the key back exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pandas as pd

from ccdp.exchange import fhir_codes as c
from ccdp.exchange.fhir_build import (
    Json,
    Row,
    cc,
    coding,
    dar,
    finding,
    ident,
    num,
    ref,
    resource,
    rid,
)
from ccdp.exchange.fhir_care import biomarker, specimen, treatment
from ccdp.exchange.source import PatientBatch


def records(frame: pd.DataFrame) -> list[Row]:
    """Rows of a store frame as dicts: dates as ISO text, missing values as None, numbers and
    booleans as Python's own; the ingest's bookkeeping columns (`_source_file` ...) left out.

    Column by column (numpy's own date text, one null mask per column) rather than pandas'
    `to_dict`, which took a third of an export's time."""
    names = [str(n) for n in frame.columns if not str(n).startswith("_")]
    columns = [_values(frame[n]) for n in names]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _values(col: pd.Series) -> list[Any]:
    """One column as Python values (see `records`)."""
    if pd.api.types.is_datetime64_any_dtype(col):
        text = col.to_numpy().astype("datetime64[D]").astype(str)
        out: list[Any] = text.tolist()
    else:
        out = col.tolist()
    missing = col.isna().to_numpy()
    if missing.any():
        for i in missing.nonzero()[0].tolist():
            out[i] = None
    return out


def _group(rows: list[Row], key: str) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[str(row[key])].append(row)
    return groups


def bundles(batch: PatientBatch) -> Iterator[Json]:
    """One Bundle per patient of the batch, in key order."""
    tumours = _group(records(batch.tumour), "patient_id")
    trials = _group(records(batch.trial_enrolment), "patient_id")
    by_tumour = {
        t: _group(records(batch.table(t)), "tumour_id")
        for t in ("event", "treatment", "biomarker", "specimen")
    }
    for patient in records(batch.patient):
        pid = str(patient["patient_id"])
        resources = list(_patient_resources(patient))
        for tumour in tumours.get(pid, []):
            tid = str(tumour["tumour_id"])
            kids = {t: rows.get(tid, []) for t, rows in by_tumour.items()}
            resources.extend(_tumour_resources(tumour, kids))
        resources.extend(_research_subject(pid, trial) for trial in trials.get(pid, []))
        yield {
            "resourceType": "Bundle",
            "id": rid("Bundle", pid),
            "meta": {"profile": [c.BUNDLE]},
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
        }


# -- patient ---------------------------------------------------------------------------------
def _patient_resources(p: Row) -> Iterator[Json]:
    pid = str(p["patient_id"])
    subject = ref("Patient", pid)
    yield _patient(p)
    if p.get("cause_of_death") is not None:
        yield finding(
            f"{pid}/cause_of_death",
            "cause_of_death",
            "Underlying cause of death",
            subject,
            subject,
            effectiveDateTime=p.get("death_date"),
            valueCodeableConcept=cc(
                coding(c.ccdp_system("cause_of_death"), str(p["cause_of_death"]))
            ),
        )
    consent = str(p.get("consent") or "").split()
    if consent:
        yield _consent(pid, consent)


def _patient(p: Row) -> Json:
    """Patient-eu-pcsp + mcode-cancer-patient. The store is pseudonymised: name and contact
    telecom (1.. in PCSP) are written as data-absent-reason `masked`."""
    pid = str(p["patient_id"])
    birth = p.get("birth_date")
    if birth is not None and p.get("birth_date_precision") == "month":
        birth = birth[:7]
    extension = None
    if p.get("last_contact_date") is not None:
        extension = [{"url": c.EXT_LAST_CONTACT, "valueDate": p["last_contact_date"]}]
    body: Json = {
        "extension": extension,
        "identifier": ident("patient_id", pid),
        "name": [{"_family": dar("masked"), "_given": [dar("masked")]}],
        "contact": [{"telecom": [dar("masked")]}],
        "gender": p.get("sex"),
        "birthDate": birth,
        "address": [{"country": p["country"]}] if p.get("country") else None,
    }
    status = p.get("vital_status")
    if status == "alive":
        body["deceasedBoolean"] = False
    elif status == "dead":
        if p.get("death_date") is not None:
            body["deceasedDateTime"] = p["death_date"]
        else:
            body["deceasedBoolean"] = True
    return resource("Patient", pid, c.PATIENT, **body)


def _consent(pid: str, codes: list[str]) -> Json:
    """The DUO (and MONDO) codes a patient consented to, as one research Consent."""
    purposes = [
        coding(c.CONSENT_PREFIX_SYSTEMS.get(code.split(":")[0], c.ccdp_system("consent")), code)
        for code in codes
    ]
    return resource(
        "Consent",
        pid,
        c.OWN_CONSENT,
        status="active",
        scope=cc(coding(c.CONSENT_SCOPE, "research", "Research")),
        category=[cc(coding(c.LOINC, "57016-8", "Privacy policy acknowledgment Document"))],
        patient=ref("Patient", pid),
        policyRule=cc(text="GA4GH Data Use Ontology consent codes"),
        provision={"type": "permit", "purpose": purposes},
    )


def _research_subject(pid: str, t: Row) -> Json:
    """A trial enrolment as a ResearchSubject (no IG profiles one)."""
    extension = None
    if t.get("risk_group") is not None:
        extension = [{"url": c.EXT_TRIAL_RISK, "valueString": str(t["risk_group"])}]
    period = {"start": t["enrolment_date"]} if t.get("enrolment_date") else None
    return resource(
        "ResearchSubject",
        f"{pid}/{t['trial']}",
        c.OWN_RESEARCH_SUBJECT,
        extension=extension,
        status="on-study",
        period=period,
        study={"identifier": {"value": str(t["trial"])}, "display": str(t["trial"])},
        individual=ref("Patient", pid),
        assignedArm=None if t.get("arm") is None else str(t["arm"]),
    )


# -- tumour ----------------------------------------------------------------------------------
def _morph_code(t: Row) -> str:
    return f"{t['morphology']}/{int(t['behaviour'])}"


def _morph_coding(t: Row) -> Json:
    return coding(c.ICDO3, _morph_code(t), c.morphology_labels().get(str(t["morphology"])))


def _tumour_resources(t: Row, kids: dict[str, list[Row]]) -> Iterator[Json]:
    tid = str(t["tumour_id"])
    subject = ref("Patient", str(t["patient_id"]))
    focus = ref("Condition", tid)
    yield _condition(t)
    if t.get("stage_system") is not None or t.get("stage") is not None:
        yield _stage(t, subject, focus)
    for field, display in (
        ("risk_group", "Risk group at diagnosis"),
        ("immunophenotype", "Immunophenotype"),
        ("cns_status", "CNS status at diagnosis"),
    ):
        if t.get(field) is not None:
            value = cc(coding(c.ccdp_system(field), str(t[field])), text=str(t[field]))
            yield finding(
                f"{tid}/{field}",
                field,
                display,
                subject,
                focus,
                effectiveDateTime=t.get("diagnosis_date"),
                valueCodeableConcept=value,
            )
    if t.get("wbc_at_diagnosis") is not None:
        yield finding(
            f"{tid}/wbc_at_diagnosis",
            "wbc_at_diagnosis",
            "White blood cell count at diagnosis",
            subject,
            focus,
            effectiveDateTime=t.get("diagnosis_date"),
            valueQuantity={
                "value": num(t["wbc_at_diagnosis"]),
                "unit": "10^9/L",
                "system": c.UCUM,
                "code": "10*9/L",
            },
        )
    for e in kids["event"]:
        yield from _event(e, t, subject)
    for x in kids["treatment"]:
        yield treatment(x, subject, focus)
    for b in kids["biomarker"]:
        yield biomarker(b, subject, focus)
    for s in kids["specimen"]:
        yield specimen(s, subject, focus)


def _condition(t: Row) -> Json:
    """Condition-primaryCancer-eu-pcsp + mcode-primary-cancer-condition."""
    tid = str(t["tumour_id"])
    codings = [_morph_coding(t)]
    recode = t.get("iccc_recode")
    if recode is not None:
        codings.append(coding(c.ICCC3, str(recode), c.iccc_recode_labels().get(str(recode))))
    site: Json = {
        "coding": [
            coding(c.ICDO3, str(t["topography"]), c.topography_labels().get(str(t["topography"])))
        ]
    }
    if t.get("laterality") is not None:
        side = _laterality(t)
        site["extension"] = [
            {"url": url, "valueCodeableConcept": side}
            for url in (c.EXT_LATERALITY, c.EXT_LATERALITY_MCODE)
        ]
    extension = [{"url": c.EXT_HISTOLOGY, "valueCodeableConcept": cc(_morph_coding(t))}]
    if t.get("frontline_end_date") is not None:
        extension.append({"url": c.EXT_FRONTLINE_END, "valueDate": t["frontline_end_date"]})
    if t.get("basis_of_diagnosis") is not None:
        basis = int(t["basis_of_diagnosis"])
        system = c.ccdp_system("basis_of_diagnosis")
        extension.append(
            {
                "url": c.EXT_BASIS,
                "valueCodeableConcept": cc(coding(system, str(basis), c.BASIS_LABELS.get(basis))),
            }
        )
    stage: list[Json] | None = None
    if t.get("stage_system") is not None or t.get("stage") is not None:
        stage = [{"assessment": [ref("Observation", f"{tid}/stage")]}]
        if t.get("stage") is not None:
            stage[0]["summary"] = cc(text=str(t["stage"]))
    return resource(
        "Condition",
        tid,
        c.PRIMARY,
        extension=extension,
        identifier=ident("tumour_id", tid),
        verificationStatus=cc(coding(c.CONDITION_VERIFICATION, "confirmed")),
        category=[
            cc(
                coding(
                    "http://terminology.hl7.org/CodeSystem/condition-category",
                    "encounter-diagnosis",
                )
            )
        ],
        code=cc(*codings, text=codings[0].get("display")),
        bodySite=[site],
        subject=ref("Patient", str(t["patient_id"])),
        onsetDateTime=t.get("diagnosis_date"),
        stage=stage,
    )


def _laterality(t: Row) -> Json:
    side = str(t["laterality"])
    own = coding(c.ccdp_system("laterality"), side)
    if side in c.LATERALITY_SCT:
        code, display = c.LATERALITY_SCT[side]
        return cc(coding(c.SCT_SYS, code, display), own)
    return cc(coding(c.DAR_SYS, c.LATERALITY_DAR.get(side, "unknown")), own)


def _stage(t: Row, subject: Json, focus: Json) -> Json:
    """PCSP CancerStageGroup: the staging system as `method`, the stage as the value (in a ccdp
    code system per staging system; text alone when the system is unknown)."""
    tid = str(t["tumour_id"])
    system, stage = t.get("stage_system"), t.get("stage")
    value: Json = {}
    if stage is not None:
        if system is not None:
            value["valueCodeableConcept"] = cc(
                coding(c.ccdp_system(f"stage:{system}"), str(stage)), text=str(stage)
            )
        else:
            value["valueCodeableConcept"] = cc(text=str(stage))
    else:
        value["dataAbsentReason"] = cc(coding(c.DAR_SYS, "unknown"))
    return resource(
        "Observation",
        f"{tid}/stage",
        c.STAGE,
        status="final",
        code=cc(coding(c.LOINC, "21914-7", "Stage group.other Cancer")),
        subject=subject,
        focus=[focus],
        effectiveDateTime=t.get("diagnosis_date"),
        method=None
        if system is None
        else cc(coding(c.ccdp_system("stage_system"), str(system)), text=str(system)),
        **value,
    )


# -- events ----------------------------------------------------------------------------------
def _event(e: Row, t: Row, subject: Json) -> Iterator[Json]:
    """Relapse and second malignancy as PCSP cancer Conditions following the first one;
    progression and remission as mCODE disease status; death as a ccdp finding."""
    eid, kind = str(e["event_id"]), str(e["event_type"])
    first = ref("Condition", str(t["tumour_id"]))
    category = [cc(coding(c.SYS_EVENT_TYPE, kind))]
    if kind in ("relapse", "second_malignancy"):
        res = _event_condition(e, t, subject, first, category)
    elif kind in c.DISEASE_STATUS_SCT:
        code, display = c.DISEASE_STATUS_SCT[kind]
        res = resource(
            "Observation",
            eid,
            c.DISEASE_STATUS,
            identifier=ident("event_id", eid),
            status="final",
            category=category,
            code=cc(coding(c.LOINC, "97509-4", "Cancer disease progression")),
            subject=subject,
            focus=[first],
            effectiveDateTime=e.get("event_date"),
            valueCodeableConcept=cc(coding(c.SCT_SYS, code, display)),
        )
    else:
        res = finding(eid, kind, kind.replace("_", " "), subject, first)
        res.update(identifier=ident("event_id", eid), category=category)
        if e.get("event_date") is not None:
            res["effectiveDateTime"] = e["event_date"]
    yield res
    if e.get("bm_blasts_pct") is not None:
        yield finding(
            f"{eid}/bm_blasts_pct",
            "bm_blasts_pct",
            "Bone-marrow blasts",
            subject,
            {"reference": f"urn:uuid:{res['id']}"},
            effectiveDateTime=e.get("event_date"),
            valueQuantity={
                "value": num(e["bm_blasts_pct"]),
                "unit": "%",
                "system": c.UCUM,
                "code": "%",
            },
        )


def _event_condition(e: Row, t: Row, subject: Json, first: Json, category: list[Json]) -> Json:
    eid, kind = str(e["event_id"]), str(e["event_type"])
    extension = [{"url": c.EXT_OCCURRED_FOLLOWING, "valueReference": first}]
    body: Json = {}
    if kind == "relapse":
        extension.insert(0, {"url": c.EXT_HISTOLOGY, "valueCodeableConcept": cc(_morph_coding(t))})
        body["clinicalStatus"] = cc(coding(c.CONDITION_CLINICAL, "relapse", "Relapse"))
        body["code"] = cc(_morph_coding(t), text="Relapse")
        site = e.get("relapse_site")
        if site is not None:
            codings = [coding(c.ccdp_system("relapse_site"), str(site))]
            topo = c.RELAPSE_SITE_TOPOGRAPHY.get(str(site))
            if topo:
                codings.insert(0, coding(c.ICDO3, topo, c.topography_labels().get(topo)))
            body["bodySite"] = [cc(*codings, text=str(site).replace("_", " "))]
    else:
        body["code"] = cc(coding(c.SYS_EVENT_TYPE, kind), text="Second malignant neoplasm")
    return resource(
        "Condition",
        eid,
        c.RELAPSE,
        extension=extension,
        identifier=ident("event_id", eid),
        category=category,
        subject=subject,
        onsetDateTime=e.get("event_date"),
        **body,
    )
