"""The hub's project routes over real HTTP: roles, states, and bad input answered with a 4xx that
names the problem (never a 500)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ccdp.federation.hub.studies import SpecExecutor
from tests.federation.clock import FakeClock
from tests.federation.netutil import LiveHub

SPEC = {
    "title": "t",
    "summary": "s",
    "institution": "i",
    "data_use": {"permission": "GRU"},
    "nodes": ["fr"],
    "analyses": ["count"],
    "expires": "2099-01-01",
}


@pytest.fixture
def live(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", SpecExecutor(), open_studies=False) as hub:
        hub.tokens = {
            "fr": hub.hub.add_node("fr", "FR"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "eve": hub.hub.add_user("eve", "researcher"),
            "bob": hub.hub.add_user("bob", "board"),
        }
        yield hub


def call(live, who, method, path, **kw):
    with live.client(live.tokens[who]) as c:
        return c.request(method, path, **kw)


def test_project_routes_keep_roles_and_states(live):
    r = call(live, "ana", "POST", "/api/projects", json={"spec": SPEC})
    assert r.status_code == 201 and r.json()["state"] == "requested"
    pid = r.json()["project_id"]
    assert call(live, "bob", "POST", "/api/projects", json={"spec": SPEC}).status_code == 403
    # a node cannot decide before the board approved
    r = call(
        live, "fr", "POST", f"/api/node/projects/{pid}/decision", json={"decision": "accepted"}
    )
    assert r.status_code == 409 and "is requested" in r.json()["detail"]
    r = call(live, "ana", "POST", f"/api/projects/{pid}/review", json={"decision": "approve"})
    assert r.status_code == 403 and "needs the board role" in r.json()["detail"]
    r = call(live, "bob", "POST", f"/api/projects/{pid}/review", json={"decision": "reject"})
    assert r.status_code == 400 and "a rejection must say why" in r.json()["detail"]
    r = call(live, "bob", "POST", f"/api/projects/{pid}/review", json={"decision": "approve"})
    assert r.json()["state"] == "approved"
    no = {"decision": "reject", "reason": "changed my mind"}
    again = call(live, "bob", "POST", f"/api/projects/{pid}/review", json=no)
    assert again.status_code == 409
    # researchers see their own projects only; the board sees all
    assert call(live, "eve", "GET", f"/api/projects/{pid}").status_code == 404
    assert [p["project_id"] for p in call(live, "bob", "GET", "/api/projects").json()] == [pid]
    assert call(live, "eve", "GET", "/api/projects").json() == []
    r = call(
        live, "fr", "POST", f"/api/node/projects/{pid}/decision", json={"decision": "accepted"}
    )
    assert r.status_code == 200 and r.json()["nodes"]["fr"]["decision"] == "accepted"
    # eve may not run ana's project
    spec = {"analysis": "count", "project": pid}
    r = call(live, "eve", "POST", "/api/studies", json={"spec": spec})
    assert r.status_code == 400 and f"no project {pid!r} of this researcher" in r.json()["detail"]
    assert any(e["action"] == "study-refused" for e in live.hub.audit_log())


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"spec": {**SPEC, "colour": 1}}, 422, "colour: Extra inputs are not permitted"),
        ({"spec": {**SPEC, "nodes": ["xx"]}}, 400, "nodes: unknown or revoked nodes: xx"),
        ({"spec": {**SPEC, "expires": "soon"}}, 422, "expires: Input should be a valid date"),
        ({"spec": SPEC, "extra": 1}, 422, "body.extra: Extra inputs"),
    ],
)
def test_bad_project_requests_are_4xx_naming_the_key(live, body, status, detail):
    r = call(live, "ana", "POST", "/api/projects", json=body)
    assert r.status_code == status and detail in r.json()["detail"], r.text


def test_unknown_projects_and_bad_decisions_are_4xx(live):
    assert (
        call(
            live, "bob", "POST", "/api/projects/nope/review", json={"decision": "approve"}
        ).status_code
        == 404
    )
    r = call(live, "bob", "POST", "/api/projects/nope/review", json={"decision": "maybe"})
    assert r.status_code == 422 and "decision" in r.json()["detail"]
    assert call(live, "fr", "GET", "/api/node/projects/nope").status_code == 404
    assert call(live, "ana", "GET", "/api/node/projects").status_code == 403


def test_a_project_expires_when_the_hub_clock_passes_its_last_day(tmp_path):
    """Expiry is judged on the hub's clock (issue 26): a test moves it rather than writing a
    date in the past. On its last day the project runs; a second after that day it does not."""
    clock = FakeClock(datetime(2099, 1, 1, 23, 59, 59, tzinfo=UTC))  # SPEC expires 2099-01-01
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with LiveHub(url, SpecExecutor(), open_studies=False, clock=clock) as live:
        live.tokens = {
            "fr": live.hub.add_node("fr", "FR"),
            "ana": live.hub.add_user("ana", "researcher"),
            "bob": live.hub.add_user("bob", "board"),
        }
        pid = call(live, "ana", "POST", "/api/projects", json={"spec": SPEC}).json()["project_id"]
        call(live, "bob", "POST", f"/api/projects/{pid}/review", json={"decision": "approve"})
        decided = call(
            live, "fr", "POST", f"/api/node/projects/{pid}/decision", json={"decision": "accepted"}
        )
        assert decided.status_code == 200 and decided.json()["state"] == "approved"
        clock.advance(1)  # 2099-01-02T00:00:00: past the last day
        assert call(live, "ana", "GET", f"/api/projects/{pid}").json()["state"] == "expired"
        spec = {"analysis": "count", "project": pid}
        r = call(live, "ana", "POST", "/api/studies", json={"spec": spec})
        assert r.status_code == 400 and f"project {pid} is expired" in r.json()["detail"]
        again = call(
            live, "fr", "POST", f"/api/node/projects/{pid}/decision", json={"decision": "declined"}
        )
        assert again.status_code == 409 and "is expired" in again.json()["detail"]
