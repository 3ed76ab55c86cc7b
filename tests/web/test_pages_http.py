"""The dashboard's frame over plain HTTP (no browser): sign-in, sessions, CSRF, headers, errors."""

from __future__ import annotations

import re

import httpx
import pytest

from ccdp.federation.hub.studies import SpecExecutor
from ccdp.web.pages import safe_next
from ccdp.web.sessions import Sessions
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
    """No sleeps against short windows (issue 26): the windows are long and a session is aged
    by moving its recorded times back (`Sessions` reads `time.monotonic` itself and takes no
    clock), so the outcome does not depend on how busy the machine is."""
    s = Sessions(idle=600.0, lifetime=3600.0)
    sid, session = s.open("t", "ana", "researcher")
    assert s.get(sid) is session
    session.seen -= 300.0  # half the idle window: still live, and touched by the request
    before = session.seen
    assert s.get(sid) is session and session.seen > before
    session.seen -= 601.0  # past the idle window
    assert s.get(sid) is None  # idle too long
    assert s.get(sid) is None  # and gone
    sid, session = s.open("t", "ana", "researcher")
    session.created -= 3000.0  # busy all along (seen just now), inside its lifetime
    assert s.get(sid) is session
    session.created -= 601.0  # 3601 s old, seen a moment ago
    assert s.get(sid) is None  # kept busy, but past its lifetime
