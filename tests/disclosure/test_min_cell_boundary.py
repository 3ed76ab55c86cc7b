"""The small-cell rule at its boundary, deterministically (issue 26): under exact counts a count
of min_cell - 1 is suppressed and a count of min_cell released, through the gate itself
(`ccdp.disclosure.gate.release`) and through real stores (`ccdp.api.run`); under the default
perturbed policy no published count lies in 1..min_cell - 1, whatever the true count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ccdp import api
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.gate import release
from ccdp.disclosure.policy import NodePolicy
from ccdp.wire.records import Records
from ccdp.wire.summary import CountsPart, Summary
from tests.storekit import build_store, random_registry

LARGE = (100, 120)  # the other cells: far from the threshold and from one another


def counts_part(counts: dict[str, int]) -> CountsPart:
    """One count by sex, each cell counting its own distinct records (keys 1..N)."""
    sizes = list(counts.values())
    keys = np.arange(1, sum(sizes) + 1, dtype=np.uint64)
    rows = np.repeat(np.arange(len(sizes)), sizes)
    return CountsPart(
        dims=["sex"],
        counts=["n"],
        cells=[{"sex": s, "n": n} for s, n in counts.items()],
        records=Records(keys, rows),
    )


def released(counts: dict[str, int], policy: NodePolicy) -> dict[str, Any]:
    """The released value of each cell (None: suppressed; a missing cell: withheld)."""
    checked = release(Summary({"c": counts_part(counts)}), DisclosureContext(policy))
    return {c["sex"]: c["n"] for c in checked.summary.parts["c"].cells}


@pytest.mark.parametrize("min_cell", [5, 3, 10])
def test_the_gate_suppresses_min_cell_minus_one_and_releases_min_cell(min_cell: int) -> None:
    policy = NodePolicy(counts="exact", min_cell=min_cell)
    below = {"female": min_cell - 1, "male": LARGE[0], "unknown": LARGE[1]}
    out = released(below, policy)
    assert out["female"] is None
    # the rest: suppressed to protect it (a complement) or released at its true value
    assert all(out[s] in (None, n) for s, n in below.items())
    assert sum(v is not None for v in out.values()) >= 1

    at = {"female": min_cell, "male": LARGE[0], "unknown": LARGE[1]}
    assert released(at, policy) == at  # nothing suppressed: every cell exact


def test_the_default_min_cell_is_five() -> None:
    """The case the issue names, under the policy's own default threshold."""
    policy = NodePolicy(counts="exact")
    assert policy.min_cell == 5
    assert released({"female": 4, "male": 100, "unknown": 120}, policy)["female"] is None
    assert released({"female": 5, "male": 100, "unknown": 120}, policy)["female"] == 5


def registry(female: int, n: int = 200) -> dict[str, list[dict[str, Any]]]:
    """A registry of n children, one tumour each: `female` girls, then boys and unknown sex
    (half of the rest each)."""
    reg = random_registry(5, n, "FR", "n")
    rest = (n - female) // 2
    for i, p in enumerate(reg["patient"]):
        p["sex"] = "female" if i < female else ("male" if i < female + rest else "unknown")
    return reg


def count_by_sex(store: Path) -> dict[str, Any]:
    res = api.run({"analysis": "count", "by": ["sex"]}, stores=[store])
    assert res.nodes[store.stem].status == "answered", res.nodes
    return {c["sex"]: c["n"] for c in res.result.cells} | {"total": res.result.total}


def test_a_store_suppresses_four_girls_and_releases_five(tmp_path: Path) -> None:
    """Real stores under the exact test policy (min_cell 5): four girls are suppressed, five
    are released as five, and everything released is the store's truth."""
    four = count_by_sex(build_store(tmp_path / "four.duckdb", registry(4)))
    assert four["female"] is None
    assert {k: v for k, v in four.items() if v is not None} == {"unknown": 98, "total": 200}

    five = count_by_sex(build_store(tmp_path / "five.duckdb", registry(5)))
    assert five == {"female": 5, "male": 97, "unknown": 98, "total": 200}


@pytest.mark.parametrize("female", range(0, 9))
def test_under_the_default_policy_no_published_count_lies_in_one_to_four(
    tmp_path: Path, female: int
) -> None:
    """The node's default policy (no policy file: perturbed counts, min_cell 5): whatever the
    true count of girls (0..8, the boundary on either side), no count, margin or total the
    node publishes, by sex or by sex and age group, is between 1 and 4."""
    store = build_store(tmp_path / f"g{female}.duckdb", registry(female, n=60), defaults=True)
    assert NodePolicy().counts == "perturbed" and NodePolicy().min_cell == 5
    published: list[int] = []
    for by in (["sex"], ["sex", "age_group"]):
        res = api.run({"analysis": "crosstab", "by": by}, stores=[store])
        assert res.nodes[store.stem].status == "answered", res.nodes
        assert res.result.method["counts"] == "perturbed"
        published += [c["n"] for c in res.result.cells if c["n"] is not None]
        if res.result.total is not None:
            published.append(res.result.total)
    assert published, "the node published nothing"
    assert [v for v in published if 1 <= v <= 4] == []
