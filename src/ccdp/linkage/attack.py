"""The adversary the hardening is measured against: a frequency / pattern-mining attack on the
encodings (after Christen, Ranbaduge, Vatsalan and Schnell 2018, "Precise and fast
cryptanalysis for Bloom filter based privacy-preserving record linkage"), by someone who holds a
registry's encodings, knows the schema (Kerckhoffs) and a public list of names with their
frequencies, but not the secret.

1. Bit positions set by one frequent q-gram rise and fall together across records: positions are
   grouped, most frequent first, with every position whose co-occurrence with the group's seed is
   at least `tau` of the larger of the two frequencies.
2. Groups are aligned with the public list's q-grams by frequency (the assignment that minimises
   the gap in log frequency).
3. Each record's name is guessed as the public name whose q-grams best agree with the aligned
   groups the record sets and does not set.

Salting with the birth year splits every q-gram's bits into one group per year, each too rare to
stand out from the noise of the others, and the frequencies no longer line up with the list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ccdp.linkage.encode import Encodings, tokens


@dataclass(frozen=True)
class AttackResult:
    """How many records' names the attack guessed, and how many of those guesses were right."""

    records: int
    guessed: int
    correct: int
    groups_found: int

    @property
    def precision(self) -> float:
        return self.correct / self.guessed if self.guessed else 0.0

    @property
    def recall(self) -> float:
        """The re-identification rate: records whose name was guessed right."""
        return self.correct / self.records if self.records else 0.0

    @property
    def f_measure(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def bit_groups(
    enc: Encodings, k: int, tau: float = 0.45, min_share: float = 0.01
) -> list[np.ndarray]:
    """Groups of bit positions that co-occur like one q-gram's k bits, most frequent first."""
    x = np.unpackbits(enc.packed, axis=1).astype(np.float32)
    freq = x.sum(axis=0)
    co = x.T @ x
    free = np.ones(x.shape[1], dtype=bool)
    groups: list[np.ndarray] = []
    for p in np.argsort(-freq, kind="stable"):
        if not free[p] or freq[p] < min_share * len(x):
            continue
        members = np.flatnonzero(free & (co[p] >= tau * np.maximum(freq[p], freq)))
        if len(members) >= max(2, k // 2):
            groups.append(members)
            free[members] = False
    return groups


@dataclass(frozen=True)
class NameField:
    """One encoded name field as the attack sees it: the attacker's public list (normalised names
    and their weights) and, only to score the guesses, each record's true normalised name."""

    true_names: np.ndarray
    public_names: np.ndarray
    public_weights: np.ndarray


def frequency_attack(
    enc: Encodings, fields: list[NameField], k: int, tau: float = 0.45
) -> list[AttackResult]:
    """Run the attack on the name fields encoded in `enc` (each with its own key, as the schema
    says); one result per field."""
    groups = bit_groups(enc, k, tau)
    if not groups:
        return [AttackResult(len(enc), 0, 0, 0) for _ in fields]
    dense = np.unpackbits(enc.packed, axis=1).astype(bool)
    present = np.column_stack([dense[:, g].mean(axis=1) > 0.5 for g in groups])
    publics = [_public_grams(f.public_names, f.public_weights) for f in fields]
    joint = _public_joint(publics)
    offsets = np.cumsum([0] + [len(p[1]) for p in publics])
    top = np.argsort(-np.diag(joint))[: 2 * len(groups)]
    aligned = _align(present.T.astype(np.float64) @ present / len(present), joint[np.ix_(top, top)])
    aligned = {g: int(top[t]) for g, t in aligned.items()}
    out = []
    for fi, f in enumerate(fields):
        mine = {
            g: t - offsets[fi] for g, t in aligned.items() if offsets[fi] <= t < offsets[fi + 1]
        }
        out.append(_guess(present, mine, publics[fi][2], f, len(groups)))
    return out


def _align(seen: np.ndarray, known: np.ndarray, rounds: int = 8) -> dict[int, int]:
    """Groups -> grams: first by frequency alone, then refined as a graph matching: a group and a
    gram fit when their co-occurrence with the groups and grams already paired agree."""
    f_seen, f_known = np.diag(seen), np.diag(known)
    base = np.abs(f_seen[:, None] - f_known[None, :])
    gi, tj = linear_sum_assignment(base)
    for _ in range(rounds):
        mapped = known[:, tj]  # grams × groups, through the current pairing
        cost = base + np.abs(seen[:, gi][:, None, :] - mapped[None, :, :]).sum(axis=2)
        gi_new, tj_new = linear_sum_assignment(cost)
        if np.array_equal(tj_new, tj):
            break
        gi, tj = gi_new, tj_new
    return {int(g): int(t) for g, t in zip(gi, tj, strict=True)}


def _public_joint(
    publics: list[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Share of people with both grams, for every pair of grams of every field (fields
    independent of each other)."""
    shares = np.concatenate([p[1] for p in publics])
    joint = np.outer(shares, shares)
    lo = 0
    for _, share, inc, w in publics:
        hi = lo + len(share)
        joint[lo:hi, lo:hi] = (inc.T * w) @ inc
        lo = hi
    return joint


def _guess(
    present: np.ndarray, mine: dict[int, int], incidence: np.ndarray, f: NameField, n_groups: int
) -> AttackResult:
    """Guess each record's name from the groups aligned with this field's grams."""
    n = len(present)
    if not mine:
        return AttackResult(n, 0, 0, n_groups)
    cols = np.array(sorted(mine))
    name_has = (incidence[:, [mine[c] for c in cols]] > 0).astype(np.int16) * 2 - 1
    rec = present[:, cols].astype(np.int16) * 2 - 1
    score = rec @ name_has.T  # records × public names: +1 per agreeing gram, -1 per disagreeing
    best = score.max(axis=1)
    unique = (score == best[:, None]).sum(axis=1) == 1
    guess = f.public_names[np.argmax(score, axis=1)]
    guessed = unique & present[:, cols].any(axis=1)
    correct = guessed & (guess == f.true_names)
    return AttackResult(n, int(guessed.sum()), int(correct.sum()), n_groups)


def _public_grams(
    names: np.ndarray, weights: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Bigrams of the public list, the share of people whose name has each, and a names × bigrams
    incidence matrix."""
    vocab: dict[str, int] = {}
    rows = [[vocab.setdefault(t, len(vocab)) for t in set(tokens(str(n), "name"))] for n in names]
    inc = np.zeros((len(names), len(vocab)), dtype=np.float64)
    for i, r in enumerate(rows):
        inc[i, r] = 1.0
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    return list(vocab), w @ inc, inc, w
