"""The HTML report of real studies over real node stores: survival tables with their CIs in
years, Cox n/events/reference levels, incidence period and CI method, and small nodes labelled
as what their refusal means."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import run_study
from ccdp.report.html import StudyEntry, render_report
from tests.storekit import build_store, random_registry

SPECS = {
    "relapse": {
        "title": "EFS after relapse",
        "analysis": "km",
        "outcome": "relapse_efs",
        "by": ["relapse_timing"],
        "cohort": {"relapsed": [1]},
    },
    "cox": {"title": "Cox by sex", "analysis": "cox", "outcome": "os", "covariates": ["sex"]},
    "incidence": {"title": "Incidence by sex", "analysis": "incidence", "by": ["sex"]},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("report")
    stores = [
        build_store(tmp / f"{c}.duckdb", random_registry(i, 300, c, c.lower()))
        for i, c in enumerate(["FR", "DE"])
    ]
    stores.append(build_store(tmp / "MT.duckdb", random_registry(9, 3, "MT", "mt")))
    entries = []
    for key, spec in SPECS.items():
        result = run_study({**spec, "min_nodes": 2}, InProcessTransport(stores))
        entries.append(StudyEntry(key, "why", spec, {"result": result.to_json()}, 0.1))
    path = render_report(entries, tmp / "report.html", "t", "s", facts=[])
    return Path(path).read_text(encoding="utf-8")


def section(html: str, key: str) -> str:
    return html.split(f'id="{key}"')[1].split("</section>")[0]


def test_survival_table_gives_medians_in_years_and_cis(report: str) -> None:
    km = section(report, "relapse")
    head = re.findall(r"<th>([^<]*)</th>", km)
    assert head[:5] == ["Relapse timing (I-BFM)", "n", "Events", "median (years)", "95% CI"]
    assert "1-year survival (95% CI)" in head
    # landmark survival in % with its interval, e.g. "61.2% (52.0–69.0)"
    assert re.search(r"<td>\d{1,3}\.\d% \(\d{1,3}\.\d–\d{1,3}\.\d\)</td>", km)
    # medians are years (random follow-up up to 8 years), never days
    medians = [float(m) for m in re.findall(r"<td>(\d+\.\d\d)</td>", km)]
    assert medians and max(medians) < 10
    # groups in I-BFM time order
    order = ("Very early relapse", "Early relapse", "Late relapse")
    rows = re.findall(r"<tr>\s*<td>(Very early relapse|Early relapse|Late relapse)</td>", km)
    assert rows == [r for r in order if r in rows] and len(rows) >= 2
    assert "years since first relapse" in km


def test_cox_table_states_n_events_and_reference_level(report: str) -> None:
    cox = section(report, "cox")
    caption = re.search(r'<p class="meta caption">([^<]*)</p>', cox).group(1)
    assert re.match(r"n = \d+, events = \d+; reference levels: Sex = female ", caption)
    assert "Event times exact" in caption  # then the method note
    assert "Sex: male" in cox


def test_incidence_states_period_and_ci_method(report: str) -> None:
    inc = section(report, "incidence")
    assert "years of diagnosis 2005–2014" in inc
    assert "gamma method of Fay &amp; Feuer (1997)" in inc
    assert "exact Poisson (Garwood)" in inc


def test_a_small_node_reads_as_no_eligible_patients_not_refused(report: str) -> None:
    for key in SPECS:
        part = section(report, key)
        assert "MT: no eligible patients, or too few to report</span>" in part
        assert "MT: refused" not in part
