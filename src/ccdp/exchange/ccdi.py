"""The CCDI Federation API v1.3.0 (`../shared/specs/ccdi-federation-api/swagger.yml`) as an
aggregate-only source: the mapping from the nodes' published catalogues to the API's bodies.

Pure: it reads catalogues as the hub stores them (`{"node", "country", "received_at",
"catalogue"}`) and returns plain dicts shaped by the spec's schemas. Only the feasibility tier
is served: a node whose catalogue was released under `counts: perturbed` (cell-key noise, never
a count of 1 to min_cell - 1, declared levels only) contributes its counts; a node publishing
exact counts is listed as a namespace and contributes nothing, since exact small-cell-suppressed
tables are not the tier the API may show. Every count is a released catalogue cell or a sum of
released cells, never a difference, so nothing the API says is not already a function of what
the nodes released. No per-record body is ever built: the list and show routes answer with the
spec's `UnshareableData` error. Mapping tables and reasons: docs/exchange/ccdi.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ccdp.errors import CcdpError

API_VERSION = "v1.3.0"
ORGANIZATION = "ccdp"  # the one organization: the partnership (kebab-case, as the spec asks)
ORGANIZATION_NAME = "ccdp childhood cancer data partnership"
CONTACT_EMAIL = "ccdp-hub@example.org"  # the hub's operator replaces it (Ccdi(contact_email=))
DOCS_URL = "https://cbiit.github.io/ccdi-federation-api/specification.html"
WIKI_URL = "https://github.com/CBIIT/ccdi-federation-api/wiki"
CADSR = "https://cadsr.cancer.gov/onedata/dmdirect/NIH/NCI/CO/CDEDD?filter=CDEDD.ITEM_ID={}%20and%20ver_nr={}"
NOT_SHARED = (
    "This source shares no records: it is a federation of registries whose nodes release only "
    "aggregate counts (the feasibility tier: cell-key perturbed, declared levels only)."
)
ENTITIES = ("subject", "sample", "file")


class CcdiError(CcdpError):
    """A CCDI request the source refuses; `status` and `body` are the spec's answer."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.status = status
        self.body = {"errors": [error]}


def unsupported(entity: str, name: str, reason: str) -> CcdiError:
    """422 `UnsupportedField` (the field is not served for counts)."""
    message = f"Field '{name[:100]}' is not supported: {reason}"
    return CcdiError(
        422, {"kind": "UnsupportedField", "field": name[:100], "reason": reason, "message": message}
    )


def invalid(parameters: list[str], reason: str) -> CcdiError:
    """422 `InvalidParameters`."""
    message = f"Invalid value for parameters {', '.join(map(repr, parameters))}: {reason}"
    return CcdiError(
        422,
        {
            "kind": "InvalidParameters",
            "parameters": parameters,
            "reason": reason,
            "message": message,
        },
    )


def not_found(entity: str) -> CcdiError:
    """404 `NotFound`."""
    entity = entity[:200]
    return CcdiError(404, {"kind": "NotFound", "entity": entity, "message": f"{entity} not found."})


def unshareable(entity: str) -> CcdiError:
    """404 `UnshareableData`: the spec's answer of a server that cannot give line-level data
    (rather than 403: no authorization would give it)."""
    reason = (
        "The partnership's nodes release aggregate counts only; no record-level data leaves a "
        "node. Use the count and summary endpoints."
    )
    return CcdiError(
        404,
        {
            "kind": "UnshareableData",
            "entity": entity,
            "reason": reason,
            "message": f"Unable to share data for {entity.lower()}: {reason}",
        },
    )


