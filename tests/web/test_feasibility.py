"""The Feasibility page in a real browser: counts by country, equal to the JSON API's own."""

from __future__ import annotations

from typing import Any

import httpx

from ccdp.demo.partnership import Partnership
from ccdp.web.feasibility import Filters, study_spec
from tests.web.conftest import COUNTRIES, screenshot, sign_in


def api_counts(p: Partnership, spec: dict[str, Any]) -> dict[str, str]:
    """The same count study through the JSON API: each country's count, or "suppressed"."""
    headers = {"Authorization": f"Bearer {p.people['researcher']}"}
    with httpx.Client(base_url=p.url, headers=headers, timeout=90) as client:
        made = client.post("/api/studies", json={"spec": spec})
        assert made.status_code == 201, made.text
        study = client.get(f"/api/studies/{made.json()['id']}", params={"wait": 60}).json()
    assert study["status"] == "done", study
    cells = study["result"]["result"]["cells"]
    return {c["country"]: "suppressed" if c["suppressed"] else str(c["n"]) for c in cells}


def page_counts(page: Any) -> dict[str, str]:
    page.wait_for_selector("#counts[data-status='done']", timeout=90_000)
    out = {}
    for row in page.locator("#count-table tbody tr").all():
        out[row.get_attribute("data-country")] = row.locator("td").first.get_attribute("data-count")
    return out


def test_leukaemia_counts_by_country_equal_the_api(page: Any, partnership: Partnership):
    sign_in(page, partnership, "researcher", "/feasibility")
    assert page.url.endswith("/feasibility")
    # the standing feasibility project is the default
    project = page.get_by_label("Under the project")
    assert project.input_value() == partnership.projects.feasibility
    page.get_by_label("ICCC-3 main group").select_option(["I"])
    page.get_by_role("button", name="Count by country").click()
    shown = page_counts(page)
    assert set(shown) == set(COUNTRIES)
    for country in COUNTRIES:
        row = page.locator(f"#count-table tr[data-country='{country}']")
        assert "answered" in row.inner_text()
    # the filters stay in the form
    assert page.get_by_label("ICCC-3 main group").evaluate(
        "s => Array.from(s.selectedOptions).map(o => o.value)"
    ) == ["I"]
    assert "Leukemias" in page.get_by_label("ICCC-3 main group").inner_text()
    screenshot(page, "feasibility")
    spec = study_spec(
        Filters.of({"iccc_group": ["I"], "unit": ["patients"]}), partnership.projects.feasibility
    )
    assert api_counts(partnership, spec) == shown
    if "suppressed" not in shown.values():
        total = page.locator("#count-table tfoot td").first.get_attribute("data-count")
        assert total == str(sum(int(v) for v in shown.values()))


def test_a_narrow_filter_shows_suppression_or_refusal_as_such(page: Any, partnership: Partnership):
    sign_in(page, partnership, "researcher", "/feasibility")
    page.get_by_label("ICCC-3 subgroup").select_option(["Ia"])
    page.get_by_label("15-19").check()
    page.get_by_label("T-cell").check()
    page.get_by_label("relapsed", exact=True).check()
    page.get_by_label("Sex").select_option("female")
    page.get_by_label("from").fill("2012")
    page.get_by_label("to", exact=True).fill("2013")
    page.get_by_role("group", name="Unit").get_by_label("tumours").check()
    page.get_by_role("button", name="Count by country").click()
    page.wait_for_selector("#counts[data-status='done']", timeout=90_000)
    table = page.locator("#count-table")
    text = table.inner_text()
    suppressed = page.locator("#count-table td.suppressed[data-count='suppressed']").count()
    refused = page.locator("#count-table .node-status[data-status='refused']").count()
    assert suppressed or refused, text
    if refused:  # a cohort too small, or (the feasibility tier) years that are not whole bands
        assert "too few to report" in text or "feasibility rule `range-whole-bands`" in text
    # a total that would un-suppress a cell is never shown
    if suppressed:
        assert page.locator("#count-table tfoot td").first.get_attribute("data-count") in (
            "withheld",
            None,
        )
    # the filters are still there
    assert page.get_by_label("from").input_value() == "2012"
    assert page.get_by_label("T-cell").is_checked()


def test_a_bad_year_is_refused_in_the_form(page: Any, partnership: Partnership):
    sign_in(page, partnership, "researcher", "/feasibility")
    page.get_by_label("from").fill("2015")
    page.get_by_label("to", exact=True).fill("2010")
    page.get_by_role("button", name="Count by country").click()
    assert "first year is after the last" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("from").input_value() == "2015"


