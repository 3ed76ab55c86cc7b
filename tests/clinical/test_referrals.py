"""End to end: a real hub on loopback, a node store, the CLI. A very-high-risk child is referred
(`ccdp node refer`), waits for the custodian (`ccdp node referrals --release`), is read,
discussed and answered by the board (`ccdp referral list|show|comment|recommend`), and the
recommendation returns to the node; both audit logs show every step with the same digest. A
child whose consent does not cover clinical care is refused before anything leaves."""

from __future__ import annotations

import json
from datetime import date

import pytest
import yaml

from ccdp.disclosure.policy import set_policy_value
from ccdp.federation.node.audit import AuditLog
from tests.clinical.test_trials_hub import db_url  # noqa: F401  (fixture: SQLite and PostgreSQL)
from tests.federation.netutil import LiveHub
from tests.federation.standin import StandinExecutor
from tests.storekit import build_store

CC, GRU = "DUO:0000043", "DUO:0000042"
DX = date(2018, 3, 1)


def child(pid: str, consent: str | None, immuno: str = "t") -> dict[str, list[dict]]:
    """One ALL patient with a very early marrow relapse (T-lineage: S4), treatments, markers."""
    tid = f"{pid}-T"
    return {
        "patient": [
            {
                "patient_id": pid,
                "sex": "female",
                "birth_date": date(2012, 7, 20),
                "country": "DE",
                "vital_status": "alive",
                "last_contact_date": date(2019, 9, 1),
                "consent": consent,
            }
        ],
        "tumour": [
            {
                "tumour_id": tid,
                "patient_id": pid,
                "diagnosis_date": DX,
                "topography": "C42.1",
                "morphology": "9837",
                "behaviour": 3,
                "iccc_group": "I",
                "iccc_subgroup": "Ia",
                "iccc_extended": "001",
                "immunophenotype": immuno,
                "cns_status": "CNS1",
                "wbc_at_diagnosis": 120.0,
                "risk_group": "high",
                "frontline_end_date": date(2020, 3, 1),
            }
        ],
        "event": [
            {
                "event_id": f"{pid}-E1",
                "tumour_id": tid,
                "event_type": "remission",
                "event_date": date(2018, 4, 5),
            },
            {
                "event_id": f"{pid}-E2",
                "tumour_id": tid,
                "event_type": "relapse",
                "event_date": date(2019, 6, 1),
                "relapse_site": "bone_marrow",
                "bm_blasts_pct": 60.0,
            },
        ],
        "treatment": [
            {
                "treatment_id": f"{pid}-R1",
                "tumour_id": tid,
                "type": "chemotherapy",
                "agent": "multi-agent induction",
                "protocol": "AIEOP-BFM ALL 2017",
                "start_date": DX,
                "end_date": date(2018, 9, 1),
            }
        ],
        "biomarker": [
            {
                "tumour_id": tid,
                "marker": "MRD_day33",
                "value": "0.012",
                "unit": "%",
                "date": date(2018, 4, 3),
            },
        ],
    }


