"""A project with its registered studies, in a real browser: the researcher requests it from the
Governance page (studies pasted as YAML or copied from her projects), the board sees each study
(title, analysis, cohort, hash) before approving, and every node's row says which study list it
accepted as far as the hub knows."""

from __future__ import annotations

import re
from typing import Any

from ccdp.demo.partnership import Partnership
from tests.federation.netutil import wait_until
from tests.web.conftest import screenshot, sign_in
from tests.web.test_governance import api_project

KM_YAML = """\
title: Overall survival of leukaemia by sex
analysis: km
outcome: os
by: [sex]
cohort: {iccc_group: [I]}
---
title: Leukaemia patients by sex
analysis: count
by: [sex]
cohort: {iccc_group: [I]}
"""


def fill_project(
    page: Any, p: Partnership, title: str, studies_yaml: str, scope: bool = True
) -> None:
    page.get_by_label("Title").fill(title)
    page.get_by_label(re.compile("Lay summary")).fill("Survival of leukaemia by sex.")
    page.get_by_label("Institution").fill("Example University Hospital")
    for a in ("count", "km"):
        page.locator(f"input[name='analyses'][value='{a}']").check()
    for n in p.nodes:
        page.locator(f"input[name='nodes'][value='{n}']").check()
    page.get_by_label(re.compile("ICCC-3 main groups")).select_option(["I"] if scope else [])
    page.get_by_label(re.compile("Studies as YAML")).fill(studies_yaml)


def test_a_researcher_requests_a_project_with_its_studies(page: Any, partnership: Partnership):
    sign_in(page, partnership, "researcher", "/governance")
    page.get_by_role("link", name="Request a project").click()
    page.wait_for_url(re.compile(r".*/governance/request$"))
    fill_project(page, partnership, "Leukaemia survival by sex (form test)", KM_YAML)
    screenshot(page, "project-request")
    page.get_by_role("button", name="Request the project").click()
    page.wait_for_url(re.compile(r".*requested=.*"))
    notice = page.locator("#review-notice").inner_text()
    assert "is requested with 2 registered studies" in notice
    project_id = re.search(r"requested=([0-9a-f]+)", page.url).group(1)  # type: ignore[union-attr]
    got = api_project(partnership, project_id)
    assert [s["title"] for s in got["studies"]] == [
        "Overall survival of leukaemia by sex",
        "Leukaemia patients by sex",
    ]
    assert got["spec"]["cohort"] == {"iccc_group": ["I"]}
    # the board sees each registered study before approving: title, analysis, cohort, hash
    page.context.clear_cookies()
    sign_in(page, partnership, "board", "/governance")
    card = page.locator(f"#project-{project_id}")
    assert card.get_attribute("data-state") == "requested"
    for st in got["studies"]:
        row = card.locator(f"tr[data-study='{st['hash']}']")
        text = row.inner_text()
        assert st["title"] in text and st["spec"]["analysis"] in text
        assert "iccc group: I" in text and st["hash"][:12] in text
    assert "outcome os; by sex" in card.locator("table.studies").inner_text()
    for node in partnership.nodes:
        cells = card.locator(f"tr[data-node='{node}'] [data-role='studies-accepted']")
        assert cells.inner_text() == "not yet"
    card.scroll_into_view_if_needed()
    screenshot(page, "governance-studies", full_page=False)


def test_an_accepted_project_says_its_nodes_accepted_the_current_list(
    page: Any, partnership: Partnership
):
    """The demo's studies project lists its studies; every node accepted it after the request,
    and the list cannot change at the hub since, so each node accepted all of them."""
    sign_in(page, partnership, "researcher", "/governance")
    pid = partnership.projects.studies
    n = len(api_project(partnership, pid)["studies"])
    assert n > 0
    card = page.locator(f"#project-{pid}")
    assert card.locator("table.studies tbody tr").count() == n
    for node in partnership.nodes:
        cell = card.locator(f"tr[data-node='{node}'] [data-role='studies-accepted']")
        assert cell.inner_text().startswith(f"all {n}")
    # each node's agent reports the hashes its custodian accepted: listed per study
    hashes = [st["hash"] for st in api_project(partnership, pid)["studies"]]

    def reported() -> bool:
        nodes = api_project(partnership, pid)["nodes"]
        return all((nodes[x].get("reported") or {}).get("accepted") == hashes for x in nodes)

    wait_until(reported, 30)
    page.reload()
    for node in partnership.nodes:
        cell = card.locator(f"tr[data-node='{node}'] [data-role='studies-accepted']")
        assert cell.inner_text().startswith(f"all {n}, as the node reported")
        assert cell.locator("li[data-accepted='yes']").count() == n


def test_a_study_copied_from_a_project_and_bad_yaml(page: Any, partnership: Partnership):
    sign_in(page, partnership, "researcher", "/governance/request")
    page.wait_for_url(re.compile(r".*/governance/request$"))
    fill_project(page, partnership, "Copied studies (form test)", "title: [unclosed\n", False)
    page.get_by_role("button", name="Request the project").click()
    alert = page.locator("#form-error")
    assert "Studies: not valid YAML" in alert.inner_text()
    assert page.get_by_label("Title").input_value() == "Copied studies (form test)"
    # a study outside the project's analyses: the hub's own check, shown as a 4xx
    page.get_by_label(re.compile("Studies as YAML")).fill(
        "title: Cox\nanalysis: cox\noutcome: os\ncovariates: [sex]\ncohort: {iccc_group: [I]}\n"
    )
    page.get_by_role("button", name="Request the project").click()
    assert "The hub refused this project" in page.locator("#form-error").inner_text()
    # copy the demo project's first KM study (the form asks for count and km, every child)
    page.get_by_label(re.compile("Studies as YAML")).fill("")
    studies = api_project(partnership, partnership.projects.studies, "researcher")["studies"]
    index = next(i for i, st in enumerate(studies) if st["spec"]["analysis"] == "km")
    page.locator(f"input[name='copy'][value='{partnership.projects.studies}:{index}']").check()
    page.get_by_role("button", name="Request the project").click()
    page.wait_for_url(re.compile(r".*requested=.*"))
    project_id = re.search(r"requested=([0-9a-f]+)", page.url).group(1)  # type: ignore[union-attr]
    got = api_project(partnership, project_id)
    assert [s["hash"] for s in got["studies"]] == [studies[index]["hash"]]


def test_a_bad_form_is_a_4xx_never_a_500(page: Any, partnership: Partnership):
    sign_in(page, partnership, "researcher", "/governance/request")
    page.get_by_role("button", name="Request the project").evaluate("b => b.form.noValidate = true")
    response = None
    with page.expect_response(re.compile(r".*/governance/request$")) as got:
        page.get_by_role("button", name="Request the project").click()
    response = got.value
    assert response.status == 422
    assert "Title: required." in page.locator("#form-error").inner_text()
