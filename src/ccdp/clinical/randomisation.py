"""Trial randomisation: the trial spec and the two allocation methods, as pure functions of a
secret seed (docs/randomisation.md).

Every random choice is drawn from an HMAC-SHA256 stream keyed by the trial's seed and labelled by
what it decides (a block's size or order in one stratum, the n-th minimisation draw), so the whole
allocation sequence can be re-derived for audit from the seed and the order in which patients
(with their strata) came, and nothing else. The hub keeps the seed (federation/hub/trials.py).

- **Stratified permuted blocks**: each stratum (one combination of the strata's values) has its
  own sequence of blocks; block j's size is drawn from `block_sizes`, its order is a uniformly
  random permutation of `size / sum(ratio)` copies of the ratio's arms. Within a stratum, after
  any number of patients, arm a's count differs from its expected share by at most
  `max(block_sizes) / 2` (the test checks this at every point).
- **Minimisation** (Pocock and Simon, Biometrics 1975): for each arm, the imbalance the patient
  would cause is summed over the strata factors (the patient's level of each factor only: the
  marginal counts), counts divided by the arm's ratio share; the arm with the least imbalance is
  preferred and given with probability `p`, otherwise another arm is drawn (weighted by the
  ratio); ties are broken at random (weighted by the ratio).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ccdp.cohort.variables import check_variables
from ccdp.errors import SpecError
from ccdp.specfile import load_spec

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_ARMS = 10


class TrialSpec(BaseModel):
    """A trial's randomisation, as the admin writes it (YAML); refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME, description="Trial name (letters, digits, _ . -).")
    arms: list[str] = Field(min_length=2, max_length=MAX_ARMS)
    ratio: list[int] | None = Field(
        None, description="Allocation ratio, one positive integer per arm (default 1:1…)."
    )
    strata: list[str] = Field(
        default_factory=list,
        max_length=6,
        description="Stratification factors: categorical analysis-view variables.",
    )
    method: Literal["blocks", "minimisation"] = "blocks"
    block_sizes: list[int] | None = Field(
        None, description="blocks: sizes to draw from, multiples of the ratio's sum."
    )
    p: float = Field(
        0.8, gt=0.5, le=1.0, description="minimisation: probability of the preferred arm."
    )
    imbalance: Literal["range", "variance"] = Field(
        "range", description="minimisation: how one factor's imbalance is measured."
    )
    statisticians: list[str] = Field(
        default_factory=list,
        description="Users (role statistician) who may see the allocations; empty: every "
        "statistician of the hub.",
    )

    @field_validator("arms")
    @classmethod
    def _arms(cls, arms: list[str]) -> list[str]:
        for arm in arms:
            if not re.match(NAME, arm):
                raise ValueError(f"arm {arm[:40]!r} is not a name (letters, digits, _ . -)")
        if len(set(arms)) != len(arms):
            raise ValueError("an arm is named twice")
        return arms

    @field_validator("strata")
    @classmethod
    def _strata(cls, strata: list[str]) -> list[str]:
        return check_variables(strata, "group")

    @model_validator(mode="after")
    def _consistent(self) -> TrialSpec:
        ratio = self.ratio or [1] * len(self.arms)
        if len(ratio) != len(self.arms):
            raise ValueError(f"ratio has {len(ratio)} entries for {len(self.arms)} arms")
        if any(r < 1 or r > 20 for r in ratio):
            raise ValueError("ratio entries must be integers from 1 to 20")
        total = sum(ratio)
        if self.method == "blocks":
            sizes = self.block_sizes or [total * 2, total * 3]
            if not sizes or any(s < total or s % total or s > 100 for s in sizes):
                raise ValueError(
                    f"block_sizes must be multiples of the ratio's sum {total} (at most 100)"
                )
            if len(set(sizes)) != len(sizes):
                raise ValueError("a block size is given twice")
            object.__setattr__(self, "block_sizes", sizes)
        elif self.block_sizes is not None:
            raise ValueError("block_sizes is for method blocks, not minimisation")
        object.__setattr__(self, "ratio", ratio)
        return self

    @property
    def weights(self) -> list[int]:
        assert self.ratio is not None
        return self.ratio


def load_trial(source: Path | str | dict[str, Any]) -> TrialSpec:
    """A trial spec from a YAML/JSON file or a mapping; errors name the file and the key."""
    keys = "name, arms, strata, method"
    return load_spec(source, TrialSpec, "trial spec", keys, SpecError, count_more=True)


def new_seed() -> str:
    """A trial's secret seed: 256 bits from the OS's CSPRNG, as hex."""
    return secrets.token_hex(32)


