"""Care as FHIR: treatments (PCSP MedicationStatement and procedure profiles), tumour markers
(mCODE tumour marker test) and specimens (mCODE human specimen)."""

from __future__ import annotations

import math

from ccdp.exchange import fhir_codes as c
from ccdp.exchange.fhir_build import Json, Row, cc, coding, dar, ident, jfloat, period, resource


def treatment(x: Row, subject: Json, reason: Json) -> Json:
    """Drugs as PCSP MedicationStatement; radiotherapy, surgery and HSCT as the PCSP (and mCODE)
    procedure profiles; other treatments as a plain ccdp Procedure."""
    xid, kind = str(x["treatment_id"]), str(x["type"])
    start, end = x.get("start_date"), x.get("end_date")
    own = coding(c.SYS_TREATMENT_TYPE, kind)
    agent = None if x.get("agent") is None else str(x["agent"])
    common: Json = {
        "identifier": ident("treatment_id", xid),
        "basedOn": None if x.get("protocol") is None else [{"display": str(x["protocol"])}],
        "subject": subject,
        "reasonReference": [reason],
    }
    if kind in c.MEDICATION_TYPES:
        return resource(
            "MedicationStatement",
            xid,
            c.MED_STATEMENT,
            status="completed" if end else "unknown",
            category=cc(own),
            medicationCodeableConcept=cc(text=agent) if agent else dar(),
            effectivePeriod=None if start is None and end is None else period(start, end),
            **common,
        )
    status = "completed" if end else "unknown"
    if kind == "radiotherapy":
        return resource(
            "Procedure",
            xid,
            c.RADIOTHERAPY,
            status=status,
            category=cc(coding(c.SCT_SYS, "108290001", "Radiotherapy"), own),
            code=cc(
                coding(c.SCT_SYS, "1217123003", "Radiotherapy course of treatment"), text=agent
            ),
            performedPeriod=period(start, end),
            **common,
        )
    if kind in ("surgery", "hsct"):
        profiles, code = (
            (c.SURGERY, ("387713003", "Surgical procedure"))
            if kind == "surgery"
            else (c.SCT, ("77465005", "Transplantation"))
        )
        when: Json = {"performedDateTime": start} if start else {"_performedDateTime": dar()}
        extension = None if end is None else [{"url": c.EXT_END_DATE, "valueDate": end}]
        return resource(
            "Procedure",
            xid,
            profiles,
            extension=extension,
            status=status,
            category=cc(coding(c.SCT_SYS, *code), own),
            code=cc(coding(c.SCT_SYS, *code), text=agent)
            if kind == "hsct"
            else (cc(text=agent) if agent else None),
            **when,
            **common,
        )
    return resource(
        "Procedure",
        xid,
        c.OWN_PROCEDURE,
        status=status,
        category=cc(own),
        code=cc(text=agent) if agent else None,
        performedPeriod=None if start is None and end is None else period(start, end),
        **common,
    )


def _is_plain_number(text: str) -> bool:
    """Does `text` read back identically from a JSON number (so it may be a Quantity)?"""
    try:
        f = float(text)
    except ValueError:
        return False
    return math.isfinite(f) and repr(f) == text


def biomarker(b: Row, subject: Json, condition: Json) -> Json:
    """mcode-tumor-marker-test (MRD too): a number with a unit as a Quantity, else a string."""
    tid, marker = str(b["tumour_id"]), str(b["marker"])
    value, unit = b.get("value"), b.get("unit")
    body: Json = {}
    if value is None:
        body["_valueString"] = dar()
    elif unit is not None and _is_plain_number(str(value)):
        body["valueQuantity"] = {"value": jfloat(float(value)), "unit": str(unit)}
        if unit == "%":
            body["valueQuantity"].update(system=c.UCUM, code="%")
    else:
        body["valueString"] = str(value)
        if unit is not None:
            body["note"] = [{"text": f"unit: {unit}"}]
    return resource(
        "Observation",
        f"{tid}/{marker}/{b.get('date')}",
        c.TUMOUR_MARKER,
        extension=[{"url": c.EXT_RELATED_CONDITION, "valueReference": condition}],
        status="final",
        category=[cc(coding(c.OBS_CATEGORY, "laboratory", "Laboratory"))],
        code=cc(coding(c.SYS_MARKER, marker), text=marker),
        subject=subject,
        effectiveDateTime=b.get("date"),
        **body,
    )


def specimen(s: Row, subject: Json, condition: Json) -> Json:
    """mcode-human-specimen; `available` as Specimen.status (available/unavailable)."""
    sid = str(s["specimen_id"])
    kind = s.get("type")
    stype = dar()  # US Core Specimen, mCODE's parent, requires a type
    if kind is not None:
        own = coding(c.ccdp_system("specimen_type"), str(kind))
        std = c.SPECIMEN_SPTY.get(str(kind))
        stype = cc(coding(c.SPTY, *std), own) if std else cc(own, text=str(kind))
    available = s.get("available")
    return resource(
        "Specimen",
        sid,
        c.SPECIMEN,
        extension=[{"url": c.EXT_RELATED_CONDITION, "valueReference": condition}],
        identifier=ident("specimen_id", sid),
        status=None if available is None else ("available" if available else "unavailable"),
        type=stype,
        subject=subject,
        collection=None
        if s.get("collection_date") is None
        else {"collectedDateTime": s["collection_date"]},
    )
