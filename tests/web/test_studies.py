"""The Studies page in a real browser: the form and its YAML preview, a KM study submitted,
followed to its result, its plot, tables and downloads; a spec error; the board kept out."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import httpx

from ccdp.demo.partnership import Partnership
from tests.web.conftest import screenshot, sign_in


def session_cookie(page: Any) -> dict[str, str]:
    c = next(c for c in page.context.cookies() if c["name"] == "ccdp_session")
    return {"ccdp_session": c["value"]}


def my_studies(p: Partnership) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {p.people['researcher']}"}
    return httpx.get(p.url + "/api/studies", headers=headers).json()


def loaded_width(page: Any, img: Any) -> int:
    """An <img>'s naturalWidth once it has loaded (polled: the CSP forbids a string predicate)."""
    for _ in range(200):
        if img.evaluate("i => i.complete"):
            break
        page.wait_for_timeout(100)
    return int(img.evaluate("i => i.naturalWidth"))


def fill_km_by_country(page: Any, p: Partnership, title: str, by: str = "country") -> None:
    page.goto(p.url + "/studies/new")
    page.get_by_label("Project").select_option(p.projects.studies)
    page.get_by_label("Analysis", exact=True).select_option("km")
    page.get_by_label("Title").fill(title)
    page.get_by_label("Outcome", exact=False).fill("os")
    page.get_by_label("By: group the result by", exact=False).fill(by)


def test_km_study_from_the_form_to_its_plot_tables_and_downloads(
    page: Any, partnership: Partnership
):
    sign_in(page, partnership, "researcher", "/studies")
    assert page.url.endswith("/studies")
    assert page.locator(f"tr[data-project='{partnership.projects.studies}']").count() == 1
    page.get_by_role("link", name="New study").first.click()
    page.wait_for_url(re.compile(r".*/studies/new"))
    fill_km_by_country(page, partnership, "OS by country (browser test)")
    for node in partnership.nodes:
        assert page.get_by_label(node, exact=True).is_checked()  # every node by default
    # the preview follows the fields (htmx), before any button is pressed
    preview = page.locator("#spec-yaml")
    preview.filter(has_text="- country").wait_for()
    text = preview.inner_text()
    assert "analysis: km" in text and "outcome: os" in text and "by:\n- country" in text
    assert f"project: {partnership.projects.studies}" in text
    assert "nodes:" not in text  # every node: the spec leaves the default
    # the Preview button (what works without script) renders the same YAML
    page.get_by_role("button", name="Preview").click()
    page.wait_for_load_state()
    assert page.locator("#spec-yaml").inner_text() == text
    assert page.get_by_label("By: group the result by", exact=False).input_value() == "country"
    screenshot(page, "studies-new")

    page.get_by_role("button", name="Submit study").click()
    page.wait_for_url(re.compile(r".*/studies/[0-9a-f]{32}$"))
    study_id = page.url.rsplit("/", 1)[1]
    # the status updates in place (htmx polling) until the study is done
    page.locator("#study-status").filter(has_text="done").wait_for(timeout=90_000)
    nodes = page.locator("#node-status")
    for node in partnership.nodes:
        assert "answered" in nodes.locator(f"tr[data-node='{node}']").inner_text()
    img = page.locator("#plot-0")
    img.wait_for()
    assert loaded_width(page, img) > 0
    assert "number at risk" in (img.get_attribute("alt") or "").lower()
    at_risk = page.locator("#table-at_risk")
    assert "Number at risk" in at_risk.inner_text()
    assert at_risk.locator("tbody tr").count() == len(partnership.nodes)  # one per country
    # the method note in words: times exact or grouped, and why n may differ
    method = page.locator("[data-method]").inner_text()
    assert "Event times" in method and "Complete cases" in method
    screenshot(page, "study-km")

    # downloads: the session cookie, not a bearer token
    cookies = session_cookie(page)
    base = f"{partnership.url}/studies/{study_id}"
    record = httpx.get(base + "/result.json", cookies=cookies).json()
    groups = record["result"]["result"]["groups"]
    assert sorted(g["group"] for g in groups) == sorted(partnership.nodes)
    got = httpx.get(base + "/result.csv", params={"table": "curves"}, cookies=cookies)
    assert got.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(got.text)))
    assert rows[0] == ["group", "time", "at_risk", "events", "survival", "ci_low", "ci_high"]
    assert len(rows) - 1 == sum(len(g["table"]) for g in groups)
    first = groups[0]["table"][0]
    assert rows[1][:4] == [
        groups[0]["group"],
        f"{first['time']}",
        f"{first['at_risk']}",
        f"{first['events']}",
    ]
    summary = list(
        csv.reader(io.StringIO(httpx.get(base + "/result.csv?table=summary", cookies=cookies).text))
    )
    assert summary[0][:3] == ["Country", "n", "events"] and len(summary) == len(groups) + 1
    png = httpx.get(base + "/plots/0.png", cookies=cookies)
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    svg = httpx.get(base + "/plots/0.svg", cookies=cookies)
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    assert httpx.get(base + "/result.csv?table=nope", cookies=cookies).status_code == 404
    assert httpx.get(base + "/result.json").status_code in (303, 307)  # no session: sign in
    # the SVG opened by itself renders too (its own CSP allows its inline styles)
    page.goto(base + "/plots/0.svg")
    assert page.locator("svg").first.bounding_box()["width"] > 100
    # and the list shows it, with its project and status
    page.goto(partnership.url + "/studies")
    row = page.locator(f"tr[data-study='{study_id}']")
    assert "km" in row.inner_text() and "done" in row.inner_text()


