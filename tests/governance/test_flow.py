"""End to end, with real processes: a study of a project runs only after the board approved it
and a node's custodian accepted it; the hub refuses a study outside its project before any node
is asked; a hub that forwards everything still meets each node's own check."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from sqlalchemy import update

from ccdp.federation.hub.models import ProjectRow
from ccdp.federation.hub.studies import SpecExecutor
from ccdp.federation.node.projects import record_decision
from ccdp.governance.projects import ProjectTerms
from tests.conftest import run_ccdp
from tests.federation.netutil import HubProcess, LiveHub, ccdp_args, last_line, processes, spawn
from tests.federation.standin import ForwardingHub
from tests.storekit import build_store, random_registry

SITES = {"fr": (21, 260, "FR"), "de": (22, 300, "DE"), "it": (23, 240, "IT")}
IN_A_YEAR = (date.today() + timedelta(days=365)).isoformat()


def project_file(tmp_path, name="p", **changes):
    body = {
        "title": "Leukaemia counts across Europe",
        "summary": "How many children had a leukaemia, by sex.",
        "institution": "Example University Hospital",
        "data_use": {"permission": "HMB", "commercial": False},
        "nodes": ["fr", "de", "it"],
        "analyses": ["count"],
        "cohort": {"iccc_group": ["I"]},
        "expires": IN_A_YEAR,
        **changes,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(body))
    return path


def study_file(tmp_path, name, **spec):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"analysis": "count", "by": ["sex"], "timeout": 60, **spec}))
    return path


def consented(registry: dict, consent: str = "DUO:0000042") -> dict:
    """The registry with every patient's consent set (GRU): the node includes only consented
    patients in a project's analyses (policy `consent: required`)."""
    return {**registry, "patient": [{**p, "consent": consent} for p in registry["patient"]]}


def stores(tmp_path):
    return {
        n: build_store(tmp_path / f"{n}.duckdb", consented(random_registry(seed, size, c, n)))
        for n, (seed, size, c) in SITES.items()
    }


def submit(path, hub, token, check=True):
    args = ("submit", path, "--hub", hub, "--token", token, "--wait", "--json", "--max-wait", "90")
    return run_ccdp(*args, check=check)


@pytest.mark.slow
def test_board_approval_and_node_acceptance_gate_every_study(tmp_path):
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    site_stores = stores(tmp_path)
    tokens = {
        n: last_line(run_ccdp("hub", "add-node", n, "--country", c, "--db", db).stdout)
        for n, (_, _, c) in SITES.items()
    }
    ana = last_line(run_ccdp("hub", "add-user", "ana", "--role", "researcher", "--db", db).stdout)
    bob = last_line(run_ccdp("hub", "add-user", "bob", "--role", "board", "--db", db).stdout)
    hub = HubProcess(db, tmp_path / "hub.log")
    hub.args = ccdp_args("hub", "serve", "--db", db, "--port", hub.port)  # closed: no --open
    with processes() as procs:
        hub.start()
        procs.append(hub.proc)
        for n, store in site_stores.items():
            args = ccdp_args(
                "node", "run", "--store", store, "--hub", hub.url, "--token", tokens[n]
            )
            procs.append(spawn([*args, "--poll", "2"], tmp_path / f"node-{n}.log"))
        leuk = {"cohort": {"iccc_group": ["I"]}}

        # a closed hub runs no study without a project
        bare = submit(study_file(tmp_path, "bare", **leuk), hub.url, ana, check=False)
        assert bare.returncode != 0 and "runs only studies of an approved project" in bare.stderr

        # a researcher requests; the board reviews; a researcher cannot review
        out = run_ccdp(
            "project", "request", project_file(tmp_path), "--hub", hub.url, "--token", ana, "--json"
        )
        requested = json.loads(out.stdout)
        pid = requested["project_id"]
        assert requested == {"project_id": pid, "state": "requested"}
        study = study_file(tmp_path, "leuk", project=pid, **leuk)
        early = submit(study, hub.url, ana, check=False)
        assert early.returncode != 0 and f"project {pid} is requested" in early.stderr
        review = ("project", "review", pid, "--approve", "--hub", hub.url, "--token")
        by_researcher = run_ccdp(*review, ana, check=False)
        assert by_researcher.returncode != 0 and "needs the board role" in by_researcher.stderr
        assert f"project {pid}: approved" in run_ccdp(*review, bob).stdout

        # a board token cannot submit studies
        by_board = submit(study, hub.url, bob, check=False)
        assert by_board.returncode != 0 and "403" in by_board.stderr

        # approved but accepted by no node: refused before any node is asked
        none_yet = submit(study, hub.url, ana, check=False)
        assert "no node named by the study accepted" in none_yet.stderr

        # each custodian decides at the node; the hub relays
        node_args = {
            n: ("--store", site_stores[n], "--hub", hub.url, "--token", tokens[n]) for n in SITES
        }
        run_ccdp("node", "projects", "accept", pid, *node_args["fr"])
        run_ccdp("node", "projects", "accept", pid, *node_args["de"])
        run_ccdp(
            "node", "projects", "decline", pid, "--reason", "no ethics cover", *node_args["it"]
        )
        listed = json.loads(run_ccdp("node", "projects", "list", *node_args["fr"], "--json").stdout)
        assert [(p["project_id"], p["decided_here"]["decision"]) for p in listed] == [
            (pid, "accepted")
        ]
        shown = json.loads(
            run_ccdp("project", "show", pid, "--hub", hub.url, "--token", ana, "--json").stdout
        )
        assert shown["state"] == "approved" and shown["review"]["by"] == "bob"
        assert {n: d["decision"] for n, d in shown["nodes"].items()} == {
            "fr": "accepted",
            "de": "accepted",
            "it": "declined",
        }

        # the study runs at the accepting nodes; the declining one is reported `declined`
        remote = json.loads(submit(study, hub.url, ana).stdout)
        assert remote["nodes"]["fr"]["status"] == remote["nodes"]["de"]["status"] == "answered"
        assert remote["nodes"]["it"] == {
            "status": "declined",
            "reason": f"the custodian of it declined project {pid}: no ethics cover",
        }
        # what `ccdp run` gives over the accepting stores, with the project's data use
        local_spec = study_file(
            tmp_path, "local", data_use={"permission": "HMB"}, **leuk, nodes=["fr", "de"]
        )
        stores_args = [a for n in ("fr", "de") for a in ("--store", site_stores[n])]
        local = json.loads(run_ccdp("run", local_spec, *stores_args, "--json").stdout)
        assert remote["result"] == local["result"]

        # outside the project: refused at the hub, with the reason
        for spec, why in [
            ({"cohort": {"iccc_group": ["I", "II"]}}, "iccc_group goes beyond the project's scope"),
            ({"analysis": "km", "outcome": "os", **leuk}, "analysis 'km' is not allowed"),
        ]:
            spec = {"by": ["sex"], **spec, "project": pid}
            bad = submit(study_file(tmp_path, "bad", **spec), hub.url, ana, check=False)
            assert bad.returncode != 0 and why in bad.stderr, (spec, bad.stderr)

        # an expired project: refused at the hub
        old = project_file(tmp_path, "old", expires=(date.today() - timedelta(days=1)).isoformat())
        out = run_ccdp("project", "request", old, "--hub", hub.url, "--token", ana, "--json")
        old_id = json.loads(out.stdout)["project_id"]
        run_ccdp("project", "review", old_id, "--approve", "--hub", hub.url, "--token", bob)
        expired = submit(
            study_file(tmp_path, "x", project=old_id, **leuk), hub.url, ana, check=False
        )
        assert f"project {old_id} is expired" in expired.stderr