# -- the fields ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """A CCDI field served for counts: the catalogue list it reads (`source`: a key of
    `patients_by`, or `specimens`), and each of our levels' CCDI value (a level not in `values`
    counts as missing)."""

    name: str
    source: str
    values: dict[str, str]
    harmonized: bool
    description: str
    cde: tuple[int, str] | None = None  # caDSR CDE id and version of a harmonized field


SUBJECT_FIELDS = {
    f.name: f
    for f in (
        Field(
            "sex",
            "sex",
            {"male": "M", "female": "F", "unknown": "U"},
            True,
            "Sex (patient.sex: male, female, unknown as M, F, U).",
            (6343385, "1"),
        ),
        Field(
            "vital_status",
            "vital_status",
            {"alive": "Alive", "dead": "Dead", "unknown": "Unknown"},
            True,
            "Vital status at last contact (patient.vital_status).",
            (2847330, "1"),
        ),
        Field(
            "iccc_group",
            "iccc_group",
            {g: g for g in ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI")}
            | {"XII": "XII"},
            False,
            "ICCC-3 main group (I-XII) of any of the child's tumours (a child with tumours in "
            "two groups counts in both); not classified by ICCC-3 counts as missing.",
        ),
        Field(
            "age_group",
            "age_group",
            {a: a for a in ("0", "1-4", "5-9", "10-14", "15-19")},
            False,
            "Age at diagnosis in completed years, banded (0, 1-4, 5-9, 10-14, 15-19) for any of "
            "the child's tumours; 20 years or older counts as missing.",
        ),
    )
}
SAMPLE_FIELDS = {
    f.name: f
    for f in (
        Field(
            "specimen_molecular_analyte_type",
            "specimens",
            {"dna": "DNA", "rna": "RNA"},
            True,
            "Extracted DNA or RNA (specimen.type dna, rna); other specimen types count as missing.",
            (15063661, "1"),
        ),
        Field(
            "specimen_type",
            "specimens",
            {
                t: t
                for t in (
                    "bone_marrow",
                    "peripheral_blood",
                    "tumour_tissue",
                    "csf",
                    "dna",
                    "rna",
                    "other",
                )
            },
            False,
            "Specimen type as stored (specimen.type): the biobank's specimens, every type.",
        ),
    )
}
NOT_HELD = {
    "subject": {
        "race": "race is not held: European registries do not record it",
        "ethnicity": "ethnicity is not held: European registries do not record it",
        "identifiers": "identifiers never leave a node",
        "age_at_vital_status": "an age in days is patient-level; ages are released only as "
        "bands (field age_group)",
        "associated_diagnoses": "diagnoses are released as ICCC-3 groups (field iccc_group), "
        "not as CCDI submission-template terms",
        "associated_diagnosis_categories": "ICCC-3 groups do not map one-to-one to CCDI "
        "diagnosis categories; ask field iccc_group",
        "depositions": "no data are deposited in public repositories",
    },
    "sample": {
        "age_at_diagnosis": "an age in days is patient-level; ask the subject field age_group",
        "age_at_collection": "an age in days is patient-level",
        "diagnosis": "ask the subject field iccc_group",
        "identifiers": "identifiers never leave a node",
        "depositions": "no data are deposited in public repositories",
    },
}
FILE_FIELDS = ("type", "size", "checksums", "description", "depositions")
FIELDS = {"subject": SUBJECT_FIELDS, "sample": SAMPLE_FIELDS, "file": {}}


def field_name(name: str) -> str:
    """A field as asked: harmonized by name, unharmonized by name or `metadata.unharmonized.X`
    (or `unharmonized.X`), the spelling the spec uses for filters."""
    for prefix in ("metadata.unharmonized.", "unharmonized."):
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name


# -- the nodes' counts -------------------------------------------------------------------------
@dataclass
class NodeCounts:
    """What one node's latest catalogue gives the API (counts None: the node is not served)."""

    node: str
    country: str | None
    received_at: str
    perturbed: bool
    patients: int | None = None
    lists: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)


def node_counts(published: dict[str, Any]) -> NodeCounts:
    """A published catalogue (as `Catalogues.all()` lists it) read for the API."""
    cat = published["catalogue"]
    perturbed = (cat.get("policy") or {}).get("counts") == "perturbed"
    out = NodeCounts(
        published["node"], published.get("country"), published["received_at"], perturbed
    )
    if not perturbed:
        return out
    out.patients = (cat.get("patients") or {}).get("count")
    for var, cells in (cat.get("patients_by") or {}).items():
        out.lists[var] = [(c["level"], c["count"]) for c in cells]
    out.lists["specimens"] = [(c["type"], c["count"]) for c in cat.get("specimens") or []]
    return out


