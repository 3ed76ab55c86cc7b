"""Attacks on randomisation: what a hub (or whoever reads its database) can learn or link.

Randomisation necessarily sends one patient's strata, so it is allowed only for trials the
node's custodian accepted (policy `trials`), and each patient goes as a per-trial pseudonym. The
hub's whole database is read back as an attacker would: no store key, no ingest pseudonym, no
pseudonym shared between two trials, nothing from a trial the node did not accept.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy import select

from ccdp.disclosure.policy import set_policy_value
from ccdp.federation.hub.models import AllocationRow, TrialRow
from ccdp.federation.node.audit import AuditLog
from ccdp.federation.node.enrol import trial_pseudonym
from tests.federation.netutil import LiveHub
from tests.federation.standin import StandinExecutor
from tests.storekit import build_store, random_registry


@pytest.fixture
def live(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as hub:
        hub.tokens = {
            "DE": hub.hub.add_node("DE-node", "DE"),
            "FR": hub.hub.add_node("FR-node", "FR"),
        }
        root = hub.hub.add_user("root", "admin")
        with hub.client(root) as c:
            for name in ("L1", "L2"):
                spec = {"name": name, "arms": ["a", "b"], "strata": ["sex"], "method": "blocks"}
                assert c.post("/api/trials", json={"spec": spec}).status_code == 201
        hub.db_file = tmp_path / "hub.db"
        yield hub


def _randomise(ccdp, live, store, node: str, trial: str, patient: str, check: bool = True):
    args = ["--patient", patient, "--store", store, "--hub", live.url, "--token", live.tokens[node]]
    return ccdp("node", "randomise", trial, *args, "--json", check=check)


def _hub_text(live) -> str:
    """Every value of every table of the hub's database, as an attacker holding it reads it."""
    con = sqlite3.connect(live.db_file)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            json.dumps(row, default=str)
            for t in tables
            for row in con.execute(f'SELECT * FROM "{t}"')
        )
    finally:
        con.close()


def test_a_trial_the_custodian_did_not_accept_sends_nothing(live, ccdp, tmp_path):
    store = build_store(tmp_path / "de.duckdb", random_registry(3, 8, "DE", "de"))
    set_policy_value(store, "trials", "[L2]")
    r = _randomise(ccdp, live, store, "DE", "L1", "deP0", check=False)
    assert r.returncode == 2
    assert "custodian has not accepted trial 'L1'" in r.stderr
    with live.hub.sessions() as s:
        assert s.scalars(select(AllocationRow)).all() == []
    assert not [a for a in live.hub.audit_log(200) if a["action"].startswith("randomise")]
    refused = [x for x in AuditLog.for_store(store).records() if x["event"] == "randomise-refused"]
    assert [x["rule"] for x in refused] == ["trial_not_accepted"]
    assert "deP0" not in json.dumps(refused)
    # the default policy accepts no trial at all
    other = build_store(tmp_path / "fr.duckdb", random_registry(4, 8, "FR", "fr"))
    r = _randomise(ccdp, live, other, "FR", "L1", "frP0", check=False)
    assert r.returncode == 2 and "not accepted" in r.stderr


def test_the_hub_cannot_link_a_child_across_trials_or_back_to_the_store(live, ccdp, tmp_path):
    de_reg = random_registry(3, 8, "DE", "de")
    fr_reg = random_registry(4, 8, "FR", "fr")
    de = build_store(tmp_path / "de.duckdb", de_reg)
    fr = build_store(tmp_path / "fr.duckdb", fr_reg)
    set_policy_value(de, "trials", "[L1, L2]")
    set_policy_value(fr, "trials", "[L1]")
    for trial, patient in (("L1", "deP0"), ("L2", "deP0"), ("L1", "deP1"), ("L2", "deP2")):
        _randomise(ccdp, live, de, "DE", trial, patient)
    _randomise(ccdp, live, fr, "FR", "L1", "frP0")
    again = json.loads(_randomise(ccdp, live, de, "DE", "L1", "deP0").stdout)
    with live.hub.sessions() as s:
        trials = {t.id: t.name for t in s.scalars(select(TrialRow))}
        rows = [
            (trials[a.trial_id], a.patient, a.strata, a.arm)
            for a in s.scalars(select(AllocationRow))
        ]
    assert len(rows) == 5  # the repeat was not a new allocation
    by_trial: dict[str, set[str]] = {}
    for trial, alias, strata, _ in rows:
        by_trial.setdefault(trial, set()).add(alias)
        assert set(strata) == {"sex"}  # only the trial's strata
    assert not by_trial["L1"] & by_trial["L2"]  # deP0 is two strangers to the hub
    # nothing of the stores' own keys, nor their ingest pseudonyms, is anywhere at the hub
    text = _hub_text(live)
    keys = [p["patient_id"] for p in de_reg["patient"] + fr_reg["patient"]]
    keys += [t["tumour_id"] for t in de_reg["tumour"] + fr_reg["tumour"]]
    for key in keys:
        assert key not in text, key
    for store in (de, fr):
        for record in AuditLog.for_store(store).records():
            assert "deP" not in json.dumps(record) and "frP" not in json.dumps(record)
    first = {(t, alias): arm for t, alias, _, arm in rows}
    assert again["arm"] == first[("L1", trial_pseudonym(de, "L1", "deP0"))]
    assert trial_pseudonym(de, "L1", "deP0") != trial_pseudonym(fr, "L1", "deP0")  # per node key
