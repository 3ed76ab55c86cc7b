"""Matching encodings across registries: blocking, Dice comparison, one-to-one assignment, groups.

Blocking is MinHash LSH with one-permutation hashing (Li, Owen and Zhang 2012): the filter's bits
are permuted, cut into 16-bit bins, and each bin's value is its first set bit; two filters share a
bin's value with probability close to their Jaccard similarity. A band is `band_bins` bins; records
that agree on a whole band in any band are compared. Dice (2·|A∧B| / (|A| + |B|)) is computed on
64-bit words with `np.bitwise_count`. The assignment is greedy by score (what anonlink solves),
done in rounds of mutually best pairs, which picks exactly the greedy edges without a Python loop
over pairs. Encodings of a segmented schema are compared segment by segment instead: each
candidate pair's per-segment Dice, cut into agreement levels, is weighed by Fellegi-Sunter
weights fitted by EM on the run's candidate pairs (`weights.py`), and a pair links when its match
probability reaches the threshold. Across more than two registries the one-to-one links of every
pair of registries are merged, best score first, into groups that never hold two records of one
registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ccdp.linkage import weights
from ccdp.linkage.encode import Encodings
from ccdp.linkage.schema import Layout, LinkageError

_BIN = 16
_PAIR_CHUNK = 1 << 20


@dataclass(frozen=True)
class Blocking:
    """MinHash-LSH settings: `permutations` × bits/16 bins, each permutation's cut into bands of
    `band_bins` (the leftover bins unused); a bucket larger than `max_bucket` (filters with almost
    no bits, say) is not expanded into pairs, and more than `max_pairs` candidate pairs are
    refused rather than allowed to exhaust memory. More bins per band: fewer candidate pairs,
    lower recall of weak matches; dense encodings (balanced: half the bits set) need more."""

    permutations: int = 4
    band_bins: int = 5
    max_bucket: int = 2_000
    max_pairs: int = 100_000_000
    seed: int = 20_260_101


def _first_set_bit_table() -> np.ndarray:
    """Index (0-15) of the first set bit of a 16-bit big-endian word, 16 when it is empty."""
    w = np.arange(1 << _BIN, dtype=np.uint32)
    out = np.full(1 << _BIN, _BIN, dtype=np.uint8)
    for b in range(_BIN - 1, -1, -1):  # lowest index wins: written last
        out[(w >> np.uint32(_BIN - 1 - b)) & 1 == 1] = b
    return out


_FIRST_SET = _first_set_bit_table()


def _byte_orders(block: np.ndarray, blocking: Blocking, segmented: bool) -> list[np.ndarray]:
    """The byte permutations of the bytes blocking reads: as they lie first, then seeded random
    orders. Segmented encodings get random orders only: as they lie, a band's bins would all
    fall in one segment, and every pair of children with the same given name would share it."""
    rng = np.random.Generator(np.random.PCG64(blocking.seed))
    n = len(block)
    first = [] if segmented else [block]
    rest = blocking.permutations - len(first)
    return first + [block[rng.permutation(n)] for _ in range(rest)]


def _block_bytes(enc: Encodings) -> np.ndarray:
    """The bytes of the segments blocking reads (every byte without a layout)."""
    if enc.layout is None:
        return np.arange(enc.bits // 8)
    spans = [np.arange(8 * a, 8 * b) for (a, b), on in zip(enc.layout.words, enc.layout.block,
                                                           strict=True) if on]  # fmt: skip
    return np.concatenate(spans) if spans else np.arange(enc.bits // 8)


def minhash_bins(enc: Encodings, order: np.ndarray) -> np.ndarray:
    """n × bits/16 bin values (uint8, 0-16) of one-permutation MinHash under one byte order.

    The permutations move whole bytes: a filter's bit positions are already keyed hashes, so any
    fixed order of them is as good as a random one, and a byte gather costs an eighth of a bit
    gather."""
    return _FIRST_SET[np.ascontiguousarray(enc.packed[:, order]).view(">u2")]


def candidate_pairs(
    encodings: list[Encodings], blocking: Blocking = Blocking()
) -> tuple[np.ndarray, np.ndarray]:
    """Global indices (i < j) of record pairs from different registries that share a band.
    Records are numbered registry after registry, in the order given. One permutation's bins
    are held at a time (n × bits/16 bytes), and the pairs found are deduplicated as they come."""
    _same_length(encodings)
    reg = np.concatenate([np.full(len(e), k, dtype=np.int32) for k, e in enumerate(encodings)])
    n = len(reg)
    weights = (_BIN + 1) ** np.arange(blocking.band_bins, dtype=np.int64)
    ids = np.zeros(0, np.int64)
    layout = encodings[0].layout
    segmented = layout is not None and layout.segmented
    for order in _byte_orders(_block_bytes(encodings[0]), blocking, segmented):
        bins = np.concatenate([minhash_bins(e, order) for e in encodings])
        found = [ids]
        for lo in range(0, bins.shape[1] - blocking.band_bins + 1, blocking.band_bins):
            key = bins[:, lo : lo + blocking.band_bins].astype(np.int64) @ weights
            found.append(_bucket_pairs(key, reg, n, blocking.max_bucket))
            if sum(len(f) for f in found) > 2 * blocking.max_pairs:
                _too_loose(blocking)
        ids = _distinct(np.concatenate(found))
        if len(ids) > blocking.max_pairs:
            _too_loose(blocking)
    return ids // n, ids % n


def _too_loose(blocking: Blocking) -> None:
    raise LinkageError(
        f"blocking too loose: over {blocking.max_pairs} candidate pairs; raise band_bins "
        f"(now {blocking.band_bins}) for encodings this dense"
    )


def _distinct(ids: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort and a diff: faster than np.unique's hash on pair ids)."""
    ids.sort()
    return ids[np.concatenate([[True], ids[1:] != ids[:-1]])] if len(ids) else ids


