"""Cell-key perturbation of counts (`disclosure.perturb`, policy `counts: perturbed`).

The properties issue 28 asks of the method (same set, same value; |noise| <= D; zero stays
zero; no value in 1..min_cell - 1; zero mean), the ONS `cell-key-perturbation` package as the
reference for the published cells, the gate's behaviour under the policy, and the three-way
differencing attack of issue 28 run against both `counts: exact` and `counts: perturbed`.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.context import TEST_CELL_KEY_SALT, DisclosureContext, node_cell_key_salt
from ccdp.disclosure.gate import release
from ccdp.disclosure.ledger import Ledger
from ccdp.disclosure.perturb import (
    KEY_SPACE,
    cap,
    cell_keys,
    perturb_counts,
    ptable,
    record_keys,
    residual_bias,
)
from ccdp.disclosure.policy import NodePolicy, PolicyError, set_policy_value
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.node.local import LocalNode
from ccdp.federation.study import run_study
from ccdp.store.config import update_node_config
from ccdp.wire.protocol import Task
from ccdp.wire.records import Records
from ccdp.wire.summary import CountsPart, Summary
from tests.storekit import add_specimens, build_store, random_registry, specimen_truth

SETTINGS = [(4, 5), (5, 5), (9, 10), (3, 3), (2, 1), (0, 1), (7, 5)]
PERTURBED = NodePolicy(counts="perturbed")


# -- the ptable ------------------------------------------------------------------------------
@pytest.mark.parametrize(("noise", "min_cell"), SETTINGS)
def test_the_table_keeps_zero_bounds_the_noise_and_skips_small_values(
    noise: int, min_cell: int
) -> None:
    table = ptable(noise, min_cell)
    assert table.shape == (cap(noise, min_cell) + 1, KEY_SPACE)
    published = np.arange(table.shape[0])[:, None] + table
    assert (table[0] == 0).all()
    assert (np.abs(table) <= noise).all()
    assert not ((published >= 1) & (published < min_cell)).any()
    # counts at and above the cap use the cap row: every outcome c - D..c + D, symmetric
    assert sorted(table[-1]) == sorted(-table[-1])
    assert set(table[-1]) == set(range(-noise, noise + 1))


@pytest.mark.parametrize(("noise", "min_cell"), SETTINGS)
def test_the_table_has_zero_mean_noise_up_to_integer_slots(noise: int, min_cell: int) -> None:
    """Exact zero mean where 256 slots allow it; where they do not (a count of 1 has only two
    outcomes, 0 and min_cell, whose weights (min_cell - 1)/min_cell and 1/min_cell are not
    multiples of 1/256), at most max(1, min_cell - 1)/256 of a record."""
    bias = residual_bias(noise, min_cell)
    assert np.abs(bias).max() <= max(1, min_cell - 1) / KEY_SPACE
    assert (bias[min_cell + 1 :] == 0).all()
    assert abs(residual_bias(4, 5)[1]) == 1 / KEY_SPACE  # the one residual at the default


def test_the_table_is_built_once_and_cannot_be_changed() -> None:
    assert ptable(4, 5) is ptable(4, 5)
    with pytest.raises(ValueError):
        ptable(4, 5)[3, 3] = 0


def test_a_noise_smaller_than_min_cell_minus_one_is_refused() -> None:
    with pytest.raises(ValueError, match="min_cell - 1"):
        ptable(3, 5)
    with pytest.raises(ValueError, match="max_noise"):
        NodePolicy(counts="perturbed", min_cell=10, max_noise=4)
    assert NodePolicy(min_cell=10).noise == 9  # unset: the smallest bound that works
    assert NodePolicy(min_cell=10, max_noise=12).noise == 12


def test_the_policy_key_is_set_and_checked_like_any_other(tmp_path: Path) -> None:
    store = tmp_path / "n.duckdb"
    assert set_policy_value(store, "counts", "perturbed").counts == "perturbed"
    with pytest.raises(PolicyError, match="counts"):
        set_policy_value(store, "counts", "rounded")
    with pytest.raises(PolicyError, match="max_noise"):
        set_policy_value(store, "max_noise", "2")
    set_policy_value(store, "counts", "exact")
    with pytest.raises(PolicyError, match="max_noise"):  # checked whatever `counts` says
        set_policy_value(store, "max_noise", "2")


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 2000), min_size=1, max_size=50),
    seed=st.integers(0, 2**32 - 1),
    setting=st.sampled_from(SETTINGS),
)
def test_perturbed_counts_keep_every_promise(counts: list[int], seed: int, setting) -> None:
    noise, min_cell = setting
    keys = np.random.default_rng(seed).integers(0, KEY_SPACE, size=len(counts))
    c = np.array(counts)
    out = perturb_counts(c, keys, noise, min_cell)
    assert (np.abs(out - c) <= noise).all()
    assert ((out == 0) | (out >= min_cell)).all()
    assert (out[c == 0] == 0).all()
    assert (out == perturb_counts(c, keys, noise, min_cell)).all()


def test_mean_noise_is_near_zero_over_many_random_cells() -> None:
    """For each count, 20,000 cells with random sets of records (so random cell keys): the
    mean noise is within 0.1 of 0. The noise of one cell has a standard deviation of at most
    about 2.4 (D = 4), so the mean of 20,000 has one of 0.017 and 0.1 is six of them: a real
    bias of a tenth of a record would show, chance alone would not."""
    rng = np.random.default_rng(5)
    n = 20_000
    for c in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50, 1000]:
        sets = [rng.integers(0, 2**63, size=c, dtype=np.uint64) for _ in range(n)]
        noise = perturb_counts(np.full(n, c), cell_keys(sets, 99), 4, 5) - c
        assert abs(noise.mean()) < 0.1, (c, noise.mean())


# -- record and cell keys --------------------------------------------------------------------
def test_the_same_set_gets_the_same_key_and_another_set_another() -> None:
    rng = np.random.default_rng(1)
    members = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    others = [rng.integers(0, 2**63, size=40, dtype=np.uint64) for _ in range(200)]
    key = cell_keys([members], 7)[0]
    assert cell_keys([members[::-1].copy()], 7)[0] == key  # order does not matter
    keys = cell_keys(others, 7)
    assert len(set(keys.tolist())) > 100  # sets of the same size: keys spread over 0..255
    values = perturb_counts(np.full(200, 40), keys, 4, 5)
    assert len(set(values.tolist())) == 9  # and so do their published values (36..44)


def test_record_keys_depend_on_the_node_salt() -> None:
    ledger = np.random.default_rng(2).integers(0, 2**63, size=1000, dtype=np.uint64)
    a, b = record_keys(ledger, 1), record_keys(ledger, 2)
    assert ((a >= 0) & (a < KEY_SPACE)).all()
    assert (a != b).mean() > 0.9  # without the salt, a researcher cannot compute them


def test_the_node_salt_comes_from_its_pseudonymisation_key(tmp_path: Path) -> None:
    store = tmp_path / "n.duckdb"
    update_node_config(store, pseudonym_key="ab" * 32)
    salt = node_cell_key_salt(store)
    assert salt == node_cell_key_salt(store)
    update_node_config(tmp_path / "m.duckdb", pseudonym_key="cd" * 32)
    assert node_cell_key_salt(tmp_path / "m.duckdb") != salt
    # the node's ledger sits beside its store: the context finds the salt there
    ledger = Ledger(tmp_path / "n.ledger.db")
    assert DisclosureContext(PERTURBED, ledger).salt == salt
    ledger.close()
    assert DisclosureContext(PERTURBED).salt == TEST_CELL_KEY_SALT


# -- the gate --------------------------------------------------------------------------------
def table(seed: int, n: int = 300, levels: int = 6) -> tuple[CountsPart, CountsPart]:
    """A count table over `levels` levels with a few small cells, and its total, as an
    analysis builds them (cells with their node-side record sets)."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    p = np.array([0.5, 0.3, 0.1, 0.05, 0.03, 0.02][:levels])
    row = rng.choice(levels, size=n, p=p / p.sum())
    present = np.unique(row)
    position = np.searchsorted(present, row)
    cells = [{"g": f"L{int(v)}", "n": int((row == v).sum())} for v in present]
    part = CountsPart(["g"], ["n"], cells, records=Records(keys, position))
    total = CountsPart([], ["n"], [{"n": n}], records=Records.single(keys))
    return part, total


