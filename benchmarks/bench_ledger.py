"""Cost of the differencing ledger: a count answered by a node with 1,000 earlier releases.

    python benchmarks/bench_ledger.py --tumours 200000 --releases 1000

One node store (the rows of bench_federated). The ledger is filled with `--releases` earlier
count releases (each a `count by [iccc_group, sex]` over a random diagnosis-year range and
subset of groups, the cells' record sets written as the node would), then a new count study is
answered by `LocalNode.answer`, median of `--repeat` runs:

* with the ledger: every cell, margin and total checked against every earlier released set
  (each repeat asks a cohort not asked before, so every set is new and checked in full);
* baseline, same run: the same answers from a copy of the store and its ledger with
  `differencing_threshold: 0` (no check; the sets are still recorded).

Also times the ledger check alone for the new answer's sets, and reports the ledger's size.

`--numbering KEYS` instead times the key numbering alone, at catalogue scale, with no store:

    python benchmarks/bench_ledger.py --numbering 4000000 --set-size 50000

records sets of `--set-size` keys (a fifth of each set's keys already recorded, the rest new)
until `KEYS` keys are numbered, one `Ledger.record` call per `--per-call` sets, and reports CPU
time and wall for all, for the first and the last tenth of the sets (a numbering whose cost grows
with the keys so far shows as a last tenth dearer than the first) and the ledger file's size.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from bench_federated import GROUPS, make_rows, timed, write_store
from rich.progress import track

from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.ledger import Ledger, as_set, ledger_path
from ccdp.federation.node.local import KEY_COLUMNS, LocalNode
from ccdp.wire.protocol import Task
from ccdp.wire.records import ledger_keys


def fill(store: Path, releases: int, rng: np.random.Generator) -> int:
    """Record `releases` earlier count releases in the node's ledger; returns the sets kept."""
    node = LocalNode(store)
    view = node.read_view(["iccc_group", "sex", "diagnosis_year", *KEY_COLUMNS], CohortSpec())
    keys = ledger_keys(view.patient_id, view.tumour_id, view.tumour_seq == 1, "tumours")
    ledger = Ledger(ledger_path(store))
    year = view.diagnosis_year.to_numpy()
    group = view.iccc_group.to_numpy()
    sex = view.sex.to_numpy()
    kept = 0
    for i in track(range(releases), description="earlier releases"):
        a, b = sorted(rng.integers(2005, 2020, 2))
        chosen = rng.choice(GROUPS, size=int(rng.integers(1, len(GROUPS) + 1)), replace=False)
        inside = (year >= a) & (year <= b) & np.isin(group, chosen)
        sets = [as_set(keys[inside])]
        for g in chosen:
            for s in ("male", "female"):
                sets.append(as_set(keys[inside & (group == g) & (sex == s)]))
        kept += ledger.record(sets, {"study_id": f"earlier-{i}"})
    ledger.close()
    return kept


def answer(node: LocalNode, i: int) -> float:
    """Seconds for one count answer through the gate, on a cohort that starts `i` weeks into
    2006 (the node object lives on, as in a node agent)."""
    start = date(2006, 1, 1) + timedelta(weeks=i)
    task = Task(
        task_id=f"t{i}",
        study_id=f"s{i}",
        round=0,
        analysis="count",
        params={"by": ["iccc_group", "sex"]},
        cohort={"diagnosis_date": {"from": str(start), "to": "2017-12-31"}},
    )
    t = time.perf_counter()
    out = node.answer(task)
    elapsed = time.perf_counter() - t
    assert out.status == "answered", out.reason
    return elapsed


