"""The data-quality summary and HTML report, checked against the rows that were ingested."""

from __future__ import annotations

import json
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from ccdp.ingest.pipeline import ingest_native
from ccdp.quality.report import quality_summary, render_html
from ccdp.terminology.iccc import classify
from tests.ingest.registry import clean_registry, edited, write_native

TODAY = date(2024, 1, 15)


def _store(tmp_path: Path) -> tuple[Path, dict]:
    rows = clean_registry(10)
    rows = edited(rows, "patient", 3, sex="?")  # error: patient + 5 dependants quarantined
    rows = edited(rows, "tumour", 5, behaviour="1")  # warning on a stored tumour
    rows = edited(rows, "tumour", 6, behaviour="1")
    for i in (1, 2, 7):
        rows = edited(rows, "tumour", i, laterality="")
    rows = edited(rows, "tumour", 8, diagnosis_date="2012-07-01", frontline_end_date="")
    store = tmp_path / "node.duckdb"
    report = ingest_native(store, write_native(tmp_path / "FR", rows), progress=False, today=TODAY)
    return store, {"rows": rows, "report": report}


def test_summary_counts_match_the_ingest(tmp_path: Path) -> None:
    store, ctx = _store(tmp_path)
    report = ctx["report"]
    s = quality_summary(store)
    for table, t in report.tables.items():
        assert s.tables[table].rows == t.accepted
        assert s.tables[table].quarantined == t.quarantined
        assert s.tables[table].flagged == t.flagged
    failed = {e.edit_id: e for e in s.edits}
    assert failed["allowed"].rows == 1 and failed["allowed"].severity == "error"
    assert failed["ref.parent_quarantined"].rows == 5
    assert failed["tumour.non_malignant_outside_cns"].rows == 2
    assert failed["tumour.non_malignant_outside_cns"].severity == "warning"
    assert (
        "FR/tumour.csv row 6: behaviour '1'"
        in failed["tumour.non_malignant_outside_cns"].examples[0]
    )
    assert next(iter(failed)) == "ref.parent_quarantined"  # errors first, most rows first


def test_completeness_distributions_against_pandas(tmp_path: Path) -> None:
    store, ctx = _store(tmp_path)
    s = quality_summary(store)
    tumours = pd.DataFrame(ctx["rows"]["tumour"])
    patients = pd.DataFrame(ctx["rows"]["patient"])
    stored = tumours[tumours["patient_id"] != "P003"]
    comp = {(c.table, c.field): c for c in s.completeness}
    assert comp[("tumour", "laterality")].filled == int((stored["laterality"] != "").sum())
    assert comp[("tumour", "laterality")].total == len(stored)
    groups = classify(stored["morphology"], stored["topography"], stored["behaviour"].astype(int))
    assert comp[("tumour", "iccc_group")].filled == int(groups["iccc_group"].notna().sum())
    assert comp[("patient", "death_date")].filled == int(
        (patients.loc[patients["patient_id"] != "P003", "death_date"] != "").sum()
    )
    expected = groups["iccc_group"].fillna("unclassified").value_counts().to_dict()
    assert s.iccc_groups == expected and sum(expected.values()) == len(stored)
    merged = stored.merge(patients, on="patient_id")
    birth = pd.to_datetime(
        merged["birth_date"].where(
            merged["birth_date"].str.len() == 10, merged["birth_date"] + "-15"
        )
    )
    diag = pd.to_datetime(merged["diagnosis_date"])
    age = (
        diag.dt.year
        - birth.dt.year
        - ((diag.dt.month * 100 + diag.dt.day) < (birth.dt.month * 100 + birth.dt.day)).astype(int)
    )
    assert s.age_at_diagnosis == {
        str(k): int(v) for k, v in age.value_counts().sort_index().items()
    }
    years = diag.dt.year.value_counts().sort_index()
    assert s.diagnosis_year == {str(k): int(v) for k, v in years.items()}
    assert s.countries == {"FR": len(patients) - 1}
    assert len(s.ingests) == 1 and s.ingests[0].quarantined == ctx["report"].quarantined


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.ids += [v for k, v in attrs if k == "id"]
        self.svgs += tag == "svg"


def test_html_report_has_every_section_and_inline_plots(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    html = render_html(quality_summary(store))
    parsed = _Collector()
    parsed.feed(html)
    assert {"tables", "edits", "iccc", "completeness", "ingests"} <= set(parsed.ids)
    assert parsed.svgs == 3  # ICCC groups, age, diagnosis year
    assert "tumour.non_malignant_outside_cns" in html and "ref.parent_quarantined" in html
    assert "<script" not in html


def test_quality_cli_json_and_html(tmp_path: Path, ccdp) -> None:
    store, _ = _store(tmp_path)
    out = json.loads(ccdp("quality", "--store", store, "--json").stdout)
    assert out["tables"]["patient"]["quarantined"] == 1
    assert {e["edit_id"] for e in out["edits"]} >= {"allowed", "ref.parent_quarantined"}
    page = tmp_path / "report" / "quality.html"
    text = ccdp("quality", "--store", store, "--html", page).stdout
    assert "ref.parent_quarantined" in text and page.exists()
    assert "Data-quality report" in page.read_text(encoding="utf-8")