def test_the_gate_perturbs_every_cell_and_total_and_suppresses_nothing() -> None:
    part, total = table(3, n=200)
    truth = {c["g"]: c["n"] for c in part.cells}
    assert min(truth.values()) < 5  # a small cell, that exact counts would suppress
    checked = release(Summary({"cells": part, "total": total}), DisclosureContext(PERTURBED))
    cells = checked.summary.counts("cells")
    assert cells.noise == 4 and checked.summary.counts("total").noise == 4
    for cell in cells.cells:
        assert cell["n"] is not None and (cell["n"] == 0 or cell["n"] >= 5)
        assert abs(cell["n"] - truth[cell["g"]]) <= 4
    # a cell published as 0 is not listed, as a cell with no records is not
    assert {c["g"] for c in cells.cells} <= set(truth)
    assert abs(checked.summary.counts("total").cells[0]["n"] - 200) <= 4
    assert any("perturbed" in note and "±4" in note for note in checked.notes)
    assert "suppressed" not in " ".join(checked.notes)
    wire = checked.summary.to_dict()
    assert wire["cells"]["noise"] == 4
    assert Summary.from_dict(wire).counts("cells").noise == 4


def test_exact_counts_stay_exact_and_say_nothing_of_noise() -> None:
    part, total = table(3, n=200)
    exact = DisclosureContext(NodePolicy(counts="exact"))
    checked = release(Summary({"cells": part, "total": total}), exact)
    assert checked.summary.counts("cells").noise == 0
    assert "noise" not in checked.summary.to_dict()["cells"]  # the wire is as before
    assert checked.summary.counts("total").cells[0]["n"] == 200


