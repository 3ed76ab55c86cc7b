"""Attacks on the one patient-level message ccdp lets leave a node: the expert-board referral.

What the child's record may carry that must not reach the board: record keys (the store's and
the source's), calendar dates, record numbers, anything outside the case's closed shape. The
node's gate withholds such free text; the hub refuses a summary that got past a node without
the gate; no one but the board reads a case, and no node reads another node's."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from ccdp.disclosure.case import CaseWithheld, release_case
from ccdp.federation.client import HubClient
from ccdp.federation.node.referral import build_case, refer, release
from ccdp.wire.case_summary import text_problem
from tests.clinical.test_referrals import CC, GRU, child
from tests.federation.netutil import LiveHub
from tests.federation.standin import StandinExecutor
from tests.storekit import build_store

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def planted(pid: str) -> dict[str, list[dict]]:
    """A child whose free-text fields hold what a hurried clerk might type into them."""
    rows = child(pid, f"{GRU} {CC}")
    rows["treatment"][0]["agent"] = f"see dossier {pid}"
    rows["treatment"][0]["protocol"] = "started 12/03/2018 by Dr House"
    rows["biomarker"] += [
        {"tumour_id": f"{pid}-T", "marker": "BCR-ABL1", "value": "MRN 4471129"},
        {"tumour_id": f"{pid}-T", "marker": f"lab ref {pid}-E2", "value": "positive"},
        {"tumour_id": f"{pid}-T", "marker": "note", "value": "relapse on 2019-06-01"},
    ]
    rows["tumour"][0]["stage"] = "x" * 81
    return rows


@pytest.fixture
def store(tmp_path):
    return build_store(tmp_path / "de.duckdb", planted("deP1"))


def test_the_gate_withholds_keys_dates_and_numbers(store):
    raw, keys, _ = build_case(store, "de", "deP1")
    checked = release_case(raw, keys)
    text = json.dumps(checked.summary.model_dump(mode="json", by_alias=True))
    for secret in ("deP1", "dossier", "12/03/2018", "4471129", "2019-06-01", "lab ref", "xxxxx"):
        assert secret not in text, secret
    assert not DATE.search(text)
    assert "2012" not in text  # birth year: only the age in months leaves
    # what is clinical stays: the marker with a safe value, the protocol-free treatment
    markers = checked.summary.tumours[0].biomarkers
    assert [(m.marker, m.value) for m in markers] == [
        ("MRD_day33", "0.012"),
        ("BCR-ABL1", None),
        ("note", None),
    ]
    assert checked.summary.withheld == 6 == len(checked.withheld)
    # the custodian's note says where and which rule, never the value
    assert not any("4471129" in w or "deP1" in w for w in checked.withheld)


def test_a_key_is_found_whatever_its_case(store):
    raw, keys, _ = build_case(store, "de", "deP1")
    raw["tumours"][0]["treatments"][0]["agent"] = "DEp1 follow-up"
    assert release_case(raw, keys).summary.tumours[0].treatments[0].agent is None


def test_a_field_outside_the_shape_stops_the_whole_summary(store):
    raw, keys, _ = build_case(store, "de", "deP1")
    raw["name"] = "Jane"
    with pytest.raises(CaseWithheld):
        release_case(raw, keys)
    raw.pop("name")
    raw["tumours"][0]["events"][0]["date"] = "2018-04-05"
    with pytest.raises(CaseWithheld):
        release_case(raw, keys)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0.012", True),
        ("<0.01%", True),
        ("AIEOP-BFM ALL 2017", True),
        ("1.2e-05", True),
        ("0.000012", True),
        ("12345", True),
        ("123456", False),
        ("2019-06-01", False),
        ("1/6/19", False),
        ("01.06.2019", False),
        ("2019/06", False),
        ("see\nnext line", False),
        ("a@b.org", False),
        ("", False),
    ],
)
def test_free_text_rules(value, ok):
    assert (text_problem(value) is None) is ok


@pytest.fixture
def live(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as hub:
        hub.tokens = {
            "DE": hub.hub.add_node("DE-node", "DE"),
            "FR": hub.hub.add_node("FR-node", "FR"),
            "eva": hub.hub.add_user("eva", "expert"),
            **{r: hub.hub.add_user(r, r) for r in ("researcher", "board", "admin", "statistician")},
        }
        yield hub


def _post(live, token, summary, node_ref="ref-000000000001"):
    with live.client(token) as c:
        return c.post(
            "/api/node/referrals",
            json={"node_ref": node_ref, "question": "q", "summary": summary},
        )


def test_the_hub_refuses_a_summary_that_skipped_the_gate(live, store):
    raw, keys, _ = build_case(store, "de", "deP1")
    good = release_case(raw, keys).summary.model_dump(mode="json", by_alias=True)
    tamper = [
        {**good, "patient_id": "deP1"},
        {**good, "birth_date": "2012-07-20"},
        {**good, "age_months": 10_000},
        {**good, "tumours": [{**good["tumours"][0], "diagnosis": {"morphology": "9837"}}]},
        {
            **good,
            "trials": [{"trial": "seen 2019-06-01", "arm": None}],
        },
        {
            **good,
            "tumours": [
                {**good["tumours"][0], "biomarkers": [{"marker": "MRD", "value": "MRN 4471129"}]}
            ],
        },
    ]
    for i, bad in enumerate(tamper):
        r = _post(live, live.tokens["DE"], bad, f"ref-tamper{i:06d}")
        assert r.status_code == 422, (i, r.text)
        assert "4471129" not in r.text and "deP1" not in r.text
    assert _post(live, live.tokens["DE"], good).status_code == 201
    # a user's token is not a node's
    assert _post(live, live.tokens["eva"], good).status_code == 403


def test_only_the_board_reads_a_case_and_each_node_only_its_own(live, store):
    client = HubClient(live.url, live.tokens["DE"])
    item = refer(store, "deP1", "S4 relapse", client)
    sent = release(store, item.id, client)
    client.close()
    ref = sent.hub_id
    assert ref
    routes = [
        ("GET", "/api/referrals", None),
        ("GET", f"/api/referrals/{ref}", None),
        ("POST", f"/api/referrals/{ref}/comments", {"text": "hm"}),
        ("POST", f"/api/referrals/{ref}/recommendation", {"recommendation": {"options": ["hsct"]}}),
    ]
    for role in ("researcher", "board", "admin", "statistician"):
        with live.client(live.tokens[role]) as c:
            for method, path, body in routes:
                r = c.request(method, path, json=body)
                assert r.status_code == 403, (role, path, r.status_code)
                assert "S4" not in r.text and "9837" not in r.text
    for node in ("DE", "FR"):
        with live.client(live.tokens[node]) as c:
            for method, path, body in routes:
                assert c.request(method, path, json=body).status_code == 403
    with live.client(live.tokens["FR"]) as c:
        assert c.get("/api/node/referrals").json() == []
    with live.client(live.tokens["DE"]) as c:
        mine = c.get("/api/node/referrals").json()
        assert [m["id"] for m in mine] == [ref]
        assert "summary" not in mine[0] and "comments" not in mine[0]
    refused = [r for r in live.hub.audit_log(500) if r["action"] == "referral-refused"]
    assert len(refused) == 4 * len(routes)
    with live.client(live.tokens["eva"]) as c:
        assert (
            c.get(f"/api/referrals/{ref}").json()["summary"]["tumours"][0]["relapse"][
                "strategic_group"
            ]
            == "S4"
        )


def test_nothing_reaches_the_hub_before_the_custodian_releases(live, store):
    client = HubClient(live.url, live.tokens["DE"])
    refer(store, "deP1", "q", client)
    client.close()
    with live.client(live.tokens["eva"]) as c:
        assert c.get("/api/referrals").json() == []
    assert not [r for r in live.hub.audit_log(500) if r["action"] == "referral-received"]


def test_a_posted_referral_is_stored_once(live, store):
    raw, keys, _ = build_case(store, "de", "deP1")
    good = release_case(raw, keys).summary.model_dump(mode="json", by_alias=True)
    first = _post(live, live.tokens["DE"], good).json()
    again = _post(live, live.tokens["DE"], good).json()
    assert first["id"] == again["id"]
    other = {**good, "age_months": good["age_months"] + 1}
    assert _post(live, live.tokens["DE"], other).status_code == 409
    with live.client(live.tokens["eva"]) as c:
        assert len(c.get("/api/referrals").json()) == 1
    # a hub answers a malformed request with a 4xx, never a 500
    with httpx.Client(base_url=live.url, headers={"Authorization": "Bearer x"}) as c:
        assert c.get("/api/referrals").status_code == 401
