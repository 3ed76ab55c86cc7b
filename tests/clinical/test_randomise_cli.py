"""End to end: a real hub on loopback, a node store, the CLI: `ccdp trial create`, `ccdp node
randomise` (strata from the store, only a pseudonym to the hub, the arm written back),
`ccdp trial allocations --verify` by the statistician, refused to a researcher."""

from __future__ import annotations

import json

import duckdb
import pytest
import yaml

from ccdp.federation.node.audit import AuditLog
from tests.federation.netutil import LiveHub
from tests.federation.standin import StandinExecutor
from tests.storekit import build_store, random_registry


@pytest.fixture
def live(tmp_path):
    with LiveHub(f"sqlite:///{tmp_path / 'hub.db'}", StandinExecutor()) as hub:
        hub.tokens = {
            "DE": hub.hub.add_node("DE-node", "DE"),
            "ana": hub.hub.add_user("ana", "researcher"),
            "root": hub.hub.add_user("root", "admin"),
            "stat": hub.hub.add_user("stat", "statistician"),
        }
        yield hub


def test_randomise_from_the_node_store(live, ccdp, tmp_path):
    reg = random_registry(5, 40, "DE", "de")
    reg["patient"][3]["sex"] = None  # a stratum the store does not know
    store = build_store(tmp_path / "de.duckdb", reg)
    ccdp("node", "policy", "set", "--store", store, "trials", "[IntReALL-2020, no-trial]")
    trial = tmp_path / "trial.yaml"
    trial.write_text(
        yaml.safe_dump(
            {
                "name": "IntReALL-2020",
                "arms": ["standard", "experimental"],
                "ratio": [1, 1],
                "strata": ["country", "sex"],
                "method": "minimisation",
                "p": 0.8,
            }
        )
    )
    hub = ["--hub", live.url]
    out = ccdp("trial", "create", trial, *hub, "--token", live.tokens["root"]).stdout
    assert "IntReALL-2020 created" in out
    node = [*hub, "--token", live.tokens["DE"], "--store", store]
    got = {}
    for i in (0, 1, 2, 4, 5, 6):
        pid = f"deP{i}"
        r = ccdp("node", "randomise", "IntReALL-2020", "--patient", pid, *node, "--json")
        got[pid] = json.loads(r.stdout)
        assert set(got[pid]) == {"trial", "patient", "arm", "strata"}
        assert got[pid]["strata"]["country"] == "DE"
        assert got[pid]["strata"]["sex"] == reg["patient"][i]["sex"]
    # asking again: the same arm
    again = json.loads(
        ccdp("node", "randomise", "IntReALL-2020", "--patient", "deP0", *node, "--json").stdout
    )
    assert again == got["deP0"]
    text = ccdp("node", "randomise", "IntReALL-2020", "--patient", "deP0", *node).stdout
    assert "already randomised" in text
    # the store holds the arms (one row per patient and trial), beside the registry's own trial
    con = duckdb.connect(str(store), read_only=True)
    rows = dict(
        con.execute(
            "SELECT patient_id, arm FROM trial_enrolment WHERE trial = 'IntReALL-2020'"
        ).fetchall()
    )
    con.close()
    assert rows == {p: g["arm"] for p, g in got.items()}
    # the node's audit log: one record per request, none with the patient key
    records = [r for r in AuditLog.for_store(store).records() if r.get("event") == "randomise"]
    assert [r["status"] for r in records] == ["allocated"] * 6 + ["repeated"] * 2
    assert not any("deP" in json.dumps(r) for r in records)
    AuditLog.for_store(store).verify()
    # a stratum unknown in the store, a patient not in it: refused, nothing sent
    bad = ccdp("node", "randomise", "IntReALL-2020", "--patient", "deP3", *node, check=False)
    assert bad.returncode == 2 and "sex is unknown" in bad.stderr
    bad = ccdp("node", "randomise", "IntReALL-2020", "--patient", "nobody", *node, check=False)
    assert bad.returncode == 2 and "no patient" in bad.stderr
    bad = ccdp("node", "randomise", "no-trial", "--patient", "deP1", *node, check=False)
    assert bad.returncode == 2 and "404" in bad.stderr
    # the statistician sees the list (pseudonyms only) and re-derives it from the seed
    full = ccdp(
        "trial",
        "allocations",
        "IntReALL-2020",
        *hub,
        "--token",
        live.tokens["stat"],
        "--json",
        "--verify",
    )
    body = json.loads(full.stdout)
    assert body["verified"] is True and len(body["allocations"]) == 6
    assert {a["node"] for a in body["allocations"]} == {"DE-node"}
    assert not any(a["patient"].startswith("deP") for a in body["allocations"])
    assert sum(body["counts"].values()) == 6
    # a researcher sees trials, never allocations
    listed = ccdp("trial", "list", *hub, "--token", live.tokens["ana"], "--json").stdout
    assert json.loads(listed)[0]["randomised"] == 6 and "seed" not in listed
    no = ccdp(
        "trial",
        "allocations",
        "IntReALL-2020",
        *hub,
        "--token",
        live.tokens["ana"],
        check=False,
    )
    assert no.returncode == 2 and "403" in no.stderr
    # a trial file with a mistake is refused before it reaches the hub, naming the key
    trial.write_text(yaml.safe_dump({"name": "x", "arms": ["a", "b"], "ratio": [1]}))
    bad = ccdp("trial", "create", trial, *hub, "--token", live.tokens["root"], check=False)
    assert bad.returncode == 2 and "ratio" in bad.stderr and str(trial) in bad.stderr