def numbering(total: int, set_size: int, per_call: int) -> None:
    """Record many large sets into a fresh ledger file; print the costs (see the docstring)."""
    rng = np.random.default_rng(5)
    tmp = Path(tempfile.mkdtemp(prefix="ccdp-bench-numbering-"))
    ledger = Ledger(tmp / "n.ledger.db")
    pool = rng.integers(1, 2**64 - 1, size=total, dtype=np.uint64, endpoint=True)
    old = set_size // 5
    calls = max(1, (total - old) // ((set_size - old) * per_call))
    cpu, wall, used = [], [], old
    for _ in track(range(calls), description="numbering"):
        sets = []
        for _ in range(per_call):
            fresh = pool[used : used + set_size - old]
            seen = pool[rng.integers(0, used, size=old)] if used else pool[:0]
            sets.append(as_set(np.concatenate([fresh, seen])))
            used += set_size - old
        c, w = time.process_time(), time.perf_counter()
        ledger.record(sets, {"study_id": f"s{used}"})
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    ledger.close()
    tenth = max(1, calls // 10)
    size = (tmp / "n.ledger.db").stat().st_size
    print(f"keys={used:,} sets={calls * per_call:,} of {set_size:,} keys, {per_call} a call")
    print(f"all: CPU {sum(cpu):.1f} s, wall {sum(wall):.1f} s")
    for name, part in (("first", slice(None, tenth)), ("last", slice(-tenth, None))):
        c, w = sum(cpu[part]), sum(wall[part])
        print(f"{name} tenth ({tenth} calls): CPU {c:.2f} s, wall {w:.2f} s")
    print(f"ledger file {size / 2**20:.1f} MiB")
    shutil.rmtree(tmp, ignore_errors=True)


POLICY = "min_cell: 5\ncounts: exact\nexact_release: any\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tumours", type=int, default=200_000)
    ap.add_argument("--releases", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--numbering", type=int, default=0, help="time key numbering of this many keys")
    ap.add_argument("--set-size", type=int, default=50_000)
    ap.add_argument("--per-call", type=int, default=1)
    args = ap.parse_args()
    if args.numbering:
        numbering(args.numbering, args.set_size, args.per_call)
        return
    rng = np.random.default_rng(3)
    tmp = Path(tempfile.mkdtemp(prefix="ccdp-bench-ledger-"))
    store = write_store(tmp / "node.duckdb", [make_rows(args.tumours, "FR", "n", rng)])
    # the ledger is checked only under exact counts: the policy says so (not the defaults)
    store.with_name("node.policy.yaml").write_text(POLICY)
    t_fill = time.perf_counter()
    kept = fill(store, args.releases, rng)
    t_fill = time.perf_counter() - t_fill
    size = ledger_path(store).stat().st_size
    base = tmp / "base.duckdb"
    shutil.copy(store, base)
    shutil.copy(ledger_path(store), ledger_path(base))
    base.with_name("base.policy.yaml").write_text(POLICY + "differencing_threshold: 0\n")

    nodes = LocalNode(store), LocalNode(base)
    answer(nodes[0], -1), answer(nodes[1], -1)  # warm: the ledger's key numbering is read once
    with_ledger, without = [], []
    for i in range(args.repeat):  # interleaved, so both see the same machine load
        with_ledger.append(answer(nodes[0], i))
        without.append(answer(nodes[1], i))
    t_ledger, t_base = float(np.median(with_ledger)), float(np.median(without))

    node = LocalNode(store)
    view = node.read_view(["iccc_group", "sex", *KEY_COLUMNS], CohortSpec())
    keys = ledger_keys(view.patient_id, view.tumour_id, view.tumour_seq == 1, "tumours")
    sets = [as_set(keys[(view.iccc_group == g).to_numpy()]) for g in GROUPS]
    ledger = Ledger(ledger_path(store))
    t_check, _ = timed(lambda: ledger.refused(sets, 5), args.repeat)
    print(f"tumours={args.tumours:,} earlier releases={args.releases} ({kept:,} sets kept)")
    print(f"ledger filled in {t_fill:.1f} s; ledger file {size / 2**20:.1f} MiB")
    print(f"count answer with the ledger: {t_ledger:.3f} s")
    print(f"count answer without (differencing_threshold 0): {t_base:.3f} s")
    print(f"ledger check alone, {len(sets)} sets: {t_check * 1000:.1f} ms")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