@pytest.mark.slow
def test_each_node_checks_again_when_the_hub_forwards_everything(tmp_path):
    site_stores = stores(tmp_path)
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    with LiveHub(db, SpecExecutor(), open_studies=False, hub_class=ForwardingHub) as live:
        hub = live.hub
        tokens = {n: hub.add_node(n, c) for n, (_, _, c) in SITES.items()}
        ana = hub.add_user("ana", "researcher")
        bob = hub.add_user("bob", "board")
        with live.client(ana) as c:
            spec = json.loads(project_file(tmp_path).read_text())
            pid = c.post("/api/projects", json={"spec": spec}).json()["project_id"]
        with live.client(bob) as c:
            assert c.post(f"/api/projects/{pid}/review", json={"decision": "approve"}).is_success
        node = {
            n: ("--store", site_stores[n], "--hub", live.url, "--token", tokens[n]) for n in SITES
        }
        run_ccdp("node", "projects", "accept", pid, *node["fr"])
        run_ccdp("node", "projects", "accept", pid, *node["de"])
        # it: the custodian accepted the same project, but only until yesterday
        board = hub.authenticate(bob)
        assert board is not None
        terms = ProjectTerms.model_validate(hub.projects.show(pid, board)["terms"])
        yesterday = date.today() - timedelta(days=1)
        record_decision(
            site_stores["it"], terms.model_copy(update={"expires": yesterday}), "accepted", None
        )

        def run(**spec):
            body = {"analysis": "count", "by": ["sex"], "timeout": 60, "min_nodes": 1, **spec}
            with live.client(ana) as c:
                r = c.post("/api/studies", json={"spec": body})
                assert r.status_code == 201, r.text
                return c.get(f"/api/studies/{r.json()['id']}", params={"wait": 60}).json()

        with processes() as procs:
            for n, store in site_stores.items():
                args = ccdp_args(
                    "node", "run", "--store", store, "--hub", live.url, "--token", tokens[n]
                )
                procs.append(spawn([*args, "--poll", "2"], tmp_path / f"node-{n}.log"))
            inside = run(project=pid, cohort={"iccc_group": ["I"]})
            nodes = inside["result"]["nodes"]
            assert nodes["fr"]["status"] == nodes["de"]["status"] == "answered", nodes
            assert nodes["it"] == {
                "status": "refused",
                "reason": f"not accepted: project {pid} expired on {yesterday} at this node",
            }
            wide = run(project=pid, cohort={"iccc_group": ["I", "II"]})["result"]["nodes"]
            assert wide["fr"]["reason"] == (
                f"not accepted: project {pid} (cohort): the task is outside the terms this node "
                "accepted"
            )
            # a hub that loosens the project's data use after the custodians accepted it
            with hub.sessions.begin() as s:
                row = s.get(ProjectRow, pid)
                assert row is not None
                loosened = {**row.spec, "data_use": {"permission": "GRU", "commercial": True}}
                s.execute(update(ProjectRow).where(ProjectRow.id == pid).values(spec=loosened))
            loose = run(project=pid, cohort={"iccc_group": ["I"]})["result"]["nodes"]
            assert all("(data_use)" in loose[n]["reason"] for n in ("fr", "de")), loose
            # a task with no project: refused by default; answered only where the custodian opted
            # out of requiring one (policy require_project: false)
            run_ccdp(
                "node", "policy", "set", "require_project", "false", "--store", site_stores["fr"]
            )
            bare = run(cohort={"iccc_group": ["I"]})["result"]["nodes"]
            assert bare["de"]["reason"] == (
                "not accepted: this node answers only tasks of a project its custodian accepted"
            )
            assert bare["fr"]["status"] == "answered"  # fr's custodian opted out
