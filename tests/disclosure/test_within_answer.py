"""The gate compares an answer's own cells in memory (`gate._Kept`); its decisions are the
ledger's (`Ledger.refused`, then `record` of what is kept), set after set."""

from __future__ import annotations

import numpy as np

from ccdp.disclosure.gate import _Kept
from ccdp.disclosure.ledger import Ledger, as_set


def _family(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Sets near one another (a few keys added or taken), equal ones, and far ones; some keys
    with the top bits set, so the sketch's buckets differ."""
    base = rng.integers(0, 2**64 - 1, size=40, dtype=np.uint64)
    out: list[np.ndarray] = []
    for _ in range(n):
        kind = rng.integers(0, 4)
        if kind == 0 and out:
            out.append(out[rng.integers(0, len(out))].copy())  # the very same set again
            continue
        if kind == 1:
            out.append(
                as_set(rng.integers(0, 2**64 - 1, size=rng.integers(1, 60), dtype=np.uint64))
            )
            continue
        keep = base[rng.random(base.size) > rng.random() * 0.2]
        extra = rng.integers(0, 2**64 - 1, size=rng.integers(0, 4), dtype=np.uint64)
        out.append(as_set(np.concatenate([keep, extra])))
    return out


def test_the_answers_own_check_decides_as_the_ledger_does():
    rng = np.random.default_rng(27)
    decided = 0
    for trial in range(200):
        threshold = int(rng.integers(1, 8))
        sets = _family(rng, int(rng.integers(2, 25)))
        ledger, kept = Ledger(), _Kept()
        for members in sets:
            by_ledger = bool(ledger.refused([members], threshold)[0])
            assert kept.refused(members, threshold) == by_ledger, (trial, threshold)
            if not by_ledger:
                ledger.record([members], {})
                kept.keep(members)
            decided += by_ledger
        ledger.close()
    assert decided > 50  # the rule was exercised, not only passed
