"""Small builders of FHIR JSON (plain dicts) shared by the export's modules: deterministic
ids and references, codings, data-absent-reason, resources with their profiles."""

from __future__ import annotations

import uuid
from typing import Any

from ccdp.exchange import fhir_codes as c

Json = dict[str, Any]
Row = dict[str, Any]

_NS = uuid.uuid5(uuid.NAMESPACE_URL, c.CCDP)


def rid(kind: str, key: str) -> str:
    """The resource id of a store key: the same key gives the same id in every export."""
    return str(uuid.uuid5(_NS, f"{kind}/{key}"))


def ref(kind: str, key: str) -> Json:
    """A reference to the resource `kind` of store key `key` within its Bundle."""
    return {"reference": f"urn:uuid:{rid(kind, key)}"}


def dar(code: str = "unknown") -> Json:
    """An element holding only the data-absent-reason extension (present, with no value)."""
    return {"extension": [{"url": c.EXT_DAR, "valueCode": code}]}


def ident(field: str, value: str) -> list[Json]:
    """The store key as an identifier: the import reads keys back from these."""
    return [{"system": c.ccdp_system(field), "value": value}]


def coding(system: str, code: str, display: str | None = None) -> Json:
    """A Coding; no display key when there is no term."""
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def cc(*codings: Json, text: str | None = None) -> Json:
    """A CodeableConcept of the given codings and text (either may be absent)."""
    out: Json = {}
    if codings:
        out["coding"] = list(codings)
    if text:
        out["text"] = text
    return out


def meta(profiles: tuple[str, ...]) -> Json:
    """`meta.profile`: what the import tells resources apart by."""
    return {"profile": list(profiles)}


def resource(kind: str, key: str, profiles: tuple[str, ...], **body: Any) -> Json:
    """A resource with its deterministic id and profiles; None-valued elements left out."""
    out: Json = {"resourceType": kind, "id": rid(kind, key), "meta": meta(profiles)}
    out.update({k: v for k, v in body.items() if v is not None})
    return out


def period(start: str | None, end: str | None) -> Json:
    """A Period; data-absent-reason when neither end is known (the profile wants one)."""
    if start is None and end is None:
        return dar()
    return {k: v for k, v in (("start", start), ("end", end)) if v is not None}


def num(value: Any) -> float | int:
    """A stored float as a JSON number (integral values without a trailing .0)."""
    f = float(value)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def finding(key: str, code: str, display: str, subject: Json, focus: Json, **value: Any) -> Json:
    """An Observation no IG profiles (ccdp finding): its code in ccdp's finding system."""
    return resource(
        "Observation",
        key,
        c.OWN_FINDING,
        status="final",
        code=cc(coding(c.SYS_FINDING, code, display), text=display),
        subject=subject,
        focus=[focus],
        **value,
    )