def merged(*parts: dict[str, list[dict]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, []).extend(v)
    return out


@pytest.fixture
def live(db_url):  # noqa: F811
    with LiveHub(db_url, StandinExecutor()) as hub:
        hub.tokens = {
            "DE": hub.hub.add_node("DE-node", "DE"),
            "FR": hub.hub.add_node("FR-node", "FR"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "root": hub.hub.add_user("root", "admin"),
            "bo": hub.hub.add_user("bo", "board"),
            "eva": hub.hub.add_user("eva", "expert"),
            "max": hub.hub.add_user("max", "expert"),
        }
        yield hub


@pytest.fixture
def store(tmp_path):
    return build_store(
        tmp_path / "de.duckdb",
        merged(
            child("deP1", f"{GRU} {CC}"), child("deP2", GRU), child("deP3", None, "b_precursor")
        ),
    )


def test_a_referral_travels_to_the_board_and_back(live, store, ccdp, tmp_path):
    node = ["--store", store, "--hub", live.url, "--token", live.tokens["DE"]]
    expert = ["--hub", live.url, "--token", live.tokens["eva"]]
    out = ccdp("node", "refer", "deP1", *node, "-q", "T-ALL very early relapse: CAR-T?").stdout
    assert "held for release" in out
    assert "strategic group S4" in out and "risk HR" in out
    ref = json.loads(ccdp("node", "referrals", "--store", store, "--json").stdout)[0]["id"]
    # held: nothing has left the node yet
    assert "no referrals" in ccdp("referral", "list", *expert).stdout
    released = ccdp("node", "referrals", *node, "--release", ref).stdout
    hub_id = released.split("at the hub as ")[1].split()[0]
    # the board: list, read, discuss, recommend
    rows = json.loads(ccdp("referral", "list", *expert, "--json").stdout)
    assert [(r["id"], r["node"], r["strategic_group"]) for r in rows] == [(hub_id, "DE-node", "S4")]
    case = json.loads(ccdp("referral", "show", hub_id, *expert, "--json").stdout)
    s = case["summary"]
    assert s["age_months"] == 67  # 2012-07-20 to 2018-03-01: 5 years 7 months completed
    t = s["tumours"][0]
    assert t["relapse"] == {
        "time_band": "very_early",
        "site_group": "isolated_bm",
        "strategic_group": "S4",
        "risk": "HR",
        "day": (date(2019, 6, 1) - DX).days,
    }
    assert t["biomarkers"] == [{"marker": "MRD_day33", "value": "0.012", "unit": "%", "day": 33}]
    assert t["frontline_end_day"] == (date(2020, 3, 1) - DX).days
    assert [e["type"] for e in t["events"]] == ["remission", "relapse"]
    ccdp("referral", "comment", hub_id, "CD19 positive? consider CAR-T", *expert)
    ccdp("referral", "comment", hub_id, "agree", "--hub", live.url, "--token", live.tokens["max"])
    rec = tmp_path / "rec.yaml"
    rec.write_text(
        yaml.safe_dump(
            {"options": ["car_t", "hsct"], "text": "CAR-T as bridge, then HSCT in remission."}
        )
    )
    assert "car_t, hsct" in ccdp("referral", "recommend", hub_id, rec, *expert).stdout
    again = ccdp("referral", "recommend", hub_id, rec, *expert, check=False)
    assert again.returncode != 0 and "409" in again.stderr
    shown = json.loads(ccdp("referral", "show", hub_id, *expert, "--json").stdout)
    assert [c["author"] for c in shown["comments"]] == ["eva", "max"]
    # back at the node
    fetched = ccdp("node", "referrals", *node).stdout
    assert "recommendation has arrived" in fetched and "car_t, hsct" in fetched
    local = json.loads(ccdp("node", "referrals", "--store", store, "--show", ref, "--json").stdout)
    assert local["state"] == "answered"
    assert local["recommendation"]["options"] == ["car_t", "hsct"]
    assert local["recommended_by"] == "eva"
    # the node never receives the board's discussion
    assert "consider CAR-T" not in json.dumps(local)
    # both audit logs, one digest
    log = AuditLog.for_store(store)
    log.verify()
    mine = [r for r in log.records() if r.get("referral") == ref]
    assert [r["event"] for r in mine] == [
        "refer-held",
        "referral-released",
        "recommendation-received",
    ]
    digest = mine[0]["digest"]
    assert {r["digest"] for r in mine} == {digest}
    assert not any("deP1" in json.dumps(r) for r in log.records())
    hub_log = list(reversed(live.hub.audit_log(500)))
    steps = [r for r in hub_log if r["detail"].get("referral") == hub_id]
    assert [(r["action"], r["actor"]) for r in steps] == [
        ("referral-received", "DE-node"),
        ("referral-read", "eva"),
        ("referral-comment", "eva"),
        ("referral-comment", "max"),
        ("referral-recommended", "eva"),
        ("referral-read", "eva"),
    ]
    assert steps[0]["detail"]["digest"] == digest
    fetched_at_hub = [r for r in hub_log if r["action"] == "referral-recommendations-read"]
    assert fetched_at_hub and fetched_at_hub[0]["detail"]["referrals"] == [hub_id]
    # the hub's log (an admin reads it) holds no value of the case or of the recommendation;
    # its hashes, digests and times are left out of the search (hex and digits match anything)
    noise = {"prev", "hash", "digest", "at"}
    text = json.dumps(
        [
            {k: v for k, v in r.items() if k not in noise}
            | {"detail": {k: v for k, v in (r.get("detail") or {}).items() if k not in noise}}
            for r in hub_log
        ]
    )
    for value in ("S4", "MRD", "car_t", "CAR-T", "9837", "AIEOP"):
        assert value not in text
    assert live.hub.verify_audit().ok


def test_consent_without_clinical_care_refuses_before_anything_leaves(live, store, ccdp):
    node = ["--store", store, "--hub", live.url, "--token", live.tokens["DE"]]
    r = ccdp("node", "refer", "deP2", *node, check=False)
    assert r.returncode == 2
    assert "DUO:0000043" in r.stderr and "deP2" in r.stderr
    # no consent recorded, policy consent: required
    r = ccdp("node", "refer", "deP3", *node, check=False)
    assert r.returncode == 2 and "consent: required" in r.stderr
    assert json.loads(ccdp("node", "referrals", "--store", store, "--json").stdout) == []
    assert live.hub.referrals.all(_expert(live)) == []
    refused = [r for r in AuditLog.for_store(store).records() if r["event"] == "refer-refused"]
    assert len(refused) == 2 and not any("deP" in json.dumps(x) for x in refused)
    # a statutory basis covers the child's own care whatever research consent was recorded
    set_policy_value(store, "consent", "statutory")
    assert "held for release" in ccdp("node", "refer", "deP3", *node).stdout
    assert "held for release" in ccdp("node", "refer", "deP2", *node).stdout


def test_a_withdrawn_referral_never_leaves(live, store, ccdp):
    node = ["--store", store, "--hub", live.url, "--token", live.tokens["DE"]]
    ccdp("node", "refer", "deP1", *node)
    ref = json.loads(ccdp("node", "referrals", "--store", store, "--json").stdout)[0]["id"]
    ccdp("node", "referrals", "--store", store, "--withdraw", ref, "--reason", "family declined")
    r = ccdp("node", "referrals", *node, "--release", ref, check=False)
    assert r.returncode == 2 and "withdrawn" in r.stderr
    assert live.hub.referrals.all(_expert(live)) == []


def _expert(live):
    from ccdp.federation.hub.context import Principal

    return Principal("user", 0, "eva", "expert")