def test_the_same_question_gets_the_same_answer() -> None:
    part, total = table(4)
    ctx = DisclosureContext(PERTURBED)
    first = release(Summary({"cells": part, "total": total}), ctx)
    again = release(Summary({"cells": part, "total": total}), ctx)
    assert first.summary.to_dict() == again.summary.to_dict()


def test_no_decision_depends_on_the_data() -> None:
    """A cohort below min_cohort and a set one record away from an earlier release are both
    answered: refusing them would say something about the data (the denial oracle)."""
    rng = np.random.default_rng(8)
    keys = rng.integers(0, 2**63, size=60, dtype=np.uint64)
    ctx = DisclosureContext(PERTURBED)

    def total(k: np.ndarray) -> Summary:
        return Summary({"t": CountsPart([], ["n"], [{"n": len(k)}], records=Records.single(k))})

    first = release(total(keys), ctx)
    ctx.ledger.record(first.sets, {})
    minus_one = release(total(keys[1:]), ctx)  # exact counts would suppress it
    assert minus_one.summary.counts("t").cells[0]["n"] is not None
    tiny = release(total(keys[:3]), ctx)  # below min_cohort: exact counts refuse
    assert tiny.summary.counts("t").cells[0]["n"] in (0, 5, 6, 7)


def test_zero_cells_suppress_hides_a_total_published_as_zero() -> None:
    keys = np.random.default_rng(9).integers(0, 2**63, size=2, dtype=np.uint64)
    policy = NodePolicy(counts="perturbed", zero_cells="suppress")
    found = set()
    for salt in range(40):  # a count of 2 goes to 0 for most keys
        part = CountsPart([], ["n"], [{"n": 2}], records=Records.single(keys))
        out = release(Summary({"t": part}), DisclosureContext(policy, cell_key_salt=salt))
        found.add(out.summary.counts("t").cells[0]["n"])
    assert None in found and 0 not in found and found - {None} <= {5, 6}


