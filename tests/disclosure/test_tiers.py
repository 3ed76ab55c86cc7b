"""The release tiers under the node's default policy (issue 28): a registered study is exact,
counts that are not registered are perturbed and restricted to declared levels, and any other
study is answered locally with the note that a networked node would hold it for review.

Local runs (`ccdp run`, `ccdp.api.run`) release what a node would release to a researcher, so
these tests use stores with no policy file: the defaults themselves."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

import ccdp.api as api
from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.policy import NodePolicy
from ccdp.errors import SpecError
from ccdp.federation.node.local import LocalNode
from tests.conftest import run_ccdp
from tests.storekit import build_store, random_registry

IN_A_YEAR = (date.today() + timedelta(days=365)).isoformat()
KM = {"title": "OS by ICCC-3 group", "analysis": "km", "outcome": "os", "by": ["iccc_group"]}
COUNT = {"title": "Children by ICCC-3 group and sex", "analysis": "count", "by": ["iccc_group"]}


def project(*studies: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": "Outcome of childhood cancer",
        "summary": "Survival and counts by diagnostic group.",
        "institution": "Example University Hospital",
        "data_use": {"permission": "GRU"},
        "nodes": ["fr", "de"],
        "analyses": ["count", "km", "crosstab"],
        "expires": IN_A_YEAR,
        "studies": list(studies),
    }


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> list[Path]:
    """Two registries with no policy file (the defaults), group VI small at each node."""
    folder = tmp_path_factory.mktemp("tiers")
    return [
        build_store(folder / "fr.duckdb", random_registry(41, 500, "FR", "fr"), defaults=True),
        build_store(folder / "de.duckdb", random_registry(42, 350, "DE", "de"), defaults=True),
    ]


def pooled(stores: list[Path], columns: list[str]) -> pd.DataFrame:
    return pd.concat(
        [LocalNode(s).read_view(columns, CohortSpec.load(None)) for s in stores],
        ignore_index=True,
    )


def test_the_default_policy_is_the_tiers():
    policy = NodePolicy()
    assert (policy.counts, policy.exact_release, policy.noise) == ("perturbed", "registered", 4)
    assert NodePolicy(min_cell=10).noise == 9  # the bound follows min_cell unless set


def test_a_registered_km_is_the_pooled_kaplan_meier_exactly_even_in_small_groups(stores):
    """The newcomer's case: a small group's curve, with every event at its own time, equals
    lifelines on the pooled rows (no interval, no moved event), because it is registered."""
    res = api.run(KM, stores=stores, project=project(KM))
    assert res.result is not None, res
    rows = pooled(stores, ["os_time", "os_event", "iccc_group"])
    small = rows.groupby("iccc_group").size().idxmin()
    for g in res.result.groups:
        block = rows[rows["iccc_group"] == g.group]
        kmf = KaplanMeierFitter().fit(block["os_time"], block["os_event"])
        times = np.array([r.time for r in g.table])
        np.testing.assert_array_equal(times, np.unique(block["os_time"]))
        expect = kmf.survival_function_.loc[times].to_numpy().ravel()
        np.testing.assert_allclose([r.survival for r in g.table], expect, atol=1e-12)
    assert small in {g.group for g in res.result.groups}
    assert res.result.method["times"] == "exact", res.result.method


def test_the_same_km_unregistered_is_grouped_and_says_a_node_would_hold_it(stores):
    res = api.run(KM, stores=stores)
    assert res.result is not None and res.result.method["times"] == "grouped"
    for status in res.nodes.values():
        assert "a networked node holds this answer for its custodian's review" in str(status.reason)
    registered = api.run(KM, stores=stores, project=project(KM))
    assert registered.result is not None
    assert len(registered.result.to_frame(steps=True)) > len(res.result.to_frame(steps=True))


def test_a_registered_count_is_exact_and_the_same_count_unregistered_is_perturbed(stores):
    rows = pooled(stores, ["iccc_group"])
    truth = rows.groupby("iccc_group").size()
    exact = api.run(COUNT, stores=stores, project=project(COUNT)).result
    assert exact is not None and exact.method.get("counts") != "perturbed"
    got = {c["iccc_group"]: c["n"] for c in exact.cells}
    for group, n in truth.items():
        if n >= NodePolicy().min_cell * 2:  # large enough at both nodes: never suppressed
            assert got[group] == n
    noisy = api.run(COUNT, stores=stores).result
    assert noisy is not None and noisy.method["counts"] == "perturbed"
    shown = {c["iccc_group"]: c["n"] for c in noisy.cells}
    assert all(abs(shown[g] - truth[g]) <= noisy.method["pooled_max_noise"] for g in truth.index)
    assert shown != got  # 6 groups at 2 nodes: some noise is not zero (a fixed, keyed draw)


def test_an_unregistered_count_takes_only_declared_levels(stores):
    window = {**COUNT, "cohort": {"diagnosis_date": {"from": "2008-01-01", "to": "2008-06-30"}}}
    res = api.run(window, stores=stores)
    assert res.result is None
    assert all(s.status == "refused" for s in res.nodes.values())
    assert all(
        "feasibility" in str(s.reason) or "declared" in str(s.reason) for s in res.nodes.values()
    )
    # registered, the same window is an exact count (the custodian audited it at acceptance)
    done = api.run(window, stores=stores, project=project(window))
    assert done.result is not None and done.result.method.get("counts") != "perturbed"


def test_a_study_the_project_does_not_register_is_refused_before_it_runs(stores):
    with pytest.raises(SpecError, match="not one of the registered studies"):
        api.run({**KM, "by": ["sex"]}, stores=stores, project=project(KM))


def test_ccdp_run_project_runs_the_registered_study_exactly(stores, tmp_path):
    spec, proj = tmp_path / "km.json", tmp_path / "project.json"
    spec.write_text(json.dumps(KM))
    proj.write_text(json.dumps(project(KM)))
    args = ["run", spec, *[a for s in stores for a in ("--store", s)], "--json"]
    registered = json.loads(run_ccdp(*args, "--project", proj).stdout)
    plain = json.loads(run_ccdp(*args).stdout)
    assert all(n["status"] == "answered" and not n["reason"] for n in registered["nodes"].values())
    assert all("custodian's review" in n["reason"] for n in plain["nodes"].values())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**KM, "outcome": "efs"}))
    proc = run_ccdp("run", other, "--store", stores[0], "--project", proj, check=False)
    assert proc.returncode != 0 and "not one of the registered studies" in proc.stderr
