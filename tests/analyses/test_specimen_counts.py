"""Specimen discovery: `count` and `crosstab` with `unit: specimens` over real node stores.

Every released cell is checked against SQL straight over the store's `specimen` and `tumour`
tables (available specimens only), alone and federated over two nodes; a cell is released only
when its samples come from at least min_cell children (docs/specimens.md).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ccdp.errors import SpecError
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import load_study, run_study
from tests.storekit import add_specimens, build_store, random_registry, specimen_truth

MIN_CELL = 5


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("specimens")
    paths = []
    for i, (country, n) in enumerate((("FR", 500), ("DE", 300))):
        rows = add_specimens(random_registry(20 + i, n, country, country), seed=40 + i)
        paths.append(build_store(out / f"{country}.duckdb", rows))
    return paths


def _released(result, by: list[str]) -> dict[tuple, int]:
    return {tuple(c[d] for d in by): c["n"] for c in result.cells if c["n"] is not None}


def _pooled_truth(stores: list[Path]) -> pd.DataFrame:
    """Available specimens by type over all the stores (children are not additive: dropped)."""
    frames = [specimen_truth(s, ["s.type AS specimen_type"]) for s in stores]
    return pd.concat(frames).groupby("specimen_type")[["n"]].sum()


def test_specimens_by_type_are_the_stores_available_samples(stores: list[Path]) -> None:
    study = run_study(
        {"analysis": "count", "by": ["specimen_type"], "unit": "specimens"},
        InProcessTransport(stores[:1]),
    )
    truth = specimen_truth(stores[0], ["s.type AS type"]).set_index("type")
    released = _released(study.result, ["specimen_type"])
    assert study.result.unit == "specimens"
    assert released, "no cell released"
    for (kind,), n in released.items():
        assert n == truth.loc[kind, "n"]  # every sample of that type, never a tumour count
        assert truth.loc[kind, "children"] >= MIN_CELL
    assert study.result.total == truth["n"].sum()
    # unavailable specimens (and those whose availability is not recorded) are not counted
    with duckdb.connect(str(stores[0]), read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM specimen").fetchone()[0]
    assert study.result.total < stored


def test_crosstab_of_type_by_iccc_group_matches_sql(stores: list[Path]) -> None:
    by = ["specimen_type", "iccc_group"]
    study = run_study(
        {"analysis": "crosstab", "by": by, "unit": "specimens"}, InProcessTransport(stores[:1])
    )
    truth = specimen_truth(stores[0], ["s.type AS specimen_type", "t.iccc_group"])
    truth = truth.set_index(by)
    released = _released(study.result, by)
    assert len(released) >= 10
    for key, n in released.items():
        assert n == truth.loc[key, "n"]
        assert truth.loc[key, "children"] >= MIN_CELL
    hidden = [tuple(c[d] for d in by) for c in study.result.cells if c["n"] is None]
    few = truth[(truth.children > 0) & (truth.children < MIN_CELL)].index
    assert set(few) <= set(hidden)  # every cell of few children is withheld
    by_type = truth.groupby(level=0)["n"].sum()
    for margin in study.result.margins["specimen_type"]:
        if margin["n"] is not None:
            assert margin["n"] == by_type[margin["specimen_type"]]
    wide = study.result.to_frame()
    assert "Total" in wide.columns


def test_two_nodes_pool_to_the_sum_of_their_stores(stores: list[Path]) -> None:
    by = ["specimen_type", "iccc_group", "node"]
    study = run_study(
        {"analysis": "count", "by": by, "unit": "specimens"}, InProcessTransport(stores)
    )
    assert {s.status for s in study.nodes.values()} == {"answered"}
    per_node = pd.concat(
        specimen_truth(s, ["s.type AS specimen_type", "t.iccc_group"]).assign(node=s.stem)
        for s in stores
    ).set_index(by)
    released = _released(study.result, by)
    assert {k[2] for k in released} == {"FR", "DE"}
    for key, n in released.items():
        assert n == per_node.loc[key, "n"]
    pooled = run_study(
        {"analysis": "count", "by": ["specimen_type"], "unit": "specimens"},
        InProcessTransport(stores),
    )
    truth = _pooled_truth(stores)
    for (kind,), n in _released(pooled.result, ["specimen_type"]).items():
        assert n == truth.loc[kind, "n"]  # identical to pooling the two stores' samples
    assert pooled.result.total == truth["n"].sum()


def test_a_cohort_may_filter_on_specimen_type_and_tumour_variables(stores: list[Path]) -> None:
    study = run_study(
        {
            "analysis": "count",
            "by": ["sex"],
            "unit": "specimens",
            "cohort": {"specimen_type": ["bone_marrow", "dna"], "iccc_group": ["I", "II"]},
        },
        InProcessTransport(stores[:1]),
    )
    where = "s.type IN ('bone_marrow', 'dna') AND t.iccc_group IN ('I', 'II')"
    con_truth = specimen_truth(stores[0], [], where)
    assert study.result.total == con_truth["n"].iloc[0]


def test_specimen_variables_need_unit_specimens() -> None:
    with pytest.raises(SpecError, match="specimen_type is a specimen variable"):
        load_study({"analysis": "count", "by": ["specimen_type"]})
    with pytest.raises(SpecError, match="specimen_type: a specimen variable"):
        load_study({"analysis": "km", "outcome": "os", "cohort": {"specimen_type": ["dna"]}})
    with pytest.raises(SpecError, match="identifier"):
        load_study({"analysis": "count", "by": ["specimen_id"], "unit": "specimens"})
    load_study({"analysis": "count", "unit": "specimens", "cohort": {"specimen_type": ["csf"]}})


def test_a_node_refuses_a_specimen_variable_on_tumour_rows(stores: list[Path]) -> None:
    """A hub that skipped the spec's checks still gets a clear refusal, sent before any read."""
    from ccdp.federation.node.local import LocalNode
    from ccdp.wire.protocol import Task

    node = LocalNode(stores[0])
    task = Task(
        task_id="t1",
        study_id="s1",
        round=0,
        analysis="km",
        params={"outcome": "os"},
        cohort={"specimen_type": ["dna"]},
    )
    answer = node.answer(task)
    assert answer.status == "failed"
    assert "specimen_type: a specimen variable" in (answer.reason or "")
    assert answer.summary is None
