"""The CCDI mapping itself (`ccdp.exchange.ccdi`), on catalogue bodies as the hub stores them:
who counts, what a withheld cell adds, and the namespace names the spec's pattern allows."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from ccdp.exchange import ccdi
from tests.federation.test_ccdi import SPEC


def published(node: str, counts: str, patients_by: dict[str, Any] | None) -> dict[str, Any]:
    cat: dict[str, Any] = {
        "policy": {"counts": counts},
        "patients": {"count": 40, "suppressed": False},
        "specimens": [{"type": "dna", "count": 6, "suppressed": False}],
    }
    if patients_by is not None:
        cat["patients_by"] = patients_by
    return {"node": node, "country": "FR", "received_at": "2026-12-01T00:00:00", "catalogue": cat}


def cell(level: str, count: int | None) -> dict[str, Any]:
    return {"level": level, "label": level, "count": count, "suppressed": count is None}


def test_only_perturbed_nodes_count_and_a_withheld_cell_adds_nothing() -> None:
    sex = [cell("male", 20), cell("female", None), cell("unknown", 0), cell("other", 7)]
    nodes = [
        ccdi.node_counts(published("a", "perturbed", {"sex": sex})),
        ccdi.node_counts(published("b", "exact", {"sex": [cell("male", 99)]})),
        ccdi.node_counts(published("c", "perturbed", None)),  # published before patients_by
    ]
    served = [n for n in nodes if n.perturbed]
    got = ccdi.by_count("subject", "sex", served)
    assert got == {"total": 27, "missing": 7, "values": [{"value": "M", "count": 20}]}
    assert ccdi.summary("subject", served) == {"counts": {"total": 80}}
    assert ccdi.summary("sample", served) == {"counts": {"total": 12}}


def test_every_fields_values_are_the_specs_enum_where_harmonized() -> None:
    """A harmonized field's CCDI values are members of the spec's own enum (read from
    swagger.yml), so a client can rely on them."""
    schemas = yaml.safe_load(SPEC.read_text(encoding="utf-8"))["components"]["schemas"]
    enums = {
        "sex": schemas["cde.v1.subject.Sex"]["enum"],
        "vital_status": schemas["cde.v1.subject.VitalStatus"]["enum"],
        "specimen_molecular_analyte_type": schemas["cde.v1.sample.SpecimenMolecularAnalyteType"][
            "enum"
        ],
    }
    fields = {**ccdi.SUBJECT_FIELDS, **ccdi.SAMPLE_FIELDS}
    harmonized = {name for name, f in fields.items() if f.harmonized}
    assert harmonized == set(enums)
    for name in harmonized:
        assert set(fields[name].values.values()) <= set(enums[name]), name


@pytest.mark.parametrize("node", ["fr", "de_1", "node.x", "a-b"])
def test_namespace_names_match_the_specs_pattern(node: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9-]+", ccdi.namespace_name(node))
