"""The Referrals page in a real browser: a member of the expert board reads the case the demo's
node referred, discusses it and records the recommendation, which the node then fetches; other
roles have no such page."""

from __future__ import annotations

import json
import re
from typing import Any

from ccdp.demo.partnership import Partnership
from tests.conftest import run_ccdp
from tests.web.conftest import screenshot, sign_in


def _referring_node(p: Partnership) -> str:
    for c, store in p.stores.items():
        listed = json.loads(run_ccdp("node", "referrals", "--store", store, "--json").stdout)
        if any(r["state"] == "sent" for r in listed):
            return c
    raise AssertionError("no node holds a sent referral")


def test_the_board_answers_a_referral(page: Any, partnership: Partnership):
    ref = partnership.referral
    assert ref, "the demo's partnership referred a very-high-risk child"
    sign_in(page, partnership, "expert", "/referrals")
    row = page.locator(f"tr[data-referral='{ref}']")
    assert row.get_attribute("data-state") == "open"
    assert "S4" in row.inner_text()
    row.get_by_role("link", name=ref).click()
    page.wait_for_url(re.compile(rf".*/referrals/{ref}$"))
    relapse = page.locator("#relapse").inner_text()
    assert "strategic group S4" in relapse and "risk HR" in relapse
    case = page.locator("#case").inner_text()
    assert not re.search(r"\d{4}-\d{2}-\d{2}", case), "a calendar date reached the board"
    # nothing ticked: the form says so and records nothing
    page.get_by_role("button", name="Record the recommendation").click()
    assert "Tick at least one option" in page.get_by_role("alert").inner_text()
    page.get_by_label("Comment").fill("CD19 retained at relapse? Then CAR-T.")
    page.get_by_role("button", name="Add comment").click()
    page.wait_for_url(re.compile(r".*#comments$"))
    assert page.locator("[data-comment-by='expert']").count() == 1
    screenshot(page, "referral-board")
    page.get_by_label(re.compile("CAR T-cell")).check()
    page.get_by_label(re.compile("Allogeneic haematopoietic")).check()
    page.get_by_label("For the treating team").fill("CAR-T as a bridge to HSCT.")
    page.get_by_role("button", name="Record the recommendation").click()
    page.wait_for_url(re.compile(r".*#recommendation$"))
    assert page.locator("#state").inner_text() == "recommended"
    assert "car t, hsct" in page.locator("#recorded").inner_text()
    # the node fetches it
    c = _referring_node(partnership)
    node = ["--store", partnership.stores[c], "--hub", partnership.url]
    out = run_ccdp("node", "referrals", *node, "--token", partnership.nodes[c]).stdout
    assert "recommendation has arrived" in out and "car_t, hsct" in out


def test_no_other_role_has_the_page(page: Any, partnership: Partnership):
    for role in ("researcher", "board", "admin"):
        sign_in(page, partnership, role)
        assert page.get_by_role("link", name="Referrals").count() == 0
        got = page.goto(partnership.url + "/referrals")
        assert got is not None and got.status == 403
        page.context.clear_cookies()
