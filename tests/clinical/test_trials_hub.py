"""The randomisation service at the hub, over real HTTP: creation, concealment, irreversibility,
re-derivation from the seed, the audit chain, and 4xx (never 500) on bad input."""

from __future__ import annotations

import threading

import pytest

from ccdp.clinical.randomisation import replay
from ccdp.federation.hub.trials import allocation_digest
from tests.federation.netutil import LiveHub
from tests.federation.standin import StandinExecutor

TRIAL = {
    "name": "IntReALL-HR",
    "arms": ["standard", "experimental"],
    "strata": ["country", "sex"],
    "method": "blocks",
    "block_sizes": [2, 4],
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path, monkeypatch):
    """Every test on SQLite and on PostgreSQL (skipped without a server, as elsewhere)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    from ccdp.federation.hub import audit as hub_audit
    from tests.federation.pg import temporary_database

    monkeypatch.setenv(hub_audit.ENV_KEY, str(tmp_path / "pg.audit.key"))
    with temporary_database() as url:
        yield url


@pytest.fixture
def live(db_url):
    with LiveHub(db_url, StandinExecutor()) as hub:
        hub.tokens = {
            "A": hub.hub.add_node("A", "DE"),
            "B": hub.hub.add_node("B", "FR"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "root": hub.hub.add_user("root", "admin"),
            "stat": hub.hub.add_user("stat", "statistician"),
            "other": hub.hub.add_user("other", "statistician"),
        }
        yield hub


def call(hub: LiveHub, who: str, method: str, path: str, **kw):
    with hub.client(hub.tokens[who]) as c:
        return c.request(method, path, **kw)


def create(hub: LiveHub, **over) -> dict:
    r = call(hub, "root", "POST", "/api/trials", json={"spec": {**TRIAL, **over}})
    assert r.status_code == 201, r.text
    return r.json()


def randomise(hub: LiveHub, node: str, patient: str, trial: str = "IntReALL-HR", **strata):
    body = {"patient": patient, "strata": strata or {"country": "DE", "sex": "male"}}
    return call(hub, node, "POST", f"/api/node/trials/{trial}/randomise", json=body)


def test_create_and_list_without_the_seed_or_counts_per_arm(live):
    made = create(live)
    assert made["arms"] == ["standard", "experimental"] and made["ratio"] == [1, 1]
    listed = call(live, "ana", "GET", "/api/trials").json()
    assert [t["name"] for t in listed] == ["IntReALL-HR"]
    text = str(listed) + call(live, "A", "GET", "/api/trials/IntReALL-HR").text
    assert "seed" not in text and "counts" not in text
    assert call(live, "root", "POST", "/api/trials", json={"spec": TRIAL}).status_code == 409
    assert call(live, "ana", "POST", "/api/trials", json={"spec": TRIAL}).status_code == 403


def test_repeat_returns_the_same_arm_and_strata(live):
    create(live)
    first = randomise(live, "A", "p-1").json()
    again = randomise(live, "A", "p-1", country="DE", sex="female").json()
    assert again["arm"] == first["arm"] and again["strata"] == first["strata"]
    assert again["repeated"] is True and first["repeated"] is False
    # the same pseudonym at another node is another patient
    assert randomise(live, "B", "p-1", country="FR", sex="male").json()["repeated"] is False


def test_concurrent_requests_for_one_patient_get_one_allocation(live):
    create(live)
    arms: list[str] = []

    def go() -> None:
        arms.append(randomise(live, "A", "p-same").json()["arm"])

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(arms)) == 1
    listed = call(live, "stat", "GET", "/api/trials/IntReALL-HR/allocations").json()
    assert len(listed["allocations"]) == 1


def test_concealment(live):
    create(live, statisticians=["stat"])
    randomise(live, "A", "p-1")
    randomise(live, "B", "p-2", country="FR", sex="female")
    for who in ("ana", "root", "other"):  # researcher, admin, a statistician not of this trial
        r = call(live, who, "GET", "/api/trials/IntReALL-HR/allocations")
        assert r.status_code == 403, who
    assert call(live, "A", "GET", "/api/trials/IntReALL-HR/allocations").status_code == 403
    own = call(live, "A", "GET", "/api/node/trials/IntReALL-HR/allocations").json()
    assert [a["patient"] for a in own] == ["p-1"]
    full = call(live, "stat", "GET", "/api/trials/IntReALL-HR/allocations").json()
    assert len(full["seed"]) == 64 and sum(full["counts"].values()) == 2
    assert [a["node"] for a in full["allocations"]] == ["A", "B"]


def test_sequence_rederived_from_the_seed_and_audited(live):
    create(live, method="minimisation", p=0.8, block_sizes=None, ratio=[2, 1])
    import random

    rng = random.Random(4)
    for i in range(60):
        strata = {"country": rng.choice(["DE", "FR"]), "sex": rng.choice(["male", "female"])}
        assert randomise(live, rng.choice("AB"), f"p{i}", **strata).status_code == 200
    full = call(live, "stat", "GET", "/api/trials/IntReALL-HR/allocations").json()
    from ccdp.clinical.randomisation import TrialSpec

    spec = TrialSpec.model_validate(full["spec"])
    strata = [a["strata"] for a in full["allocations"]]
    assert replay(spec, full["seed"], strata) == [a["arm"] for a in full["allocations"]]
    log = call(live, "root", "GET", "/api/admin/audit", params={"limit": 500}).json()
    digests = {
        r["detail"]["seq"]: r["detail"]["digest"] for r in log if r["action"] == "randomised"
    }
    assert len(digests) == 60
    for a in full["allocations"]:
        want = allocation_digest("IntReALL-HR", a["seq"], a["patient"], a["strata"], a["arm"])
        assert digests[a["seq"]] == want
    assert "arm" not in str([r["detail"] for r in log if r["action"] == "randomised"])
    assert call(live, "root", "GET", "/api/admin/audit/verify").json()["ok"] is True


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({**TRIAL, "arms": ["a"]}, "arms"),
        ({**TRIAL, "ratio": [1, 2, 3]}, "ratio"),
        ({**TRIAL, "block_sizes": [3]}, "block_sizes"),
        ({**TRIAL, "strata": ["patient_id"]}, "identifier"),
        ({**TRIAL, "strata": ["no_such_variable"]}, "not a variable"),
        ({**TRIAL, "method": "coin"}, "method"),
        ({**TRIAL, "p": 0.3}, "p"),
        ({**TRIAL, "surprise": 1}, "surprise"),
        ({**TRIAL, "name": "bad name!"}, "name"),
    ],
)
def test_bad_trial_specs_are_422(live, spec, fragment):
    r = call(live, "root", "POST", "/api/trials", json={"spec": spec})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"patient": "p", "strata": {"country": "DE"}},
        {"patient": "p", "strata": {"country": "DE", "sex": "male", "age_group": "0"}},
        {"patient": "p", "strata": {"country": "XX-not", "sex": "male"}},
        {"patient": "p", "strata": {"country": "DE", "sex": ""}},
        {"patient": "", "strata": {"country": "DE", "sex": "male"}},
        {"patient": "x" * 500, "strata": {"country": "DE", "sex": "male"}},
        {"patient": "a b", "strata": {"country": "DE", "sex": "male"}},
        {"patient": "p", "strata": {"country": 3, "sex": "male"}},
        {"patient": "p"} | {"extra": 1},
        [],
    ],
)
def test_bad_randomise_requests_are_4xx(live, body):
    create(live)
    r = call(live, "A", "POST", "/api/node/trials/IntReALL-HR/randomise", json=body)
    assert 400 <= r.status_code < 500, r.text
    r = call(live, "A", "POST", "/api/node/trials/nope/randomise", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert randomise(live, "A", "p", trial="nope").status_code == 404
    assert (
        call(live, "ana", "POST", "/api/node/trials/IntReALL-HR/randomise", json={}).status_code
        == 403
    )


def test_a_stored_spec_that_no_longer_validates_is_409(live):
    create(live)
    from sqlalchemy import update

    from ccdp.federation.hub.models import TrialRow

    bad = {**TRIAL, "ratio": [1, 1], "strata": ["gone_variable", "sex"], "block_sizes": [2, 4]}
    with live.hub.sessions() as s:
        s.execute(update(TrialRow).values(spec=bad))
        s.commit()
    r = randomise(live, "A", "p-1")
    assert r.status_code == 409 and "no longer validates" in r.json()["detail"]
