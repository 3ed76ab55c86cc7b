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
        "submit",
        path,
        "--hub",
        hub.url,
        "--token",
        token,
        "--wait",
        "--json",
        "--max-wait",
        "120",
        check=False,
    )
    return json.loads(out.stdout)


def truth_cells(node: LocalNode, cohort: dict | None, by: list[str]) -> dict[tuple, int]:
    """The oracle: each cell's true count of tumours, from the store through the node's view."""
    frame = node.read_view(None, CohortSpec.load(cohort))
    return {
        k if isinstance(k, tuple) else (k,): int(n) for k, n in frame.groupby(by).size().items()
    }


def released(result: dict, by: list[str]) -> dict[tuple, int | None]:
    return {tuple(c[b] for b in by): c["n"] for c in result["result"]["cells"]}


def check_against_the_store(result: dict, truth: dict[tuple, int], by: list[str]) -> int:
    """Every released cell and the total against the store's truth: exactly equal under exact
    counts, within the stated noise (and never 1..min_cell - 1) under perturbed ones; a cell the
    store holds none of is zero or absent; returns how many cells were released."""
    shown = released(result, by)
    method = result["result"]["method"]
    perturbed = method["counts"] == "perturbed"
    noise = method["max_noise"] if perturbed else 0
    if not perturbed:  # exact: every cell of the store is listed (released or suppressed)
        assert set(truth) <= set(shown), "a cell of the store is missing from the table"
    for key in set(shown) | set(truth):
        n = shown.get(key, 0)  # perturbed: a cell left out of the table is published as 0
        if n is None:
            continue
        assert not 0 < n < MIN_CELL, f"cell {key}: {n} released"
        assert abs(n - truth.get(key, 0)) <= noise, f"cell {key}: {n}, truth {truth.get(key, 0)}"
    t = result["result"]["total"]
    assert t is None or abs(t - sum(truth.values())) <= noise
    return sum(n is not None for n in shown.values())


@pytest.mark.slow
@pytest.mark.parametrize("counts", ["exact", "perturbed"])
def test_attacks_through_the_hub(tmp_path, counts) -> None:
    """Through a real hub and node agent, in either tier: identifier and date specs never reach
    the node; every cell the node releases is compared with the store's truth (exact: equal;
    perturbed: within the stated noise), cells that should be released are, and a differencing
    pair of cohorts three days apart pins down no few children (exact: the differences of
    released cells are 0 or at least min_cell; perturbed: the date cut is refused unread)."""
    store = build_store(
        tmp_path / "fr.duckdb", random_registry(5, 400, "FR", "fr"), policy={"counts": counts}
    )
    node = LocalNode(store)
    truth = node.read_view(None, CohortSpec())
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = HubProcess(db, tmp_path / "hub.log")
    node_token = last_line(run_ccdp("hub", "add-node", "fr", "--country", "FR", "--db", db).stdout)
    user = last_line(run_ccdp("hub", "add-user", "eve", "--role", "researcher", "--db", db).stdout)
    by = ["sex", "vital_status", "iccc_group"]
    cut = pd.Timestamp(sorted(truth.diagnosis_date)[200]).date()
    cohorts = [{"diagnosis_date": {"to": str(cut - timedelta(days=d))}} for d in (0, 3)]
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

        # the whole store by the same variables: what should be released is released
        whole = submit(tmp_path, hub, user, "whole", {"analysis": "count", "by": by})
        # a differencing pair: cohorts ending three days apart
        results = [
            submit(tmp_path, hub, user, f"c{i}", {"analysis": "count", "by": by, "cohort": c})
            for i, c in enumerate(cohorts)
        ]

    full = truth_cells(node, None, by)
    assert whole["result"]["method"]["counts"] == counts
    shown = check_against_the_store(whole, full, by)
    assert whole["result"]["total"] is not None
    if counts == "perturbed":
        # the feasibility tier withholds nothing because of the data: every cell is published
        assert shown == len(released(whole, by)) > 0
        for r in results:  # a date at full precision is outside the tier: refused, never read
            assert r.get("result") is None, r
            text = json.dumps(r)
            assert "feasibility tier" in text
            assert not any(str(d)[:10] in text for d in truth.diagnosis_date)
        return
    # exact: every small cell is suppressed, and secondary suppression hides no more than half
    # of the cells of at least min_cell (on this store: 12 of 20 released)
    table = released(whole, by)
    assert all(table[k] is None for k, n in full.items() if 0 < n < MIN_CELL)
    big = [k for k, n in full.items() if n >= MIN_CELL]
    assert 2 * sum(table[k] is not None for k in big) >= len(big) and shown > 0
    assert whole["result"]["total"] == len(truth)
    for r, c in zip(results, cohorts, strict=True):
        assert r["result"]["method"] == {"counts": "exact"}
        check_against_the_store(r, truth_cells(node, c, by), by)
    assert check_against_the_store(results[0], truth_cells(node, cohorts[0], by), by) > 0
    assert results[0]["result"]["total"] == sum(truth_cells(node, cohorts[0], by).values())
    first, second = (released(r, by) for r in results)
    for key, n in second.items():
        m = first.get(key)
        if m is not None and n is not None:
            assert not 0 < m - n < MIN_CELL, f"cell {key} differs by {m - n}"
    t1, t2 = (r["result"]["total"] for r in results)
    assert t1 is None or t2 is None or not 0 < t1 - t2 < MIN_CELL
