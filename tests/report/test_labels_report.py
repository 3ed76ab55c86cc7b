"""The HTML report in words (issue 23, items 7 and 8): real studies over real node stores (KM
by ICCC group and by immunophenotype, EFS after relapse by timing, incidence on the Segi world
standard, Cox with an arm), their tables, legends and plot texts free of machine names; bands
in numeric order; the consent line only when consent excluded someone."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from ccdp.disclosure.consent_note import CONSENT_NOTE
from ccdp.federation.client import study_result
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import run_study
from ccdp.report.console import print_study
from ccdp.report.html import StudyEntry, render_report, shown_reason
from tests.analyses.test_labels import FORBIDDEN, NR
from tests.storekit import build_store, random_registry

SPECS = {
    "iccc": {"title": "OS by ICCC group", "analysis": "km", "by": ["iccc_group"]},
    "immuno": {"title": "OS by lineage", "analysis": "km", "by": ["immunophenotype"]},
    "relapse": {
        "title": "After relapse",
        "analysis": "km",
        "outcome": "relapse_efs",
        "by": ["relapse_timing"],
        "cohort": {"relapsed": [1]},
    },
    "incidence": {"title": "Incidence", "analysis": "incidence", "by": ["age_group"]},
    "cox": {"title": "Cox by arm", "analysis": "cox", "outcome": "os", "covariates": ["arm"]},
}
ZERO = f"{CONSENT_NOTE}: 0"


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[StudyEntry]:
    tmp = tmp_path_factory.mktemp("labels")
    stores = [
        build_store(tmp / f"{c}.duckdb", random_registry(i, 300, c, c.lower()))
        for i, c in enumerate(["FR", "DE"])
    ]
    entries = []
    for key, spec in SPECS.items():
        record = {
            "result": run_study({**spec, "min_nodes": 2}, InProcessTransport(stores)).to_json()
        }
        # as a node under a project's data use answers: nobody excluded on FR, 7 on DE
        nodes = record["result"]["nodes"]
        nodes["FR"]["reason"] = ZERO
        nodes["DE"]["reason"] = f"{CONSENT_NOTE}: 7"
        entries.append(StudyEntry(key, "why", spec, record, 0.1))
    return entries


@pytest.fixture(scope="module")
def report(entries: list[StudyEntry], tmp_path_factory) -> str:
    ingest = [{"country": "FR", "rows_read": 10, "accepted": 9, "quarantined": 1}]
    out = tmp_path_factory.mktemp("report") / "r.html"
    path = render_report(entries, out, "t", "s", facts=[], ingest=ingest)
    return Path(path).read_text(encoding="utf-8")


def shown(html: str) -> str:
    """What a reader sees: the page without the study specs (the YAML as written) and without
    markup, plus the texts each plot draws (matplotlib writes them as SVG comments)."""
    html = re.sub(r'<div class="spec">.*?</div>', "", html, flags=re.S)
    plot_texts = " ".join(re.findall(r"<!--(.*?)-->", html, flags=re.S))
    html = re.sub(r"<svg.*?</svg>", "", html, flags=re.S)
    html = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html) + "\n" + plot_texts


def section(html: str, key: str) -> str:
    return html.split(f'id="{key}"')[1].split("</section>")[0]


def test_no_machine_name_reaches_the_reader(report: str) -> None:
    text = shown(report)
    found = [t for t in [*FORBIDDEN, "rows_read", "person_years"] if t in text]
    assert not found, f"internal names in the report: {found}"
    assert not NR.search(text)


def test_groups_outcomes_and_standards_read_as_words(report: str) -> None:
    iccc = shown(section(report, "iccc"))
    assert "Leukaemias (I)" in iccc and "ICCC-3 main group" in iccc
    assert "Overall survival (probability)" in iccc  # the plot's axis
    assert "B-cell precursor" in shown(section(report, "immuno"))
    relapse = shown(section(report, "relapse"))
    assert "Very early relapse" in relapse and "EFS after relapse (probability)" in relapse
    inc = shown(section(report, "incidence"))
    assert "Segi world standard" in inc and "Age group (years)" in inc
    cox = shown(section(report, "cox"))
    assert "Arm: b" in cox and "reference levels: Arm = a" in cox
    assert "Rows read" in shown(report.split('id="ingest"')[1].split("</section>")[0])


def test_age_bands_in_numeric_order(report: str) -> None:
    rows = re.findall(r"<tr>\s*<td>(\d+(?:-\d+)?)</td>", section(report, "incidence"))
    assert len(rows) >= 3
    assert rows == sorted(rows, key=lambda b: int(b.split("-")[0]))


def test_ratios_have_two_decimals_and_survival_is_a_percentage(report: str) -> None:
    cox = section(report, "cox")
    assert re.search(r"<td>\d+\.\d\d \(\d+\.\d\d–\d+\.\d\d\)</td>", cox)
    km = section(report, "iccc")
    assert re.search(r"<td>\d{1,3}\.\d% \(\d{1,3}\.\d–\d{1,3}\.\d\)</td>", km)
    assert "median (years)" in km


def test_the_consent_line_shows_only_when_someone_was_excluded(report: str) -> None:
    assert "(DUO): 0" not in report
    for key in SPECS:
        assert f"DE: {CONSENT_NOTE}: 7" in section(report, key)


def test_the_cli_prints_words_and_the_consent_line_only_when_non_zero(
    entries: list[StudyEntry],
) -> None:
    for entry in entries:
        buf = io.StringIO()
        print_study(study_result(entry.record["result"]), Console(file=buf, width=200))
        text = buf.getvalue()
        found = [t for t in FORBIDDEN if t in text]
        assert not found, f"{entry.key}: internal names in the CLI: {found}"
        assert "(DUO): 0" not in text and f"{CONSENT_NOTE}: 7" in text
        assert "Note" in text and "Status" in text  # the nodes table's headings in words


def test_shown_reason_drops_only_the_zero_consent_line() -> None:
    assert shown_reason(ZERO) is None
    assert shown_reason(None) is None
    assert shown_reason(f"{ZERO}; withheld 2 cells") == "withheld 2 cells"
    assert shown_reason(f"{CONSENT_NOTE}: 10") == f"{CONSENT_NOTE}: 10"
    assert (
        shown_reason(f"{CONSENT_NOTE}: 0 (perturbed, ±2)") == f"{CONSENT_NOTE}: 0 (perturbed, ±2)"
    )