class Stream:
    """Uniform draws from HMAC-SHA256(seed, label ‖ counter): deterministic, unpredictable
    without the seed, independent between labels."""

    def __init__(self, seed: str, *label: object) -> None:
        self._key = bytes.fromhex(seed)
        self._label = "\x1f".join(str(p) for p in label).encode("utf-8")
        self._i = 0

    def _word(self) -> int:
        msg = self._label + b"\x1e" + self._i.to_bytes(8, "big")
        self._i += 1
        return int.from_bytes(hmac.new(self._key, msg, hashlib.sha256).digest()[:8], "big")

    def below(self, n: int) -> int:
        """A uniform integer in [0, n) (rejection sampling: no modulo bias)."""
        if n < 1:
            raise ValueError("below() needs n >= 1")
        limit = (1 << 64) - (1 << 64) % n
        while True:
            w = self._word()
            if w < limit:
                return w % n

    def uniform(self) -> float:
        """A uniform float in [0, 1) (53 bits)."""
        return (self._word() >> 11) / float(1 << 53)

    def weighted(self, weights: Sequence[int]) -> int:
        """An index drawn with probability proportional to integer `weights`."""
        k = self.below(sum(weights))
        for i, w in enumerate(weights):
            if k < w:
                return i
            k -= w
        raise AssertionError("unreachable")


def stratum_key(spec: TrialSpec, strata: dict[str, str]) -> str:
    """The stratum a patient falls in: the strata's values in the spec's order."""
    return "|".join(f"{name}={strata[name]}" for name in spec.strata)


def _block(spec: TrialSpec, seed: str, stratum: str, j: int) -> list[int]:
    """Block j of a stratum: its size drawn from block_sizes, then a random permutation."""
    sizes = spec.block_sizes or []
    stream = Stream(seed, "block", stratum, j)
    size = sizes[stream.below(len(sizes))]
    reps = size // sum(spec.weights)
    cells = [a for a, w in enumerate(spec.weights) for _ in range(w * reps)]
    for i in range(len(cells) - 1, 0, -1):  # Fisher-Yates
        k = stream.below(i + 1)
        cells[i], cells[k] = cells[k], cells[i]
    return cells


def block_arm(spec: TrialSpec, seed: str, stratum: str, n: int) -> int:
    """The arm (index) of the n-th patient (0-based) of a stratum under permuted blocks."""
    j = 0
    while True:
        cells = _block(spec, seed, stratum, j)
        if n < len(cells):
            return cells[n]
        n -= len(cells)
        j += 1


def _spread(values: list[float], how: str) -> float:
    if how == "range":
        return max(values) - min(values)
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


@dataclass(frozen=True)
class Marginals:
    """Per factor, per level, per arm: how many patients minimisation has allocated."""

    counts: dict[tuple[str, str], list[int]]

    @classmethod
    def empty(cls) -> Marginals:
        return cls({})

    def of(self, factor: str, level: str, arms: int) -> list[int]:
        return self.counts.get((factor, level), [0] * arms)

    def add(self, strata: dict[str, str], arm: int, arms: int) -> None:
        for factor, level in strata.items():
            row = self.counts.setdefault((factor, level), [0] * arms)
            row[arm] += 1


def imbalance(spec: TrialSpec, strata: dict[str, str], marginals: Marginals) -> list[float]:
    """Per arm, the total imbalance if the patient were given that arm (Pocock and Simon's G):
    over the factors, the range or the (population) variance of the counts per arm of the
    patient's level, each count divided by its arm's ratio entry, the patient included."""
    arms, weights = len(spec.arms), spec.weights
    scores = []
    for a in range(arms):
        total = 0.0
        for factor in spec.strata:
            row = list(marginals.of(factor, strata[factor], arms))
            row[a] += 1
            total += _spread([c / w for c, w in zip(row, weights, strict=True)], spec.imbalance)
        scores.append(total)
    return scores


def minimisation_arm(
    spec: TrialSpec, seed: str, n: int, strata: dict[str, str], marginals: Marginals
) -> int:
    """The arm (index) of the trial's n-th patient (0-based) under minimisation, given the
    marginal counts of the patients before it."""
    arms, weights = len(spec.arms), spec.weights
    scores = imbalance(spec, strata, marginals)
    stream = Stream(seed, "minimisation", n)
    best = min(scores)
    tied = [a for a in range(arms) if abs(scores[a] - best) < 1e-12]
    preferred = tied[stream.weighted([weights[a] for a in tied])] if len(tied) > 1 else tied[0]
    if len(tied) == arms or stream.uniform() < spec.p:
        return preferred
    others = [a for a in range(arms) if a != preferred]
    return others[stream.weighted([weights[a] for a in others])]


def replay(spec: TrialSpec, seed: str, patients: Sequence[dict[str, str]]) -> list[str]:
    """The arms the trial gives `patients` (their strata, in order of randomisation): what the
    hub did, re-derived from the seed alone (the audit check)."""
    out: list[str] = []
    seen: dict[str, int] = {}
    marginals = Marginals.empty()
    for n, strata in enumerate(patients):
        if spec.method == "blocks":
            key = stratum_key(spec, strata)
            arm = block_arm(spec, seed, key, seen.get(key, 0))
            seen[key] = seen.get(key, 0) + 1
        else:
            arm = minimisation_arm(spec, seed, n, strata, marginals)
            marginals.add({f: strata[f] for f in spec.strata}, arm, len(spec.arms))
        out.append(spec.arms[arm])
    return out
