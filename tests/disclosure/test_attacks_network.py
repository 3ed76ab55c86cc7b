"""The attacks of issue 10 tried through a real hub and node agent (separate processes, loopback).

What the node agent answers is what `LocalNode` answers (tests/disclosure/test_attacks.py holds
the full suite); this checks that nothing is lost on the way: the hub refuses identifier and date
specs before any node is asked, a differencing pair through the hub pins down nothing, and the
refusal text stored in the hub's database quotes no stored value.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import pytest

from ccdp.cohort.spec import CohortSpec
from ccdp.federation.node.local import LocalNode
from tests.conftest import run_ccdp
from tests.federation.netutil import HubProcess, ccdp_args, last_line, processes, spawn
from tests.storekit import build_store, random_registry

MIN_CELL = 5


def submit(tmp_path, hub: HubProcess, token: str, name: str, spec: dict) -> dict:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    out = run_ccdp(
        "submit", path, "--hub", hub.url, "--token", token, "--wait", "--json", "--max-wait", "120"
    )
    return json.loads(out.stdout)


@pytest.mark.slow
def test_attacks_through_the_hub(tmp_path) -> None:
    store = build_store(tmp_path / "fr.duckdb", random_registry(5, 400, "FR", "fr"))
    truth = LocalNode(store).read_view(None, CohortSpec())
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = HubProcess(db, tmp_path / "hub.log")
    node_token = last_line(run_ccdp("hub", "add-node", "fr", "--country", "FR", "--db", db).stdout)
    user = last_line(run_ccdp("hub", "add-user", "eve", "--role", "researcher", "--db", db).stdout)
    with processes() as procs:
        hub.start()
        procs.append(hub.proc)
        args = ccdp_args(
            "node", "run", "--open", "--store", store, "--hub", hub.url, "--token", node_token
        )
        procs.append(spawn([*args, "--poll", "5"], tmp_path / "node.log"))

        # identifiers and dates never reach a node: the hub's own spec check refuses them
        for bad in (
            {"analysis": "count", "by": ["diagnosis_date", "sex"]},
            {"analysis": "km", "by": ["patient_id"]},
            {"analysis": "cox", "covariates": ["tumour_id"]},
        ):
            path = tmp_path / "bad.json"
            path.write_text(json.dumps(bad))
            proc = run_ccdp("submit", path, "--hub", hub.url, "--token", user, check=False)
            assert proc.returncode != 0
            assert not any(p in proc.stdout + proc.stderr for p in truth.patient_id[:50])

        # a differencing pair: cohorts ending three days apart
        cut = pd.Timestamp(sorted(truth.diagnosis_date)[200]).date()
        by = ["sex", "vital_status", "iccc_group"]
        results = [
            submit(
                tmp_path,
                hub,
                user,
                f"c{d}",
                {
                    "analysis": "count",
                    "by": by,
                    "cohort": {"diagnosis_date": {"to": str(cut - timedelta(days=d))}},
                },
            )
            for d in (0, 3)
        ]
    first, second = (
        {tuple(c[b] for b in by): c["n"] for c in r["result"]["cells"]} for r in results
    )
    for key, n in second.items():
        m = first.get(key)
        if m is not None and n is not None:
            assert not 0 < m - n < MIN_CELL, f"cell {key} differs by {m - n}"
    assert all(n is None or n == 0 or n >= MIN_CELL for n in first.values())
    t1, t2 = (r["result"]["total"] for r in results)
    assert t1 is None or t2 is None or not 0 < t1 - t2 < MIN_CELL
