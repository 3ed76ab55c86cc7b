"""Small builders of FHIR JSON (plain dicts) shared by the export's modules: deterministic
ids and references, codings, data-absent-reason, resources with their profiles."""

from __future__ import annotations

import json
import math
import uuid
from functools import lru_cache
from hashlib import sha1
from typing import Any

import orjson

from ccdp.exchange import fhir_codes as c

Json = dict[str, Any]
Row = dict[str, Any]

_NS = uuid.uuid5(uuid.NAMESPACE_URL, c.CCDP)
_NS_BYTES = _NS.bytes
_VARIANT = "89ab89ab89ab89ab"
"""RFC 4122's variant nibble (10xx) for each value of the hash's nibble (low two bits kept)."""


@lru_cache(maxsize=4096)
def rid(kind: str, key: str) -> str:
    """The resource id of a store key: the same key gives the same id in every export.

    `str(uuid.uuid5(namespace, f"{kind}/{key}"))` computed straight from the SHA-1 hex digest
    (a third of the time: hundreds of thousands of ids per batch), the last few thousand kept
    (a patient's and a tumour's ids are referenced by each of their resources); the tests check
    it against `uuid.uuid5`."""
    h = sha1(_NS_BYTES + f"{kind}/{key}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:32]}"


class Float(float):
    """A float that orjson would write differently from `json.dumps` (`1e-05`, not `1e-5`):
    `dumps` writes it as the standard library does, so that the files keep one spelling."""


def jfloat(value: float) -> float:
    """`value` for the JSON writer: a plain float, or a `Float` when orjson's spelling differs."""
    if math.isfinite(value) and orjson.dumps(value) == repr(value).encode():
        return value
    return Float(value)


def _as_stdlib(value: Any) -> orjson.Fragment:
    if isinstance(value, Float):
        return orjson.Fragment(json.dumps(float(value)))
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(bundle: Json) -> bytes:
    """One Bundle as a line of compact JSON, byte for byte what
    `json.dumps(bundle, separators=(",", ":"), ensure_ascii=False)` writes (the tests check it),
    at several times its speed."""
    return orjson.dumps(bundle, default=_as_stdlib, option=orjson.OPT_APPEND_NEWLINE)


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
    out: Json = {"resourceType": kind, "id": rid(kind, key), "meta": {"profile": list(profiles)}}
    for name, value in body.items():
        if value is not None:
            out[name] = value
    return out


def period(start: str | None, end: str | None) -> Json:
    """A Period; data-absent-reason when neither end is known (the profile wants one)."""
    if start is None and end is None:
        return dar()
    return {k: v for k, v in (("start", start), ("end", end)) if v is not None}


def num(value: Any) -> float | int:
    """A stored float as a JSON number (integral values without a trailing .0)."""
    f = float(value)
    return int(f) if f.is_integer() and abs(f) < 2**53 else jfloat(f)


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