def test_specimens_are_keyed_by_their_children_and_their_samples_perturbed() -> None:
    """The cell key is that of the children a cell's samples come from: the same children
    give the same key whatever samples they add or lose, so a child's new sample moves the
    published value only as the true count moves along one ptable column, and no published
    number of samples lies in 1..min_cell - 1."""
    rng = np.random.default_rng(10)
    children = rng.integers(0, 2**63, size=12, dtype=np.uint64)
    owners = np.repeat(children, 3)
    samples = rng.integers(0, 2**63, size=len(owners), dtype=np.uint64)

    def part(keep: np.ndarray) -> CountsPart:
        records = Records(samples[keep], np.zeros(int(keep.sum()), np.int64), owners[keep], True)
        return CountsPart([], ["n"], [{"n": int(keep.sum())}], records=records)

    everything = np.ones(len(owners), dtype=bool)
    fewer = everything.copy()
    fewer[1] = False  # the first child gives one sample fewer
    ctx = DisclosureContext(PERTURBED)
    a = release(Summary({"s": part(everything)}), ctx).summary.counts("s").cells[0]["n"]
    b = release(Summary({"s": part(fewer)}), ctx).summary.counts("s").cells[0]["n"]
    key = cell_keys([np.unique(children)], ctx.salt)[0]
    table = ptable(4, 5)
    assert a == 36 + table[min(36, len(table) - 1), key]
    assert b == 35 + table[min(35, len(table) - 1), key]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    levels=st.integers(1, 6),
    salt=st.integers(0, 2**64 - 1),
)
def test_every_released_count_keeps_the_promises(seed: int, n: int, levels: int, salt: int):
    """Random tables through the gate: within D of the truth, never 1..min_cell - 1, no cell
    withheld, and the same answer when asked again."""
    part, total = table(seed, n=n, levels=levels)
    truth = {c["g"]: c["n"] for c in part.cells}
    ctx = DisclosureContext(PERTURBED, cell_key_salt=salt)
    checked = release(Summary({"cells": part, "total": total}), ctx)
    for cell in checked.summary.counts("cells").cells:
        assert cell["n"] >= 5 and abs(cell["n"] - truth[cell["g"]]) <= 4
    published = checked.summary.counts("total").cells[0]["n"]
    assert (published == 0 or published >= 5) and abs(published - n) <= 4
    again = release(Summary({"cells": part, "total": total}), ctx)
    assert again.summary.to_dict() == checked.summary.to_dict()


# -- the ONS package as the reference ---------------------------------------------------------
def ons_ptable(noise: int, min_cell: int) -> pd.DataFrame:
    """Our ptable in the ONS package's format: a row per (pcv, ckey) with its pvalue, pcv
    1..750 (the package reads rows 501..750 again, cyclically, for counts above 750; every row
    from our cap on has the cap's noise, so that reading gives ours)."""
    table = ptable(noise, min_cell)
    pcv = np.repeat(np.arange(1, 751), KEY_SPACE)
    ckey = np.tile(np.arange(KEY_SPACE), 750)
    pvalue = table[np.minimum(pcv, table.shape[0] - 1), ckey]
    return pd.DataFrame({"pcv": pcv, "ckey": ckey, "pvalue": pvalue})