def _bucket_pairs(key: np.ndarray, reg: np.ndarray, n: int, max_bucket: int) -> np.ndarray:
    """Pair ids (i·n + j, i < j) of records with equal keys and different registries."""
    order = np.argsort(key, kind="stable")
    k = key[order]
    new_bucket = np.concatenate([[True], k[1:] != k[:-1]])
    starts = np.flatnonzero(new_bucket)
    ends = np.append(starts[1:], len(k))
    size = ends - starts
    keep = (size > 1) & (size <= max_bucket)
    if not keep.any():
        return np.zeros(0, np.int64)
    bucket_of = np.cumsum(new_bucket) - 1
    member = np.flatnonzero(keep[bucket_of])  # sorted positions in kept buckets
    end_of = ends[bucket_of[member]]
    later = end_of - member - 1  # partners after it in its bucket
    left = np.repeat(member, later)
    first = np.cumsum(later) - later
    right = left + 1 + (np.arange(len(left)) - np.repeat(first, later))
    a, b = order[left], order[right]
    cross = reg[a] != reg[b]
    a, b = a[cross], b[cross]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo.astype(np.int64) * n + hi


def dice(a: Encodings, i: np.ndarray, b: Encodings, j: np.ndarray) -> np.ndarray:
    """Dice coefficient of record pairs (a[i], b[j]), vectorised; 0 when both are empty."""
    wa, wb = a.words, b.words
    out = np.empty(len(i), dtype=np.float64)
    for lo in range(0, len(i), _PAIR_CHUNK):
        ii, jj = i[lo : lo + _PAIR_CHUNK], j[lo : lo + _PAIR_CHUNK]
        common = np.bitwise_count(wa[ii] & wb[jj]).sum(axis=1, dtype=np.int64)
        total = a.popcount[ii].astype(np.int64) + b.popcount[jj]
        out[lo : lo + _PAIR_CHUNK] = np.where(total > 0, 2 * common / np.maximum(total, 1), 0.0)
    return out


