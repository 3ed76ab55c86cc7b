"""A real hub and three node agents as separate processes on loopback give what `ccdp run` gives.

The hub runs on SQLite and, in a second run, on PostgreSQL (a database created and dropped here).
"""

from __future__ import annotations

import json

import pytest

from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.db import open_database
from tests.conftest import run_ccdp
from tests.federation.netutil import (
    HubProcess,
    ccdp_args,
    last_line,
    processes,
    spawn,
)
from tests.federation.pg import temporary_database
from tests.storekit import build_store, random_registry

SITES = {"fr": (11, 300, "FR"), "de": (12, 450, "DE"), "it": (13, 200, "IT")}
STUDIES = {
    "count": "analysis: count\nby: [iccc_group]\n",
    "km": "analysis: km\noutcome: os\nby: [sex]\n",
    "cox": "analysis: cox\noutcome: os\ncovariates: [arm, sex]\ncohort: {trial: [T1]}\n",
}


def comparable(result: dict) -> dict:
    """Everything but the study id, which each run draws afresh."""
    return {k: v for k, v in result.items() if k != "study_id"}


def run_partnership(tmp_path, db_url: str) -> None:
    stores = {
        n: build_store(tmp_path / f"{n}.duckdb", random_registry(seed, size, c, n))
        for n, (seed, size, c) in SITES.items()
    }
    hub = HubProcess(db_url, tmp_path / "hub.log")
    tokens = {
        n: last_line(run_ccdp("hub", "add-node", n, "--country", c, "--db", db_url).stdout)
        for n, (_, _, c) in SITES.items()
    }
    user = last_line(
        run_ccdp("hub", "add-user", "ana", "--role", "researcher", "--db", db_url).stdout
    )
    with processes() as procs:
        hub.start()
        procs.append(hub.proc)
        for n, store in stores.items():
            args = ccdp_args(
                "node", "run", "--open", "--store", store, "--hub", hub.url, "--token", tokens[n]
            )
            procs.append(spawn([*args, "--poll", "5"], tmp_path / f"node-{n}.log"))
        for name, text in STUDIES.items():
            spec = tmp_path / f"{name}.yaml"
            spec.write_text(text)
            local = json.loads(
                run_ccdp(
                    "run", spec, *(a for s in stores.values() for a in ("--store", s)), "--json"
                ).stdout
            )
            remote = json.loads(
                run_ccdp(
                    "submit",
                    spec,
                    "--hub",
                    hub.url,
                    "--token",
                    user,
                    "--wait",
                    "--json",
                    "--max-wait",
                    "120",
                ).stdout
            )
            assert comparable(remote) == comparable(local), name
            # a researcher who did not --wait finds the study and its result by the hub's id
            listed = json.loads(
                run_ccdp("study", "list", "--hub", hub.url, "--token", user, "--json").stdout
            )
            assert remote["study_id"] in [r["id"] for r in listed]
            again = run_ccdp(
                "study", "result", remote["study_id"], "--hub", hub.url, "--token", user, "--json"
            )
            assert json.loads(again.stdout) == remote
            shown = run_ccdp("study", "show", remote["study_id"], "--hub", hub.url, "--token", user)
            assert f"{remote['study_id']}: done" in shown.stdout
            assert all(s["status"] == "answered" for s in remote["nodes"].values())
            assert remote["min_nodes_met"] is True
        # the hub shows every node as seen, and `ccdp hub nodes` lists them
        seen = Hub(open_database(db_url)).nodes()
        assert [n["name"] for n in seen] == sorted(SITES)
        assert all(n["last_seen"] is not None for n in seen)
        listing = run_ccdp("hub", "nodes", "--db", db_url).stdout
        assert all(n in listing for n in SITES)


@pytest.mark.slow
def test_hub_and_three_node_processes_equal_ccdp_run_sqlite(tmp_path):
    run_partnership(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")


@pytest.mark.slow
@pytest.mark.postgres
def test_hub_and_three_node_processes_equal_ccdp_run_postgres(tmp_path):
    with temporary_database() as url:
        run_partnership(tmp_path, url)