@pytest.mark.parametrize(("noise", "min_cell", "seed"), [(4, 5, 0), (9, 10, 1), (5, 5, 2)])
def test_the_published_cells_are_those_of_the_ons_package(
    noise: int, min_cell: int, seed: int
) -> None:
    """The same record keys and the same ptable give the same published cells through
    `cell_key_perturbation.create_perturbed_table` as through our gate. Differences, by
    design: the package's `threshold` turns counts below it into NA (we pass 0: our table
    itself never publishes 1..min_cell - 1); it lists cells published as 0, which we leave out
    like cells with no records; its counts above 750 reuse rows 501..750 cyclically, ours the
    cap row (identical here, as the converted table shows)."""
    ons = pytest.importorskip("cell_key_perturbation.create_perturbed_table")
    rng = np.random.default_rng(seed)
    n = 4000
    ledger = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    frame = pd.DataFrame(
        {
            "a": rng.choice(["x", "y", "z"], size=n, p=[0.8, 0.19, 0.01]),
            "b": rng.choice([f"b{i}" for i in range(12)], size=n, p=[0.6] + [0.4 / 11] * 11),
        }
    )
    salt = 4242
    frame["record_key"] = record_keys(ledger, salt)
    expected = ons.create_perturbed_table(
        data=frame,
        ptable=ons_ptable(noise, min_cell),
        geog=[],
        tab_vars=["a", "b"],
        record_key="record_key",
        threshold=0,
    )
    expected = expected[expected["pre_sdc_count"] > 0]
    assert expected["pre_sdc_count"].max() > 750 and expected["pre_sdc_count"].min() < min_cell

    codes = frame.groupby(["a", "b"]).ngroup().to_numpy()
    labels = frame.groupby(["a", "b"]).size().reset_index(name="n")
    cells = [{"a": r.a, "b": r.b, "n": int(r.n)} for r in labels.itertuples()]
    part = CountsPart(["a", "b"], ["n"], cells, records=Records(ledger, codes))
    policy = NodePolicy(counts="perturbed", max_noise=noise, min_cell=min_cell)
    ours = release(Summary({"c": part}), DisclosureContext(policy, cell_key_salt=salt))
    published = {(c["a"], c["b"]): c["n"] for c in ours.summary.counts("c").cells}
    theirs = {(r.a, r.b): int(r.count) for r in expected.itertuples()}
    assert published == {k: v for k, v in theirs.items() if v != 0}
    assert any(v == 0 for v in theirs.values())  # small cells published as 0 by both


# -- through a node, and pooled at the hub ----------------------------------------------------
@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("perturbed")
    out = []
    for i, country in enumerate(["FR", "DE"]):
        path = build_store(folder / f"{country}.duckdb", random_registry(i, 700, country, country))
        update_node_config(path, pseudonym_key=f"{i + 1:02x}" * 32)
        out.append(path)
    return out


def test_a_federated_count_says_it_is_perturbed_and_by_how_much(stores: list[Path]) -> None:
    nodes = [LocalNode(s, policy=PERTURBED) for s in stores]
    spec = {"analysis": "crosstab", "by": ["sex", "iccc_group"]}
    res = run_study(spec, InProcessTransport(nodes))
    assert res.result is not None
    assert res.result.method == {
        "counts": "perturbed",
        "max_noise": 4,
        "pooled_max_noise": 8,
        "perturbed_nodes": 2,
    }
    assert abs(res.result.total - 1400) <= 8
    assert all("perturbed" in (s.reason or "") for s in res.nodes.values())
    assert not res.result.suppressed_cells
    again = run_study(spec, InProcessTransport(nodes))
    assert again.result.model_dump() == res.result.model_dump()  # same sets, same answer
    exact = run_study(spec, InProcessTransport(stores))
    assert exact.result is not None and exact.result.method == {"counts": "exact"}
    assert exact.result.total == 1400
    assert "perturbed" in res.model_dump_json() and "±8" in _printed(res)
    from ccdp.report.html import caption

    assert "±8" in caption(res.result) and caption(exact.result) == ""


def _printed(res) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(res.result)
    return console.export_text()


