"""`counts_part` finds its groups by factorising columns (`cells.groups`), not by a pandas
groupby: the parts it makes, cells and record sets, are those the groupby made, on a node's
real view and on frames with missing values of every plain kind."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccdp.analyses.cells import counts_part
from ccdp.analyses.node_data import FrameData, NodeData
from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.gate import record, release
from ccdp.disclosure.ledger import Ledger
from ccdp.disclosure.policy import NodePolicy
from ccdp.federation.node.local import LocalNode
from ccdp.wire.levels import native, sort_key
from ccdp.wire.records import Unit
from ccdp.wire.summary import CountsPart, Summary
from tests.storekit import build_store, random_registry


def groupby_part(data: NodeData, frame: pd.DataFrame, by: list[str], unit: Unit) -> CountsPart:
    """`counts_part` as it was written over a pandas groupby (the reference)."""
    keys = data.record_keys(frame.index, unit)
    grouped = frame.groupby(by, dropna=False, sort=False)
    codes = grouped.ngroup().to_numpy()
    per_cell = (
        pd.DataFrame({"code": codes, "key": keys}).groupby("code")["key"].nunique().sort_index()
    )
    labels = grouped.size().reset_index(name="_rows")
    cells = [
        {**{d: native(r[d]) for d in by}, "n": int(per_cell.iloc[i])}
        for i, r in enumerate(labels.to_dict("records"))
    ]
    order = sorted(range(len(cells)), key=lambda i: sort_key(tuple(cells[i][d] for d in by)))
    position = np.empty(len(cells), dtype=np.int64)
    position[order] = np.arange(len(cells))
    return CountsPart(
        dims=list(by),
        counts=["n"],
        cells=[cells[i] for i in order],
        records=data.records(frame.index, position[codes], unit),
    )


def same(a: CountsPart, b: CountsPart) -> None:
    assert a == b  # dims, counts, cells (values and their types, in order)
    assert [type(v) for c in a.cells for v in c.values()] == [
        type(v) for c in b.cells for v in c.values()
    ]
    assert a.records is not None and b.records is not None
    n = len(a.cells)
    pairs = zip(a.records.sets(n), b.records.sets(n), strict=True)
    assert all(np.array_equal(x, y) for x, y in pairs)
    assert np.array_equal(a.records.row, b.records.row)
    assert np.array_equal(a.records.keys, b.records.keys)


def test_the_parts_of_a_nodes_view_are_the_groupbys(tmp_path: Path):
    store = build_store(tmp_path / "FR.duckdb", random_registry(11, 300, "FR", "FR"))
    node = LocalNode(store, name="FR")
    view = node.read_view(None, CohortSpec())
    data = FrameData(view)
    plain = [c for c in view.columns if view[c].nunique(dropna=False) <= 40]
    assert len(plain) >= 5
    groupings = [[c] for c in plain] + [list(p) for p in itertools.combinations(plain[:6], 2)]
    groupings.append(plain[:3])
    for by in groupings:
        for unit in ("tumours", "patients"):
            same(counts_part(data, view, by, unit), groupby_part(data, view, by, unit))


@pytest.mark.parametrize("seed", range(5))
def test_missing_values_of_every_plain_kind_group_as_the_groupby_does(seed: int):
    rng = np.random.default_rng(seed)
    n = 300
    text = rng.choice(np.array(["a", "b", "II", "x10", None, np.nan], dtype=object), n)
    frame = pd.DataFrame(
        {
            "text": text,
            "int": rng.integers(-2, 4, n),
            "float": rng.choice([0.5, 1.0, np.nan, -3.25], n),
            "flag": rng.random(n) < 0.3,
            "mixed": rng.choice(np.array([1, "1", 2.5, None], dtype=object), n),
            "patient_id": rng.integers(0, 120, n).astype(str),
            "tumour_id": np.arange(n).astype(str),
            "tumour_seq": rng.integers(1, 3, n),
        },
        index=pd.Index(rng.permutation(n) + 1000),
    )
    data = FrameData(frame)
    cols = ["text", "int", "float", "flag", "mixed"]
    for by in [[c] for c in cols] + [list(p) for p in itertools.combinations(cols, 2)]:
        for unit in ("tumours", "patients"):
            same(counts_part(data, frame, by, unit), groupby_part(data, frame, by, unit))
    empty = frame.iloc[:0]
    same(counts_part(data, empty, ["text"]), groupby_part(data, empty, ["text"], "tumours"))


def test_the_gate_releases_and_records_the_same(tmp_path: Path):
    """The same releases, one study after another, from parts made either way: the same
    released tables and notes, and the same sets in the ledger after each."""
    store = build_store(tmp_path / "FR.duckdb", random_registry(13, 300, "FR", "FR"))
    view = LocalNode(store, name="FR").read_view(None, CohortSpec())
    data = FrameData(view)
    policy = NodePolicy(counts="exact", exact_release="any", min_cell=5)
    ours, theirs = Ledger(tmp_path / "a.ledger.db"), Ledger(tmp_path / "b.ledger.db")
    studies = [["sex"], ["iccc_group"], ["sex", "age_group"], ["iccc_group", "sex"], ["stage"]]
    for i, by in enumerate(studies * 2):
        made = []
        for ledger, make in ((ours, counts_part), (theirs, groupby_part)):
            ctx = DisclosureContext(policy, ledger)
            cells = make(data, view, by, "tumours")
            parts = {"cells": cells, "total": counts_part(data, view, [])}  # no groups: as was
            checked = release(Summary(parts=parts), ctx)
            record(checked, ctx, {"study_id": str(i)})
            made.append((checked.summary.to_dict(), checked.notes))
        assert made[0] == made[1], by
        assert _sets(ours) == _sets(theirs)
    assert len(ours) > 5


def _sets(ledger: Ledger) -> list[list[int]]:
    got = ledger.sets()
    assert got is not None
    return [s.tolist() for s in got[0]]
