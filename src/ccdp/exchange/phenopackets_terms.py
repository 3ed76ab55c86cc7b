"""The vocabularies a Phenopacket from ccdp uses: CURIE conventions, the resources declared in
`metaData`, the mapping tables (with their sources) and ages as ISO 8601 durations.

Every OntologyClass is made through `Terms.term`, which remembers the CURIE prefix, so that the
document declares exactly the resources it uses (the schema requires a resource per prefix).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import resources
from urllib.parse import quote

from phenopackets import OntologyClass, Resource

from ccdp.model import load_model
from ccdp.terminology.icdo3 import morphology_codes, topography_codes

LOCAL = "CCDP"
"""Prefix of ccdp's own value lists (model values with no sourced ontology term)."""


@dataclass(frozen=True)
class ResourceDef:
    """One resource of `metaData.resources`: what a CURIE prefix stands for."""

    name: str
    url: str
    version: str
    iri_prefix: str

    def message(self, prefix: str) -> Resource:
        return Resource(
            id=prefix.lower(),
            name=self.name,
            url=self.url,
            version=self.version,
            namespace_prefix=prefix,
            iri_prefix=self.iri_prefix,
        )


_OBO = "http://purl.obolibrary.org/obo/"
_ICDO = (
    "https://www.who.int/standards/classifications/other-classifications/"
    "international-classification-of-diseases-for-oncology"
)

RESOURCES: dict[str, ResourceDef] = {
    "ICDO3": ResourceDef(
        "International Classification of Diseases for Oncology, 3rd edition",
        _ICDO,
        "3.1",
        _ICDO + "#",
    ),
    "NCIT": ResourceDef("NCI Thesaurus", _OBO + "ncit.owl", "unpinned", _OBO + "NCIT_"),
    "UBERON": ResourceDef(
        "Uber-anatomy ontology", _OBO + "uberon.owl", "unpinned", _OBO + "UBERON_"
    ),
    "HP": ResourceDef("Human Phenotype Ontology", _OBO + "hp.owl", "unpinned", _OBO + "HP_"),
    "NCBITaxon": ResourceDef(
        "NCBI organismal classification", _OBO + "ncbitaxon.owl", "unpinned", _OBO + "NCBITaxon_"
    ),
    "UCUM": ResourceDef(
        "Unified Code for Units of Measure", "https://ucum.org", "2.1", "https://ucum.org/ucum#"
    ),
}
"""The prefixes ccdp writes (the local one is added with the model's version)."""


@cache
def resource(prefix: str) -> Resource:
    """The `Resource` message declaring `prefix` (cached: callers copy it, never change it)."""
    if prefix == LOCAL:
        version = str(load_model().version)
        return ResourceDef(
            "ccdp common data model value lists (docs/data-dictionary.md)",
            "urn:ccdp:cdm",
            version,
            "urn:ccdp:cdm:",
        ).message(LOCAL)
    return RESOURCES[prefix].message(prefix)


def local_id(name: str, value: str) -> str:
    """A CURIE for a model value with no ontology term: `CCDP:<table.field>.<value>`, the value
    percent-encoded so free text (an agent, a protocol) stays one CURIE."""
    return f"{LOCAL}:{name}.{quote(str(value), safe='')}"


@cache
def local_pair(table: str, field_name: str, value: str) -> tuple[str, str]:
    """(CURIE, label) of a model value: the model's words, else the value without underscores."""
    label = load_model().table(table).field(field_name).label(value)
    return local_id(f"{table}.{field_name}", value), label.replace("_", " ")


@dataclass
class Terms:
    """Makes OntologyClass messages and records the prefixes used (one per document)."""

    used: set[str] = field(default_factory=set)

    def term(self, ident: str, label: str) -> OntologyClass:
        self.used.add(ident.split(":", 1)[0])
        return OntologyClass(id=ident, label=label)

    def local(self, table: str, field_name: str, value: str) -> OntologyClass:
        """A model value as a local term, labelled with the model's words for it."""
        return self.term(*local_pair(table, field_name, value))

    def local_ref(self, name: str, value: str) -> str:
        """A local CURIE used outside an OntologyClass (an external reference's id)."""
        self.used.add(LOCAL)
        return local_id(name, value)

    def resources(self) -> list[Resource]:
        return [resource(p) for p in sorted(self.used)]


def icdo3_histology_id(morphology: str, behaviour: int) -> str:
    """The ICD-O-3 CURIE convention for a histology with its behaviour: `ICDO3:9836/3`."""
    return f"ICDO3:{morphology}/{int(behaviour)}"


def icdo3_site_id(topography: str) -> str:
    """The ICD-O-3 CURIE convention for a topography (site): `ICDO3:C42.1`."""
    return f"ICDO3:{topography}"


@cache
def morphology_labels() -> dict[str, str]:
    """ICD-O-3 histology code → preferred term (ccdp's terminology)."""
    codes = morphology_codes()
    return dict(zip(codes["code"], codes["label"], strict=True))


@cache
def topography_labels() -> dict[str, str]:
    codes = topography_codes()
    return dict(zip(codes["code"], codes["label"], strict=True))


def _data_rows(name: str) -> list[dict[str, str]]:
    text = (resources.files("ccdp.exchange") / "data" / name).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return list(csv.DictReader(lines))


@cache
def ncit_for_icdo3() -> dict[tuple[str, int], tuple[str, str]]:
    """(histology, behaviour) → (NCIt id, label), from `data/ncit_icdo3.csv`."""
    return {
        (r["morphology"], int(r["behaviour"])): (r["ncit_id"], r["ncit_label"])
        for r in _data_rows("ncit_icdo3.csv")
    }


@cache
def fixed_terms() -> dict[tuple[str, str], tuple[str, str]]:
    """(field, value) → (term id, label), from `data/pheno_terms.csv`."""
    return {
        (r["field"], r["value"]): (r["term_id"], r["term_label"])
        for r in _data_rows("pheno_terms.csv")
    }


def age(birth: date | None, when: date | None, month_precision: bool) -> str | None:
    """Age at `when` as an ISO 8601 duration (`P5Y3M12D`), None when either date is missing or
    `when` precedes birth. Months are the most whole months that, added to the birth date (the
    day clipped to a shorter month's end), do not pass `when`; days are the rest. A birth date
    known to the month only (stored on the 15th) gives years and months from that 15th, never
    days: the day would be invented."""
    if birth is None or when is None or when < birth:
        return None
    months = (when.year - birth.year) * 12 + when.month - birth.month
    while months > 0 and _add_months(birth, months) > when:
        months -= 1
    whole = months
    years, months = divmod(months, 12)
    text = "P" + (f"{years}Y" if years else "") + (f"{months}M" if months else "")
    if month_precision:
        return text if text != "P" else "P0M"
    days = (when - _add_months(birth, whole)).days
    text += f"{days}D" if days else ""
    return text if text != "P" else "P0D"


def _add_months(d: date, months: int) -> date:
    """`d` plus whole months, the day clipped to the month's end (29 Feb + 12 months → 28 Feb)."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    for day in (d.day, 30, 29, 28):
        try:
            return date(year, month, min(d.day, day))
        except ValueError:
            continue
    raise AssertionError("unreachable: day 28 exists in every month")