def test_specimen_counts_through_a_node_are_the_stores_samples_within_d(tmp_path: Path):
    rows = add_specimens(random_registry(20, 500, "FR", "FR"), seed=40)
    store = build_store(tmp_path / "FR.duckdb", rows)
    node = LocalNode(store, policy=PERTURBED)
    spec = {"analysis": "count", "by": ["specimen_type"], "unit": "specimens"}
    res = run_study(spec, InProcessTransport([node]))
    truth = specimen_truth(store, ["s.type AS type"]).set_index("type")
    assert res.result is not None and res.result.method["counts"] == "perturbed"
    for cell in res.result.cells:
        assert abs(cell["n"] - int(truth.loc[cell["specimen_type"], "n"])) <= 4
        assert cell["n"] >= 5
    assert abs(res.result.total - int(truth["n"].sum())) <= 4


# -- the attack of issue 28 -------------------------------------------------------------------
def _count(node: LocalNode, i: int, start: date, end: date) -> dict[str, int]:
    """Tumours by vital_status diagnosed in [start, end] (a zero where a status is absent)."""
    task = Task(
        task_id=f"q{i}",
        study_id=f"attack{i}",
        round=0,
        analysis="count",
        params={"by": ["vital_status"]},
        cohort={"diagnosis_date": {"from": str(start), "to": str(end)}},
        request={},
    )
    answer = node.answer(task)
    out = {"alive": 0, "dead": 0}
    if answer.status != "answered" or answer.summary is None:
        return {"alive": -1, "dead": -1}  # refused: the attacker learns nothing from it
    for cell in answer.summary["cells"]["cells"]:
        out[cell["vital_status"]] = -1 if cell["n"] is None else cell["n"]
    return out


FAR = 40


def three_way_attack(node: LocalNode, truth: pd.DataFrame, targets: list[date], seed: int):
    """For each day p with one child diagnosed on it: A = [p - L, p], B = [p, p + R],
    C = [p - L, p + R] by vital_status, with fresh L, R in 150..400 days; A + B - C is the
    children of day p. The attacker keeps each window FAR days away from every earlier one (in
    start plus end), so that the pairwise ledger rarely sees two close sets, and where it still
    withholds a cell tries fresh L, R (up to 4 triples a child), as issue 28 did. The guess is
    the status whose difference is larger (no guess on a tie). The windows depend on the seed
    and the targets only, so both arms ask the same questions. Returns (correct guesses,
    guesses, queries)."""
    rng = np.random.default_rng(seed)
    used: list[tuple[int, int]] = []
    correct = guesses = queries = 0

    def far(*windows: tuple[int, int]) -> bool:
        return all(abs(a - c) + abs(b - d) >= FAR for a, b in windows for c, d in used)

    for i, p in enumerate(targets):
        day = p.toordinal()
        for attempt in range(4):
            for _ in range(500):
                lo, hi = int(rng.integers(150, 401)), int(rng.integers(150, 401))
                windows = [(day - lo, day), (day, day + hi), (day - lo, day + hi)]
                if far(*windows):
                    break
            else:
                break  # no fresh windows left around this day: the attacker moves on
            used += windows
            found = [
                _count(node, 12 * i + 3 * attempt + j, date.fromordinal(a), date.fromordinal(b))
                for j, (a, b) in enumerate(windows)
            ]
            queries += 3
            if any(-1 in f.values() for f in found):
                continue  # a cell withheld: fresh windows
            a, b, c = found
            diff = {v: a[v] + b[v] - c[v] for v in ("alive", "dead")}
            if diff["alive"] != diff["dead"]:
                guess = max(diff, key=lambda v: diff[v])
                actual = truth.loc[truth.diagnosis_date == pd.Timestamp(p), "vital_status"]
                guesses += 1
                correct += guess == actual.iloc[0]
            break
    return correct, guesses, queries