def dice_matrix(a: Encodings, b: Encodings) -> np.ndarray:
    """Every pair's Dice coefficient (len(a) × len(b)); for small sets and for checking."""
    i, j = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
    return dice(a, i.ravel(), b, j.ravel()).reshape(len(a), len(b))


def greedy_one_to_one(u: np.ndarray, v: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of the edges that greedy-by-score matching keeps (each node in at most one kept
    edge; ties broken by edge order). Done in rounds: an edge best for both its ends is exactly
    an edge greedy keeps, so each round keeps all of them and drops the edges they block."""
    order = np.lexsort((np.arange(len(score)), -score))
    rank = np.empty(len(score), dtype=np.int64)
    rank[order] = np.arange(len(score))
    nodes, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    a, b = inv[: len(u)], inv[len(u) :]
    alive = np.ones(len(score), dtype=bool)
    used = np.zeros(len(nodes), dtype=bool)
    kept: list[np.ndarray] = []
    while alive.any():
        e = np.flatnonzero(alive)
        best = np.full(len(nodes), np.iinfo(np.int64).max)
        np.minimum.at(best, a[e], rank[e])
        np.minimum.at(best, b[e], rank[e])
        win = e[(best[a[e]] == rank[e]) & (best[b[e]] == rank[e])]
        kept.append(win)
        used[a[win]] = used[b[win]] = True
        alive[e] = ~(used[a[e]] | used[b[e]])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)


def segment_levels(
    enc: Encodings, i: np.ndarray, j: np.ndarray, layout: Layout
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Each pair's pattern code (its agreement level in every segment, as `weights.strides`
    combines them), its Dice over the whole filter, and the number of levels per segment. A
    segment where either record sets no bit gets the last level ("missing")."""
    w = enc.words
    pops = np.stack([np.bitwise_count(w[:, a:b]).sum(axis=1, dtype=np.int32)
                     for a, b in layout.words], axis=1)  # fmt: skip
    levels = [len(c) + 2 for c in layout.cuts]
    stride = weights.strides(levels)
    code = np.zeros(len(i), dtype=np.int32)
    whole = np.zeros(len(i), dtype=np.float32)
    step = max(1, _PAIR_CHUNK * 16 // max(w.shape[1], 1))
    for lo in range(0, len(i), step):
        ii, jj = i[lo : lo + step], j[lo : lo + step]
        both = np.bitwise_count(w[ii] & w[jj])
        common_all = np.zeros(len(ii), dtype=np.int64)
        for s, (a, b) in enumerate(layout.words):
            common = both[:, a:b].sum(axis=1, dtype=np.int64)
            common_all += common
            pa, pb = pops[ii, s], pops[jj, s]
            sim = 2 * common / np.maximum(pa + pb, 1)
            lv = np.searchsorted(np.asarray(layout.cuts[s]), sim, side="right")
            lv[(pa == 0) | (pb == 0)] = levels[s] - 1
            code[lo : lo + step] += (lv * stride[s]).astype(np.int32)
        total = enc.popcount[ii].astype(np.int64) + enc.popcount[jj]
        whole[lo : lo + step] = 2 * common_all / np.maximum(total, 1)
    return code, whole, levels


def score_pairs(
    enc: Encodings, i: np.ndarray, j: np.ndarray, threshold: float, layout: Layout | None
) -> tuple[np.ndarray, np.ndarray]:
    """(which pairs reach the threshold, their score). Without segments: Dice against the
    threshold. With them: the Fellegi-Sunter match probability (EM on these pairs) against the
    threshold, scored by the match weight, ties of weight broken by the whole filter's Dice."""
    if layout is None or not layout.segmented:
        score = dice(enc, i, enc, j)
        return score >= threshold, score
    code, whole, levels = segment_levels(enc, i, j, layout)
    counts = np.bincount(code, minlength=int(np.prod(levels)))
    model = weights.fit(counts, levels, layout.m, layout.joint)
    return model.probability[code] >= threshold, model.weights[code] + 1e-3 * whole


def match_pairs(
    a: Encodings, b: Encodings, threshold: float = 0.8, blocking: Blocking = Blocking()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one links between two registries: (rows of a, rows of b, score), best first. The
    score is the Dice, or for segmented encodings the match weight."""
    gi, gj = candidate_pairs([a, b], blocking)
    whole = _concat([a, b])
    keep, score = score_pairs(whole, gi, gj, threshold, whole.layout)
    i, j = gi, gj - len(a)
    i, j, score = i[keep], j[keep], score[keep]
    won = greedy_one_to_one(i, j + len(a), score)
    order = won[np.argsort(-score[won], kind="stable")]
    return i[order], j[order], score[order]


def link(
    encodings: dict[str, Encodings],
    threshold: float = 0.8,
    blocking: Blocking = Blocking(),
    rng: np.random.Generator | None = None,
    layout: Layout | None = None,
) -> dict[str, np.ndarray]:
    """Link-group ids per registry (one int64 per record, in the registry's order). Records that
    are the same child share an id; a group holds at most one record per registry; ids are a
    random relabelling, so they say nothing about which registry or record came first.
    `threshold` is a Dice for one-segment encodings and a match probability for segmented ones;
    `layout` is the schema's (default: the one the encodings carry; none: a plain Dice)."""
    names = list(encodings)
    encs = [encodings[k] for k in names]
    if not encs:
        return {}
    if layout is not None:
        encs = [Encodings(e.packed, e.popcount, e.bits, layout) for e in encs]
    links = link_edges(encs, threshold, blocking)
    sizes = [len(e) for e in encs]
    reg = np.concatenate([np.full(s, k, dtype=np.int64) for k, s in enumerate(sizes)])
    root = _groups(reg, *links)
    _, labels = np.unique(root, return_inverse=True)
    rng = rng if rng is not None else np.random.default_rng()
    labels = rng.permutation(labels.max() + 1 if len(labels) else 0)[labels]
    bounds = np.cumsum([0, *sizes])
    return {k: labels[bounds[n] : bounds[n + 1]].astype(np.int64) for n, k in enumerate(names)}


def link_edges(
    encs: list[Encodings], threshold: float, blocking: Blocking
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one links between every pair of registries: (global i, global j, score)."""
    gi, gj = candidate_pairs(encs, blocking)
    whole = _concat(encs)
    keep, score = score_pairs(whole, gi, gj, threshold, whole.layout)
    gi, gj, score = gi[keep], gj[keep], score[keep]
    reg = np.concatenate([np.full(len(e), k, dtype=np.int64) for k, e in enumerate(encs)])
    r = len(encs)
    won = greedy_one_to_one(gi * r + reg[gj], gj * r + reg[gi], score)  # one per (record, other)
    return gi[won], gj[won], score[won]


def _groups(reg: np.ndarray, gi: np.ndarray, gj: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Union of links, best first, refusing a merge that would put two records of one registry
    in a group; each record's group root."""
    parent = np.arange(len(reg))
    members: dict[int, int] = {}  # root -> bit mask of its registries

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    for k in np.argsort(-score, kind="stable").tolist():
        a, b = find(int(gi[k])), find(int(gj[k]))
        if a == b:
            continue
        ma = members.get(a, 1 << int(reg[a]))
        mb = members.get(b, 1 << int(reg[b]))
        if ma & mb:
            continue
        parent[b] = a
        members[a] = ma | mb
    return np.array([find(x) for x in range(len(reg))], dtype=np.int64)


def _concat(encs: list[Encodings]) -> Encodings:
    _same_length(encs)
    return Encodings(
        np.concatenate([e.packed for e in encs]),
        np.concatenate([e.popcount for e in encs]),
        encs[0].bits,
        encs[0].layout,
    )


def _same_length(encs: list[Encodings]) -> None:
    if len({e.bits for e in encs}) > 1:
        raise LinkageError("encodings of different lengths cannot be compared: schemas differ")
    if len({e.layout for e in encs}) > 1:
        raise LinkageError("encodings laid out in different segments cannot be compared")