def test_without_script_the_result_page_refreshes_until_done(
    browser: Any, partnership: Partnership
):
    context = browser.new_context(java_script_enabled=False)
    try:
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        sign_in(pg, partnership, "researcher", "/feasibility")
        pg.get_by_label("ICCC-3 main group").select_option(["I"])
        pg.get_by_role("button", name="Count by country").click()
        for _ in range(60):  # the page refreshes itself (<noscript> meta) or by its link
            if pg.locator("#counts[data-status='done']").count():
                break
            pg.wait_for_timeout(1000)
            if pg.locator("#refresh").count():
                pg.locator("#refresh").click()
        assert set(page_counts(pg)) == set(COUNTRIES)
    finally:
        context.close()


def test_available_bone_marrow_by_country_equals_the_api(page: Any, partnership: Partnership):
    """Specimen discovery from the page: available bone-marrow samples of leukaemias."""
    sign_in(page, partnership, "researcher", "/feasibility")
    page.get_by_label("ICCC-3 main group").select_option(["I"])
    page.get_by_role("group", name="Unit").get_by_label("available specimens").check()
    page.get_by_label("bone marrow").check()
    page.get_by_role("button", name="Count by country").click()
    shown = page_counts(page)
    assert set(shown) == set(COUNTRIES)
    assert "Available specimens by country" in page.locator("#count-table caption").inner_text()
    spec = study_spec(
        Filters.of({"iccc_group": ["I"], "unit": ["specimens"], "specimen_type": ["bone_marrow"]}),
        partnership.projects.feasibility,
    )
    assert spec["cohort"]["specimen_type"] == ["bone_marrow"]
    assert api_counts(partnership, spec) == shown
    assert any(v.isdigit() and int(v) > 0 for v in shown.values()), shown
    assert page.get_by_label("bone marrow").is_checked()


def test_a_specimen_type_with_another_unit_is_refused_in_the_form(
    page: Any, partnership: Partnership
):
    sign_in(page, partnership, "researcher", "/feasibility")
    page.get_by_label("DNA").check()
    page.get_by_role("button", name="Count by country").click()
    assert "available specimens only" in page.get_by_role("alert").inner_text()


def test_the_page_says_whether_the_counts_are_exact_or_perturbed(
    page: Any, partnership: Partnership
):
    """Exact counts (every node's policy `counts: exact`) say "exact"; once a node perturbs its
    counts (`counts: perturbed`, the default, re-read for every task), the page says by how
    much each country's count and the total may differ from the truth, in the words and with
    the bounds of the JSON API's `method`."""
    from ccdp.disclosure.policy import set_policy_value

    for each in partnership.stores.values():
        set_policy_value(each, "counts", "exact")
    sign_in(page, partnership, "researcher", "/feasibility")
    page.get_by_label("ICCC-3 main group").select_option(["III"])
    page.get_by_role("button", name="Count by country").click()
    page_counts(page)
    note = page.locator("#count-method")
    assert note.get_attribute("data-method") == "exact"
    assert note.inner_text().startswith("exact")
    store = partnership.stores["KE"]
    set_policy_value(store, "counts", "perturbed")
    try:
        page.goto(partnership.url + "/feasibility")
        page.get_by_label("ICCC-3 main group").select_option(["II"])
        page.get_by_role("button", name="Count by country").click()
        shown = page_counts(page)
        note = page.locator("#count-method")
        assert note.get_attribute("data-method") == "perturbed"
        spec = study_spec(
            Filters.of({"iccc_group": ["II"], "unit": ["patients"]}),
            partnership.projects.feasibility,
        )
        headers = {"Authorization": f"Bearer {partnership.people['researcher']}"}
        with httpx.Client(base_url=partnership.url, headers=headers, timeout=90) as client:
            made = client.post("/api/studies", json={"spec": spec}).json()
            study = client.get(f"/api/studies/{made['id']}", params={"wait": 60}).json()
        method = study["result"]["result"]["method"]
        assert method["counts"] == "perturbed" and method["perturbed_nodes"] == 1
        cells = study["result"]["result"]["cells"]
        assert shown == {c["country"]: str(c["n"]) for c in cells}  # the same set, same noise
        text = " ".join(note.inner_text().split())
        assert (
            "perturbed at 1 of the 3 nodes that answered: each country's count is within "
            f"±{method['max_noise']} of the truth, "
            f"the total within ±{method['pooled_max_noise']}" in text
        )
        screenshot(page, "feasibility-perturbed", full_page=False)
    finally:
        for each in partnership.stores.values():
            set_policy_value(each, "counts", "perturbed")