def test_perturbed_counts_defeat_the_three_way_differencing_attack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 28, item 1: against `counts: exact` the attack learns every target child's vital
    status (it must: else this test would not test an attack); against `counts: perturbed` its
    guesses are near a coin's. The targets are balanced (half of them dead), so chance is 1/2.
    Each guess combines six perturbed counts whose noise has a standard deviation of about
    sqrt(6 x 4) = 4.9 around a true difference of 1, so a guess is right with probability
    about 0.6 (the residual a single triple leaves; averaging many fresh triples of one child
    recovers more, the residual risk in docs/disclosure.md). The run is deterministic (fixed
    node keys); with about 57 guesses the bound 0.75 is over two standard errors above 0.6.
    That arm measures the noise alone (the tier's field restriction switched off); the tier
    itself (noise and declared fields) refuses the attack's first day-level window."""
    rows = random_registry(21, 1500, "FR", "FR", years=(2005, 2009))
    exact_store = build_store(tmp_path / "exact.duckdb", rows)
    update_node_config(exact_store, pseudonym_key="5a" * 32)
    perturbed_store = tmp_path / "perturbed.duckdb"
    shutil.copy(exact_store, perturbed_store)
    update_node_config(perturbed_store, pseudonym_key="5a" * 32)

    exact = LocalNode(exact_store)
    truth = exact.read_view(None, CohortSpec())
    per_day = truth.groupby("diagnosis_date").size()
    single = truth[truth.diagnosis_date.isin(per_day[per_day == 1].index)]
    inner = (single.diagnosis_date >= "2006-02-01") & (single.diagnosis_date <= "2008-11-30")
    single = single[inner]  # windows of up to 400 days stay within the registry's years
    days = {
        status: sorted(single.loc[single.vital_status == status, "diagnosis_date"])
        for status in ("alive", "dead")
    }
    rng = np.random.default_rng(3)
    targets = [
        pd.Timestamp(d).date()
        for status in ("alive", "dead")
        for d in rng.choice(np.array(days[status], dtype=object), size=30, replace=False)
    ]
    rng.shuffle(targets)

    right, tried, queries = three_way_attack(exact, truth, targets, seed=1)
    assert tried >= 50 and right == tried  # today: every child's status, with certainty
    exact_rate = 1000 * right / queries

    perturbed = LocalNode(perturbed_store, policy=PERTURBED)
    with monkeypatch.context() as m:  # the noise alone, without the tier's declared fields
        m.setattr(LocalNode, "_check_feasibility", staticmethod(lambda *a: None))
        right_p, tried_p, queries_p = three_way_attack(perturbed, truth, targets, seed=1)
    assert tried_p >= 50
    assert right_p / tried_p < 0.75, (right_p, tried_p)
    beyond = 1000 * max(right_p - tried_p / 2, 0) / queries_p
    print(
        f"\nexact: {right}/{tried} right, {exact_rate:.0f} children per 1,000 queries; "
        f"perturbed: {right_p}/{tried_p} right ({right_p / tried_p:.2f}), "
        f"{beyond:.0f} beyond chance per 1,000 queries, none certain"
    )

    # the tier as a node runs it: a day-level window is not a declared band, refused unread
    first = Task(
        task_id="tier",
        study_id="tier",
        round=0,
        analysis="count",
        params={"by": ["vital_status"]},
        cohort={"diagnosis_date": {"from": "2006-03-01", "to": "2006-09-01"}},
        request={},
    )
    refused = perturbed.answer(first)
    assert refused.status == "refused" and refused.summary is None
    assert "feasibility" in str(refused.reason) and "diagnosis_date" in str(refused.reason)
    assert three_way_attack(perturbed, truth, targets[:5], seed=1)[1] == 0  # no guess at all


def test_under_the_default_policy_only_the_feasibility_tier_is_perturbed() -> None:
    """Counts of a feasibility release are perturbed; the same counts in a registered study, or
    in another analysis's release (reviewed), are exact."""
    part, total = table(3, n=200)
    summary = Summary({"cells": part, "total": total})
    assert release(summary, DisclosureContext()).summary.counts("cells").noise == 4
    for ctx in (DisclosureContext(registered=True), DisclosureContext(feasibility=False)):
        checked = release(summary, ctx)
        assert checked.summary.counts("cells").noise == 0
        assert checked.summary.counts("total").cells[0]["n"] == 200
