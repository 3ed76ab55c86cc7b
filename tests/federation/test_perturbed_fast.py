"""Perturbed counts by one aggregate at the node (`StoreData.count_cells`, `Records.summed`)
release exactly what the reference path (record sets from the view's rows) releases."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ccdp.disclosure.policy import NodePolicy
from ccdp.federation.node.local import LocalNode, StoreData
from ccdp.store.config import update_node_config
from ccdp.wire.protocol import Task
from tests.storekit import add_specimens, build_store, random_registry

PERTURBED = NodePolicy(counts="perturbed")
SPECS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("count", {"by": ["iccc_group", "sex"]}, {}),
    ("count", {"by": ["iccc_group"], "unit": "patients"}, {}),
    ("count", {}, {"sex": "female"}),
    ("crosstab", {"by": ["sex", "iccc_group"]}, {}),
    ("crosstab", {"by": ["vital_status", "iccc_group"], "unit": "patients"}, {}),
    ("count", {"by": ["specimen_type", "iccc_group"], "unit": "specimens"}, {}),
    ("count", {"by": ["iccc_group"]}, {"iccc_group": ["XII"]}),  # empty cohort
]


def _second_tumours(rows: dict[str, list[dict[str, Any]]], seed: int) -> None:
    """Give a third of the patients a later tumour, often in another ICCC group, so that cells
    hold second tumours without their patient's first one."""
    rng = np.random.default_rng(seed)
    extra = []
    for t in rows["tumour"]:
        if rng.random() < 0.35:
            extra.append(
                {
                    **t,
                    "tumour_id": t["tumour_id"] + "b",
                    "diagnosis_date": t["diagnosis_date"]
                    + timedelta(days=int(rng.integers(1, 900))),
                    "iccc_group": str(rng.choice(["I", "II", "III"])),
                }
            )
    rows["tumour"].extend(extra)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = add_specimens(random_registry(7, 900, "FR", "FR"), seed=8)
    _second_tumours(rows, 9)
    path = build_store(tmp_path_factory.mktemp("fast") / "FR.duckdb", rows)
    update_node_config(path, pseudonym_key="5a" * 32)
    return path


def _answers(node: LocalNode) -> list[dict[str, Any] | None]:
    out = []
    for i, (analysis, params, cohort) in enumerate(SPECS):
        task = Task(
            task_id=f"t{i}",
            study_id=f"s{i}",
            round=0,
            analysis=analysis,
            params=params,
            cohort=cohort,
            request={},
        )
        answer = node.answer(task)
        assert answer.status == "answered", answer.reason
        out.append(answer.summary)
    return out


def test_the_aggregate_path_releases_what_the_record_sets_release(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _answers(LocalNode(store, policy=PERTURBED))
    with monkeypatch.context() as m:
        m.setattr(StoreData, "count_cells", lambda self, groupings, unit, salt: None)
        reference = _answers(LocalNode(store, policy=PERTURBED))
    for ours, theirs in zip(fast, reference, strict=True):
        assert ours is not None and theirs is not None
        assert ours == theirs  # every part, every cell, every published value
    assert any(len(s["cells"]["cells"]) > 5 for s in fast if s)
    assert any("margin:sex" in s for s in fast if s)


def test_the_aggregate_path_reads_no_view_rows(store: Path) -> None:
    node = LocalNode(store, policy=PERTURBED)
    _answers(node)
    assert all(study.data.loaded is None for study in node._studies.values())


def test_the_view_joined_to_the_keys_releases_the_same(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the keyed view cannot serve the cohort, the view itself is joined to the keys."""
    import ccdp.federation.node.local as local

    fast = _answers(LocalNode(store, policy=PERTURBED))
    with monkeypatch.context() as m:
        m.setattr(local, "_keyed_sql", lambda sql, cols: None)
        joined = _answers(LocalNode(store, policy=PERTURBED))
    assert fast == joined