def namespace_name(node: str) -> str:
    """A node's name as a CCDI namespace name (`^[A-Za-z0-9-]+$`: `_` and `.` become `-`)."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch == "-") else "-" for ch in node)


def _cell(value: int | None) -> int:
    """A released count; a withheld one (under `zero_cells: suppress`, a published zero) adds 0."""
    return 0 if value is None else int(value)


def by_count(entity: str, name: str, nodes: list[NodeCounts]) -> dict[str, Any]:
    """`/{entity}/by/{field}/count`: per CCDI value the sum over served nodes of their released
    cells; `missing` the sum of the cells of levels without a CCDI value; `total` their sum.
    Raises `unsupported` for a field not served."""
    if entity == "file":
        if name not in FILE_FIELDS:
            raise unsupported(entity, name, "this field is not present for files")
        return {"total": 0, "missing": 0, "values": []}
    key = field_name(name)
    spec = FIELDS[entity].get(key)
    if spec is None:
        reason = NOT_HELD[entity].get(key, f"this field is not present for {entity}s")
        raise unsupported(entity, name, reason)
    sums: dict[str, int] = {v: 0 for v in spec.values.values()}
    missing = 0
    for node in nodes:
        for level, count in node.lists.get(spec.source, []):
            value = spec.values.get(level)
            if value is None:
                missing += _cell(count)
            else:
                sums[value] += _cell(count)
    values = [{"value": v, "count": n} for v, n in sums.items() if n > 0]
    return {"total": sum(sums.values()) + missing, "missing": missing, "values": values}


def summary(entity: str, nodes: list[NodeCounts]) -> dict[str, Any]:
    """`/{entity}/summary`: subjects are each served node's released count of children;
    samples the sum of its released specimen cells; files none."""
    if entity == "subject":
        total = sum(_cell(n.patients) for n in nodes if n.perturbed)
    elif entity == "sample":
        total = sum(_cell(c) for n in nodes for _, c in n.lists.get("specimens", []))
    else:
        total = 0
    return {"counts": {"total": total}}


# -- who and what ------------------------------------------------------------------------------
def namespace(node: NodeCounts, contact_email: str) -> dict[str, Any]:
    served = (
        "its counts are served here (perturbed feasibility tier)"
        if node.perturbed
        else "it publishes exact counts, which this API does not serve: no count of it is included"
    )
    where = f" ({node.country})" if node.country else ""
    return {
        "id": {"organization": ORGANIZATION, "name": namespace_name(node.node)},
        "description": f"Registry node {node.node}{where} of the partnership; {served}. "
        "No records are shared.",
        "contact_email": contact_email,
        "metadata": None,
    }


def organization() -> dict[str, Any]:
    return {"identifier": ORGANIZATION, "name": ORGANIZATION_NAME, "metadata": None}


def field_descriptions(entity: str) -> dict[str, Any]:
    """`/metadata/fields/{entity}`: the fields served for counts."""
    out = []
    for spec in FIELDS[entity].values():
        if spec.harmonized:
            cde, version = spec.cde or (0, "1")
            out.append(
                {
                    "harmonized": True,
                    "path": spec.name,
                    "wiki_url": f"{WIKI_URL}/Metadata-Fields",
                    "standard": {
                        "name": f"caDSR CDE {cde} v{version}.00",
                        "url": CADSR.format(cde, version),
                    },
                }
            )
        else:
            out.append(
                {
                    "harmonized": False,
                    "name": spec.name,
                    "description": spec.description,
                    "path": f"unharmonized.{spec.name}",
                    "standard": None,
                    "url": None,
                }
            )
    return {"fields": out}


def information(
    nodes: list[NodeCounts], now: datetime, version: str, contact_email: str
) -> dict[str, Any]:
    """`/info`: who serves this, the API version, and what the data are (and are not)."""
    last = max((n.received_at for n in nodes), default=now.isoformat())
    served = sum(n.perturbed for n in nodes)
    about = (
        f"{NOT_SHARED} Counts come from the latest catalogue each node published to the hub "
        f"({served} of {len(nodes)} nodes publish perturbed counts and are served). The "
        "record endpoints (/subject, /sample, their show routes and the diagnosis searches) "
        "answer 404 UnshareableData; there are no files."
    )
    return {
        "server": {
            "name": "ccdp hub (CCDI Federation API, aggregate only)",
            "version": version,
            "owner": ORGANIZATION_NAME,
            "contact_email": contact_email,
            "about_url": None,
            "repository_url": None,
            "issues_url": None,
        },
        "api": {"api_version": API_VERSION, "documentation_url": DOCS_URL},
        "data": {
            "version": {"version": 1, "about": about},
            "last_updated": last,
            "wiki_url": WIKI_URL,
            "documentation_url": None,
        },
    }


def page_params(page: str | None, per_page: str | None) -> tuple[int, int]:
    """The pagination parameters as the spec types them (integers >= 0; the spec allows page 0
    though pages are numbered from 1: it reads as the first page)."""
    out = []
    for name, text, default in (("page", page, 1), ("per_page", per_page, 100)):
        if text is None:
            out.append(default)
            continue
        try:
            value = int(text)
        except ValueError:
            raise invalid([name], "not an integer") from None
        if value < 0:
            raise invalid([name], "must be 0 or more")
        out.append(value)
    return max(out[0], 1), out[1]


def empty_page() -> dict[str, Any]:
    """A list with nothing in it (the files: there are none)."""
    return {"summary": {"counts": {"current": 0, "all": 0}}, "data": []}


__all__ = [
    "API_VERSION",
    "CcdiError",
    "NodeCounts",
    "by_count",
    "field_descriptions",
    "information",
    "namespace",
    "node_counts",
    "organization",
    "summary",
]
