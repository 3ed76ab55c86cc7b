"""Fields that apply only to some rows (a death date to the dead) are measured over those rows:
a store where every deceased child has a death date is 100% complete for death_date."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from ccdp.federation.node.catalogue import NodeCatalogue
from ccdp.ingest.pipeline import ingest_native
from ccdp.model import load_model
from ccdp.model.schema import FieldDef
from ccdp.quality.report import quality_summary, render_html
from tests.ingest.registry import clean_registry, write_native
from tests.storekit import exact_policy

TODAY = date(2024, 1, 15)
N = 30  # children 4, 9, 14, 19, 24, 29 are dead, each with a death date and a cause


def store(tmp_path: Path) -> Path:
    path = tmp_path / "node.duckdb"
    ingest_native(
        path, write_native(tmp_path / "FR", clean_registry(N)), progress=False, today=TODAY
    )
    return path


def test_death_date_is_measured_over_the_deceased(tmp_path: Path) -> None:
    s = quality_summary(store(tmp_path))
    comp = {(c.table, c.field): c for c in s.completeness}
    dead = sum(1 for i in range(N) if i % 5 == 4)
    for name in ("death_date", "cause_of_death"):
        c = comp[("patient", name)]
        assert (c.filled, c.total, c.share, c.applies_to) == (dead, dead, 1.0, "deceased")
    assert comp[("patient", "sex")].total == N and comp[("patient", "sex")].applies_to is None
    html = re.sub(r"\s+", " ", render_html(s))
    row = html[html.index("<td>death_date</td>") :].split("</tr>")[0]
    # the "of" column reads "of 6 deceased": the field is measured over them only
    assert f">{dead} deceased<" in row and ">100.0<" in row


def test_the_node_catalogue_measures_them_alike(tmp_path: Path) -> None:
    path = exact_policy(store(tmp_path), min_cohort=5, min_cell=1)
    cat = NodeCatalogue.for_store(path).compute().catalogue.model_dump(mode="json")
    fields = {
        f["name"]: f["completeness"]
        for t in cat["tables"]
        for f in t["fields"]
        if t["name"] == "patient"
    }
    assert fields["death_date"] == 100.0 and fields["cause_of_death"] == 100.0
    # fewer deceased than min_cohort: the share of so few is not released
    small = exact_policy(path, min_cohort=7, min_cell=1)
    cat = NodeCatalogue.for_store(small).compute().catalogue.model_dump(mode="json")
    fields = {
        f["name"]: f["completeness"]
        for t in cat["tables"]
        for f in t["fields"]
        if t["name"] == "patient"
    }
    assert fields["death_date"] is None and fields["sex"] == 100.0


def test_a_condition_must_name_a_field_of_its_table() -> None:
    from ccdp.model.schema import TableDef

    bad = FieldDef.model_validate(
        {
            "name": "x",
            "type": "date",
            "description": "d",
            "applies_when": {"field": "nope", "values": ["dead"], "rows": "deceased"},
        }
    )
    with pytest.raises(ValueError, match=r"applies_when.*nope"):
        TableDef(name="t", description="d", primary_key=["x"], fields=[bad])
    patient = load_model().table("patient")
    assert patient.field("death_date").applies_when is not None
