"""Signing in and the Network page, in a real browser against a running partnership."""

from __future__ import annotations

import re
from typing import Any

import httpx

from ccdp.demo.partnership import Partnership
from tests.web.conftest import screenshot, sign_in


def test_sign_in_page_refuses_a_bad_token_and_a_node_token(page: Any, partnership: Partnership):
    page.goto(partnership.url + "/")
    page.get_by_label("Hub token").fill("ccdp-user-not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    assert "unknown or revoked token" in page.get_by_role("alert").inner_text()
    page.get_by_label("Hub token").fill(partnership.nodes["FR"])
    page.get_by_role("button", name="Sign in").click()
    assert "A node token cannot sign in" in page.get_by_role("alert").inner_text()
    # and no page is reachable without a session
    page.goto(partnership.url + "/network")
    assert page.get_by_label("Hub token").is_visible()


def test_network_page_shows_every_node_and_country(page: Any, partnership: Partnership):
    sign_in(page, partnership, "researcher")
    assert page.url.endswith("/network")
    table = page.locator("#node-table")
    for node in partnership.nodes:
        row = table.locator(f"tr[data-node='{node}']")
        assert row.count() == 1
        assert re.search(r"online", row.inner_text())
    assert page.locator("[data-total='countries']").inner_text() == str(len(partnership.nodes))
    assert page.locator("[data-country='KE']").inner_text().count("Kenya") == 1
    screenshot(page, "network")


def test_session_cookie_is_httponly_and_the_token_is_nowhere_in_the_page(
    page: Any, partnership: Partnership
):
    sign_in(page, partnership, "board")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["ccdp_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    token = partnership.people["board"]
    assert token not in page.content()
    assert token not in session["value"]
    # the board runs no study: no Studies or Feasibility in its navigation, and 403 if typed
    nav = page.get_by_role("navigation", name="Main").inner_text()
    assert "Studies" not in nav and "Governance" in nav
    response = page.goto(partnership.url + "/studies")
    assert response is not None and response.status == 403


def test_a_form_without_its_csrf_token_is_refused(page: Any, partnership: Partnership):
    sign_in(page, partnership, "researcher")
    cookie = next(c for c in page.context.cookies() if c["name"] == "ccdp_session")
    forged = httpx.post(
        partnership.url + "/signout",
        cookies={"ccdp_session": cookie["value"]},
        data={"csrf": "forged"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    page.reload()
    assert page.url.endswith("/network")  # the session survived the forged sign-out
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(partnership.url + "/")
    page.goto(partnership.url + "/network")
    assert page.get_by_label("Hub token").is_visible()
