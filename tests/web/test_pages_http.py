"""The dashboard's frame over plain HTTP (no browser): sign-in, sessions, CSRF, headers, errors."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from ccdp.federation.hub.studies import SpecExecutor
from ccdp.web.dashboard import mount_dashboard
from ccdp.web.pages import safe_next
from ccdp.web.sessions import Sessions
from tests.federation.clock import FakeClock
from tests.federation.netutil import LiveHub


@pytest.fixture
def hub(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", SpecExecutor()) as live:
        live.tokens = {  # type: ignore[attr-defined]
            "ana": live.hub.add_user("ana", "researcher"),
            "bo": live.hub.add_user("bo", "board"),
            "FR": live.hub.add_node("FR", "FR"),
        }
        yield live


def signed_in(hub: LiveHub, token: str, next_path: str = "") -> httpx.Client:
    web = httpx.Client(base_url=hub.url, follow_redirects=True, timeout=30)
    form = web.get("/" + (f"?next={next_path}" if next_path else ""))
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    nxt = re.search(r'name="next" value="([^"]*)"', form.text).group(1)
    web.post("/signin", data={"token": token, "csrf": csrf, "next": nxt})
    return web


def test_sign_in_keeps_the_token_on_the_hub_and_sets_strict_headers(hub):
    web = signed_in(hub, hub.tokens["ana"])
    page = web.get("/network")
    assert page.status_code == 200 and "France (FR)" in page.text
    cookie = web.cookies.get("ccdp_session")
    assert cookie and hub.tokens["ana"] not in cookie
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert hub.tokens["ana"] not in page.text
    # every asset the page names is on the hub
    for src in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert src.startswith(("/", "#")) and not src.startswith("//"), src
        if src.startswith("/static/"):
            assert web.get(src).status_code == 200, src


def test_a_revoked_token_ends_its_session_at_the_next_page(hub):
    web = signed_in(hub, hub.tokens["ana"])
    assert web.get("/network").url.path == "/network"
    hub.hub.revoke("user", "ana")
    again = web.get("/network")
    assert again.url.path == "/" and "Hub token" in again.text
    assert web.get("/network").url.path == "/"  # the session is gone, not only the page


def test_sign_in_goes_back_to_the_page_asked_for_but_never_off_the_hub(hub):
    web = signed_in(hub, hub.tokens["ana"], next_path="/resources")
    assert web.get("/").url.path == "/network"
    assert signed_in(hub, hub.tokens["ana"], "/resources").get("/resources").status_code == 200
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"):
        assert safe_next(evil) == "/network", evil


def test_the_sign_in_form_needs_its_own_csrf_token(hub):
    with httpx.Client(base_url=hub.url) as web:
        r = web.post("/signin", data={"token": hub.tokens["ana"], "csrf": "guess"})
        assert r.status_code == 403 and "ccdp_session" not in r.cookies


def test_pages_404_as_pages_and_the_api_as_json(hub):
    web = signed_in(hub, hub.tokens["ana"])
    page = web.get("/no-such-page")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    api = web.get("/api/no-such-route")
    assert api.status_code == 404 and api.json()["detail"].startswith("no route")


def test_a_board_member_cannot_open_the_study_pages(hub):
    web = signed_in(hub, hub.tokens["bo"])
    assert web.get("/studies").status_code == 403
    assert web.get("/governance").status_code == 200


def test_sessions_expire_when_idle_and_after_their_lifetime():
    """No sleeps against short windows (issue 26): the store reads a clock the test moves, so a
    session ends exactly when the clock passes its idle window or its lifetime, not a second
    before, however busy the machine is."""
    clock = FakeClock()
    s = Sessions(idle=600.0, lifetime=3600.0, clock=clock)
    sid, session = s.open("t", "ana", "researcher")
    clock.advance(599)  # one second before the idle window ends
    assert s.get(sid) is session and session.seen == clock()  # live, and touched
    clock.advance(600)  # exactly at the end of the idle window: not passed yet
    assert s.get(sid) is session
    clock.advance(600.001)  # just past it
    assert s.get(sid) is None  # idle too long
    assert s.get(sid) is None  # and gone
    sid, session = s.open("t", "ana", "researcher")
    for _ in range(6):  # busy all along (a request every 599 s): 3594 s old
        clock.advance(599)
        assert s.get(sid) is session
    clock.advance(6)  # 3600 s old: at the end of its lifetime, still live
    assert s.get(sid) is session
    clock.advance(1)  # 3601 s old, seen a second ago
    assert s.get(sid) is None  # kept busy, but past its lifetime


def test_a_signed_in_browser_is_sent_to_sign_in_when_the_clock_passes_its_idle_window(tmp_path):
    """Over HTTP: the dashboard's session store and the hub share one clock the test moves."""
    clock = FakeClock()
    store = Sessions(idle=600.0, lifetime=3600.0, clock=clock)
    url = f"sqlite:///{tmp_path / 'hub.db'}"

    def dashboard(app: FastAPI) -> None:
        mount_dashboard(app, session_store=store)

    with LiveHub(url, SpecExecutor(), clock=clock, dashboard=dashboard) as live:
        live.tokens = {"ana": live.hub.add_user("ana", "researcher")}  # type: ignore[attr-defined]
        web = signed_in(live, live.tokens["ana"])  # type: ignore[attr-defined]
        clock.advance(599)
        assert web.get("/studies").url.path == "/studies"  # a second to spare: still signed in
        clock.advance(601)
        again = web.get("/studies")
        assert again.url.path == "/" and "Hub token" in again.text  # the sign-in form
