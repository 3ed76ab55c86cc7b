"""The Governance page in a real browser: the board reviews, everyone sees states and node
decisions, the admin reads and verifies the hub's audit log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import yaml

from ccdp.demo.partnership import PENDING, Partnership
from tests.web.conftest import screenshot, sign_in


def file_project(p: Partnership, title: str) -> str:
    """A project request filed by the researcher through the JSON API (pending.yaml's terms)."""
    spec = yaml.safe_load(PENDING.read_text(encoding="utf-8"))
    spec["title"] = title
    spec["nodes"] = list(p.nodes)
    spec["expires"] = (datetime.now(UTC).date() + timedelta(days=200)).isoformat()
    made = httpx.post(
        p.url + "/api/projects",
        json={"spec": spec},
        headers={"Authorization": f"Bearer {p.people['researcher']}"},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    return made.json()["project_id"]


def api_project(p: Partnership, project_id: str, role: str = "board") -> dict[str, Any]:
    got = httpx.get(
        f"{p.url}/api/projects/{project_id}",
        headers={"Authorization": f"Bearer {p.people[role]}"},
        timeout=30,
    )
    assert got.status_code == 200, got.text
    return got.json()


def test_board_approves_a_pending_request(page: Any, partnership: Partnership):
    project_id = file_project(partnership, "Relapsed ALL outcomes (approve test)")
    sign_in(page, partnership, "board", "/governance")
    card = page.locator(f"#project-{project_id}")
    assert card.get_attribute("data-state") == "requested"
    text = card.inner_text()
    assert "disease specific research (DUO DS) on cancer (MONDO:0004992)" in text
    for node in partnership.nodes:
        assert card.locator(f"tr[data-node='{node}']").inner_text().count("awaiting") == 1
    # pending requests come first, before the reviewed projects
    assert page.locator("#pending-title ~ article").first.is_visible()
    screenshot(page, "governance-board")
    card.get_by_label(re.compile("Reason")).fill("Within the partnership's remit.")
    card.get_by_role("button", name="Approve").click()
    page.wait_for_url(re.compile(rf".*reviewed={project_id}.*"))
    assert "is now approved" in page.locator("#review-notice").inner_text()
    card = page.locator(f"#project-{project_id}")
    assert card.get_attribute("data-state") == "approved"
    assert card.get_by_role("button", name="Approve").count() == 0
    assert "Within the partnership's remit." in card.inner_text()
    got = api_project(partnership, project_id)
    assert got["state"] == "approved" and got["review"]["by"]


def test_a_rejection_without_a_reason_is_refused(page: Any, partnership: Partnership):
    project_id = file_project(partnership, "Reject test project")
    sign_in(page, partnership, "board", "/governance")
    card = page.locator(f"#project-{project_id}")
    card.get_by_role("button", name="Reject").click()
    card = page.locator(f"#project-{project_id}")
    assert "must give its reason" in card.get_by_role("alert").inner_text()
    assert api_project(partnership, project_id)["state"] == "requested"
    card.get_by_label(re.compile("Reason")).fill("Duplicates an approved project.")
    card.get_by_role("button", name="Reject").click()
    page.wait_for_url(re.compile(rf".*reviewed={project_id}.*"))
    assert page.locator(f"#project-{project_id}").get_attribute("data-state") == "rejected"
    got = api_project(partnership, project_id)
    assert got["state"] == "rejected"
    assert got["review"]["reason"] == "Duplicates an approved project."


def test_a_researcher_sees_states_but_cannot_review(page: Any, partnership: Partnership):
    project_id = file_project(partnership, "Researcher cannot review this")
    sign_in(page, partnership, "researcher", "/governance")
    assert page.get_by_role("button", name="Approve").count() == 0
    assert page.get_by_role("button", name="Reject").count() == 0
    feas = page.locator(f"#project-{partnership.projects.feasibility}")
    assert feas.get_attribute("data-state") == "approved"
    for node in partnership.nodes:
        assert "accepted" in feas.locator(f"tr[data-node='{node}']").inner_text()
    # a forged review with the researcher's own session and CSRF token is refused
    cookie = next(c for c in page.context.cookies() if c["name"] == "ccdp_session")
    csrf = page.locator("form.who input[name='csrf']").get_attribute("value")
    forged = httpx.post(
        f"{partnership.url}/governance/projects/{project_id}/review",
        cookies={"ccdp_session": cookie["value"]},
        data={"csrf": csrf, "decision": "approve", "reason": ""},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    assert api_project(partnership, project_id)["state"] == "requested"
    # and a board session without its CSRF token cannot review either
    no_token = httpx.post(
        f"{partnership.url}/governance/projects/{project_id}/review",
        data={"decision": "approve"},
        follow_redirects=False,
    )
    assert no_token.status_code in (303, 403)
    assert api_project(partnership, project_id)["state"] == "requested"


def test_admin_reads_the_audit_log_and_verifies_the_chain(page: Any, partnership: Partnership):
    sign_in(page, partnership, "admin", "/governance")
    page.get_by_role("link", name=re.compile("audit log")).click()
    page.wait_for_url(re.compile(r".*/governance/audit.*"))
    rows = page.locator("#audit-table tbody tr")
    assert rows.count() > 5
    seqs = [int(s) for s in rows.evaluate_all("rs => rs.map(r => r.dataset.seq)")]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    assert "project-review" in page.locator("#audit-table").inner_text()
    page.get_by_role("button", name="Verify chain").click()
    page.wait_for_selector("#verify-result[data-ok]")
    assert page.locator("#verify-result").get_attribute("data-ok") == "true"
    assert "The chain is intact" in page.locator("#verify-result").inner_text()
    screenshot(page, "audit")


def test_a_researcher_has_no_audit_page(page: Any, partnership: Partnership):
    sign_in(page, partnership, "researcher", "/governance")
    assert page.get_by_role("link", name=re.compile("audit log")).count() == 0
    response = page.goto(partnership.url + "/governance/audit")
    assert response is not None and response.status == 403
    response = page.goto(partnership.url + "/governance/audit/verify")
    assert response is not None and response.status == 403