def test_a_spec_error_is_shown_on_the_form_and_nothing_is_submitted(
    page: Any, partnership: Partnership
):
    sign_in(page, partnership, "researcher", "/studies")
    before = len(my_studies(partnership))
    fill_km_by_country(page, partnership, "a typo", by="countryy")
    page.get_by_role("button", name="Submit study").click()
    alert = page.locator("#form-error")
    alert.wait_for()
    text = alert.inner_text()
    assert "'countryy' is not a variable of the analysis view" in text
    assert "did you mean 'country'" in text and "Nothing was submitted" in text
    # the form keeps what was typed
    assert page.get_by_label("By: group the result by", exact=False).input_value() == "countryy"
    assert page.get_by_label("Title").input_value() == "a typo"
    assert len(my_studies(partnership)) == before


def test_the_board_may_not_open_the_study_form(page: Any, partnership: Partnership):
    sign_in(page, partnership, "board")
    response = page.goto(partnership.url + "/studies/new")
    assert response is not None and response.status == 403
    cookies = session_cookie(page)
    posted = httpx.post(
        partnership.url + "/studies/new", cookies=cookies, data={"action": "submit"}
    )
    assert posted.status_code == 403


def test_a_specimen_crosstab_from_the_form(page: Any, partnership: Partnership):
    """Specimen discovery from the New study form: the unit select goes into the spec and the
    result counts available specimens by type and node."""
    sign_in(page, partnership, "researcher", "/studies/new")
    page.get_by_label("Project").select_option(partnership.projects.studies)
    page.get_by_label("Analysis", exact=True).select_option("crosstab")
    page.get_by_label("Title").fill("Leukaemia samples by type and node (browser test)")
    page.get_by_label("By: group the result by", exact=False).fill("specimen_type, node")
    page.get_by_label("Unit", exact=False).select_option("specimens")
    page.get_by_label("ICCC-3 main groups", exact=False).select_option(["I"])
    page.locator("#spec-yaml").filter(has_text="unit: specimens").wait_for()
    page.get_by_role("button", name="Submit study").click()
    page.wait_for_url(re.compile(r".*/studies/[0-9a-f]{32}$"))
    study_id = page.url.rsplit("/", 1)[1]
    page.locator("#study-status").filter(has_text="done").wait_for(timeout=90_000)
    record = httpx.get(
        f"{partnership.url}/studies/{study_id}/result.json", cookies=session_cookie(page)
    ).json()
    result = record["result"]["result"]
    assert result["unit"] == "specimens" and result["by"] == ["specimen_type", "node"]
    shown = [c for c in result["cells"] if c["n"] is not None]
    assert {c["specimen_type"] for c in shown} >= {"bone_marrow"}
    text = page.locator("main").inner_text()
    assert "bone marrow" in text and "bone_marrow" not in text  # the page shows words
