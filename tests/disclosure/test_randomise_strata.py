"""Attack: a compromised hub (its trial table edited) asks a node to randomise a patient in a
trial stratified by a key, a date or a number. The node's gate (`release_strata`) refuses
before sending anything: the hub never learns the child's value."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from ccdp.disclosure.policy import set_policy_value
from ccdp.disclosure.refusals import Refusal
from ccdp.disclosure.strata import release_strata
from ccdp.federation.hub.models import AllocationRow, TrialRow
from ccdp.federation.node.audit import AuditLog
from tests.federation.netutil import LiveHub
from tests.federation.standin import StandinExecutor
from tests.storekit import build_store, random_registry


@pytest.fixture
def live(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as hub:
        hub.tokens = {"DE": hub.hub.add_node("DE-node", "DE")}
        root = hub.hub.add_user("root", "admin")
        with hub.client(root) as c:
            spec = {"name": "T", "arms": ["a", "b"], "strata": ["sex"], "method": "blocks"}
            assert c.post("/api/trials", json={"spec": spec}).status_code == 201
        yield hub


def accepting(store, trials: str = "[T]"):
    """The store, its custodian having accepted the trials for randomisation."""
    set_policy_value(store, "trials", trials)
    return store


def _tamper(live, strata: list[str]) -> None:
    with live.hub.sessions() as s:
        row = s.scalars(select(TrialRow)).one()
        row.spec = {**row.spec, "strata": strata}
        s.commit()


@pytest.mark.parametrize(
    "strata",
    [
        ["patient_id"],
        ["tumour_id"],
        ["diagnosis_date"],
        ["first_relapse_date"],
        ["age_at_diagnosis"],
        ["wbc_at_diagnosis"],
        ["os_time"],
        ["sex", "risk_group"],  # risk_group holds a record number at this node
        ["not_a_variable"],
    ],
)
def test_a_hub_asking_for_more_than_strata_learns_nothing(live, ccdp, tmp_path, strata):
    reg = random_registry(3, 5, "DE", "de")
    reg["tumour"][0]["risk_group"] = "MRN 4471129"
    store = accepting(build_store(tmp_path / "de.duckdb", reg))
    _tamper(live, strata)
    args = ["--patient", "deP0", "--store", store, "--hub", live.url, "--token", live.tokens["DE"]]
    r = ccdp("node", "randomise", "T", *args, check=False)
    assert r.returncode == 2, r.stdout
    assert "strata" in r.stderr and "deP0" not in r.stderr and "4471129" not in r.stderr
    with live.hub.sessions() as s:
        assert s.scalars(select(AllocationRow)).all() == []
    assert not [a for a in live.hub.audit_log(200) if a["action"].startswith("randomise")]
    refused = [x for x in AuditLog.for_store(store).records() if x["event"] == "randomise-refused"]
    assert len(refused) == 1 and "deP0" not in json.dumps(refused)


def test_the_trial_as_created_still_randomises(live, ccdp, tmp_path):
    store = accepting(build_store(tmp_path / "de.duckdb", random_registry(3, 5, "DE", "de")))
    args = ["--patient", "deP0", "--store", store, "--hub", live.url, "--token", live.tokens["DE"]]
    got = json.loads(ccdp("node", "randomise", "T", *args, "--json").stdout)
    assert set(got["strata"]) == {"sex"} and got["arm"] in ("a", "b")


def test_release_strata_rules():
    assert release_strata({"sex": "male", "risk_group": "high"}) == {
        "sex": "male",
        "risk_group": "high",
    }
    for bad in (
        {"sex": "x"},  # not a level of sex
        {"country": "Germany"},  # not a level: ISO codes only
        {"risk_group": "seen 2019-06-01"},
        {f"v{i}": "a" for i in range(7)},
    ):
        with pytest.raises(Refusal):
            release_strata(bad)
