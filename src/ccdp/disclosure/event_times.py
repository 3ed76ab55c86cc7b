"""Grouped event times: no released time belongs to fewer than `min_cell` children, and no event
is placed where none happened.

An event-time table with one row per distinct time tells, for a small group, each child's exact
time; with the censoring date known, that is each child's diagnosis date. So before a node sums
its table, `group_intervals` cuts each group's sorted distinct times into consecutive intervals
holding at least `min_cell` subjects leaving the risk set (events and censorings), and says of
each subject only the interval it left in: (start, end], where `end` is the interval's last time
and `start` the end of the group's previous interval (0 for the first). An interval of one
distinct time is exact: start == end, its subjects all left at that time.

This is grouped (interval) data, as in a life table: the release says "d died and c were
censored in (start, end]", which is true, and never moves an event to a time inside the interval
where it may not have happened (the old rule released the interval's mean time). Estimates use
the methods for grouped times with the events at the interval's end (`group_times`): the
product-limit estimate with steps only at interval ends (Kalbfleisch & Prentice 2002, §1.3 and
§4.6 on grouped data), Mantel's log-rank for grouped data (Mantel 1966), Cox with Efron's or
Breslow's handling of the ties at the interval end (Kalbfleisch & Prentice §4.2.3). The start is
no new information: it is the end the group's previous row already released.

Everything is vectorised over the (group, distinct time) blocks; the greedy cut (close an
interval as soon as it holds min_cell subjects) is a pointer chain that is followed by pointer
doubling, O(B log B) for B blocks, with no Python loop per subject or per time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ccdp.disclosure.ledger import Ledger

LEDGER_PASSES = 4  # merges of refused intervals re-checked this many times at most


def group_times(
    group: np.ndarray,
    time: np.ndarray,
    keys: np.ndarray,
    min_cell: int,
    step: float,
    ledger: Ledger | None = None,
    threshold: int = 0,
) -> np.ndarray:
    """Each subject's time replaced by the end of its interval (see the module and
    `group_intervals`, whose arguments these are): grouped times with the events at the end."""
    return group_intervals(group, time, keys, min_cell, step, ledger, threshold)[1]


def group_intervals(
    group: np.ndarray,
    time: np.ndarray,
    keys: np.ndarray,
    min_cell: int,
    step: float,
    ledger: Ledger | None = None,
    threshold: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each subject's interval (start, end] (see the module); start == end where exact.

    `group` labels the subjects' groups (intervals never cross groups), `time` their times on
    the node's grid of `step` days, `keys` their ledger keys (one per subject). A group with
    fewer than `min_cell` subjects keeps its times (the gate withholds it). Intervals whose key
    set the ledger refuses (it differs from a released set by 1 to threshold - 1 keys) are merged
    with the next interval of their group (the previous one for the last) and checked again.
    """
    time = np.asarray(time, dtype=float)
    keys = np.asarray(keys, dtype=np.uint64)
    if time.ndim != 1 or len(group) != len(time) or len(keys) != len(time):
        raise ValueError("group_times: group, time and keys must be 1-D arrays of one length")
    if min_cell < 1 or step <= 0:
        raise ValueError("group_times: min_cell must be >= 1 and step > 0")
    if len(time) == 0 or (min_cell == 1 and (ledger is None or threshold <= 1)):
        return time.copy(), time.copy()
    codes = pd.factorize(np.asarray(group), sort=False)[0].astype(np.int64)
    order = np.lexsort((time, codes))
    c, t = codes[order], time[order]
    new = np.ones(len(t), dtype=bool)
    new[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
    starts = np.flatnonzero(new)
    block = np.cumsum(new) - 1  # block of each sorted subject
    cuts = _greedy_cuts(c[starts], np.diff(np.append(starts, len(t))), min_cell)
    if ledger is not None and threshold > 1 and len(ledger):
        cuts = _ledger_merge(cuts, c[starts], block, keys[order], ledger, threshold)
    interval = np.concatenate([[0], np.cumsum(cuts)[:-1]])[block]  # interval of each subject
    low, high = _bounds(interval, c, t)
    start, end = np.empty_like(time), np.empty_like(time)
    start[order], end[order] = low[interval], high[interval]
    return start, end


def _greedy_cuts(bgroup: np.ndarray, count: np.ndarray, min_cell: int) -> np.ndarray:
    """Per block (sorted by group then time): True where an interval ends.

    Greedy within each group: an interval closes at the first block that brings it to
    `min_cell` subjects; a tail short of `min_cell` joins the interval before. Groups with fewer
    than `min_cell` subjects keep one interval per block (their times unchanged)."""
    nb = len(count)
    total = np.cumsum(count)  # subjects up to and including each block (all groups)
    gnew = np.ones(nb, dtype=bool)
    gnew[1:] = bgroup[1:] != bgroup[:-1]
    gfirst = np.flatnonzero(gnew)
    glast = np.append(gfirst[1:], nb) - 1
    gid = np.cumsum(gnew) - 1
    end = glast[gid]  # last block of each block's group
    # next cut after a cut at b: first block whose running total reaches total[b] + min_cell
    nxt = np.searchsorted(total, total + min_cell, side="left")
    nxt = np.where(nxt <= end, nxt, nb)  # nb: the sentinel, "no further cut in this group"
    before = total[gfirst] - count[gfirst]
    first = np.searchsorted(total, before + min_cell, side="left")
    small = first > glast  # groups with fewer than min_cell subjects
    on_chain = _reachable(np.append(nxt, nb), first[~small], nb)
    cut = on_chain[:nb]
    # the last cut of each grouped group moves to the group's last block (tail merged back)
    cut_idx = np.flatnonzero(cut)
    if cut_idx.size:
        cut[cut_idx[np.append(gid[cut_idx][1:] != gid[cut_idx][:-1], True)]] = False
    cut[glast[~small]] = True
    cut[_blocks_of(gfirst, glast, small)] = True
    return cut


def _blocks_of(gfirst: np.ndarray, glast: np.ndarray, small: np.ndarray) -> np.ndarray:
    """Indices of every block of the small groups (each its own interval)."""
    if not small.any():
        return np.zeros(0, dtype=np.int64)
    lo, hi = gfirst[small], glast[small] + 1
    lengths = hi - lo
    return np.repeat(lo - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())


def _reachable(parent: np.ndarray, sources: np.ndarray, sentinel: int) -> np.ndarray:
    """Mask of the nodes on the pointer chains from `sources` (parent[i] > i, or the sentinel,
    which points to itself). Pointer doubling: with jumps of 2^k for k = K..0, the set
    {s} grows by its 2^k-th ancestors at each level, so after all levels it holds every
    j-th ancestor for j < 2^(K+1): each level costs the size of the set, and the jump tables
    O(n) each, log2(n) of them."""
    jumps = [parent]
    n = len(parent)
    while (1 << len(jumps)) <= n and not np.all(jumps[-1] == sentinel):
        jumps.append(jumps[-1][jumps[-1]])
    current = np.unique(sources)
    for up in reversed(jumps):
        current = np.union1d(current, up[current])
    mask = np.zeros(n, dtype=bool)
    mask[current] = True
    mask[sentinel] = False
    return mask


def _ledger_merge(
    cuts: np.ndarray,
    bgroup: np.ndarray,
    block: np.ndarray,
    skeys: np.ndarray,
    ledger: Ledger,
    threshold: int,
) -> np.ndarray:
    """Cuts after merging intervals whose key sets the ledger refuses, re-checked after each
    pass: a refused interval loses its end cut (joins the next), the last interval of a group
    loses the cut before it (joins the previous); a group's only interval stays as it is."""
    cuts = cuts.copy()
    for _ in range(LEDGER_PASSES):
        interval_of_block = np.concatenate([[0], np.cumsum(cuts)[:-1]])
        subject_interval = interval_of_block[block]
        sets = _key_sets(subject_interval, skeys, int(cuts.sum()))
        refused = ledger.refused(sets, threshold)
        if not refused.any():
            break
        ends = np.flatnonzero(cuts)  # end block of each interval
        igroup = bgroup[ends]
        last = np.append(igroup[1:] != igroup[:-1], True)
        only = last & np.insert(igroup[1:] != igroup[:-1], 0, True)
        drop = ends[refused & ~last]
        prev = np.flatnonzero(refused & last & ~only) - 1
        cuts[drop] = False
        cuts[ends[prev]] = False
    return cuts


def _key_sets(interval: np.ndarray, keys: np.ndarray, n: int) -> list[np.ndarray]:
    """Sorted distinct keys of each interval."""
    order = np.lexsort((keys, interval))
    iv, k = interval[order], keys[order]
    bounds = np.searchsorted(iv, np.arange(n + 1))
    return [np.unique(k[bounds[i] : bounds[i + 1]]) for i in range(n)]


def _bounds(interval: np.ndarray, c: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per interval (subjects sorted by group then time, so each interval is a run): its start
    (the end of the group's previous interval, 0 for the first; the end itself where the
    interval holds one distinct time) and its end (its last time)."""
    n = int(interval[-1]) + 1
    size = np.bincount(interval, minlength=n)
    bounds = np.append(0, np.cumsum(size))
    first, last = t[bounds[:-1]], t[bounds[1:] - 1]
    group = c[bounds[:-1]]
    start = np.zeros(n)
    same = np.append(False, group[1:] == group[:-1])
    start[same] = last[:-1][same[1:]]
    start = np.where(first == last, last, start)
    return start, last


__all__ = ["group_intervals", "group_times"]
