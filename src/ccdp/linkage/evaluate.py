"""Linkage quality against a known truth: the pairs that link-group ids imply, precision and recall.
Used by the tests and the benchmark; pure functions over ids."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

Pair = frozenset[str]


def linked_pairs(groups: Mapping[str, np.ndarray], ids: Mapping[str, Iterable[str]]) -> set[Pair]:
    """Every pair of record ids (across registries) that share a link-group id."""
    by_group: dict[int, list[str]] = {}
    for reg, g in groups.items():
        for gid, rid in zip(g.tolist(), ids[reg], strict=True):
            by_group.setdefault(gid, []).append(rid)
    out: set[Pair] = set()
    for members in by_group.values():
        for k, a in enumerate(members):
            out.update(frozenset((a, b)) for b in members[k + 1 :])
    return out


def precision_recall(found: set[Pair], truth: set[Pair]) -> tuple[float, float]:
    """(precision, recall) of found pairs against true pairs (1.0 when there is nothing to find
    or nothing was found)."""
    hit = len(found & truth)
    return (hit / len(found) if found else 1.0, hit / len(truth) if truth else 1.0)
