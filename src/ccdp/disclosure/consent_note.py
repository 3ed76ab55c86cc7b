"""The counts a node adds to an answer as a note: how many children their consent excluded, how
many a survival analysis left out because their follow-up is missing, how many linked duplicates
`dedup` set aside. Each is one count cell."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.perturb import cell_keys, perturb_counts

CONSENT_NOTE = "consent: patients of this cohort excluded by their consent (DUO)"
FOLLOWUP_HEAD = "follow-up: patients of this cohort left out because their follow-up is missing"
SET_ASIDE_HEAD = "dedup: linked duplicates of this cohort set aside (counted at another node)"
WITHHELD = "withheld (a small count, or too close to an earlier release)"


def release_excluded(
    members: np.ndarray, ctx: DisclosureContext, head: str = CONSENT_NOTE
) -> tuple[str, list[np.ndarray]]:
    """The note `head: n` saying how many of the cohort's patients were left out (by their
    consent under a project's data use, or for a missing follow-up), judged as one count cell:
    1 to min_cell - 1 (and zero under `zero_cells: suppress`) is withheld, as is a set within
    the differencing threshold of an earlier release (the same children counted with and
    without a data use must not be told apart). Returns the note and the set to record with
    the answer (empty when the count is withheld or zero). In the feasibility tier
    (`ctx.perturbs`) the count is published perturbed by the cell-key method instead, as every
    count of that tier is: nothing is withheld because of the data."""
    policy, n = ctx.policy, int(members.size)
    if ctx.perturbs:  # the feasibility tier: perturbed like its other counts, never withheld
        key = cell_keys([np.unique(members)], ctx.salt)
        shown = int(perturb_counts(np.array([n]), key, policy.noise, policy.min_cell)[0])
        return f"{head}: {shown} (perturbed, ±{policy.noise})", []
    # one wording for both reasons: which rule withheld it would bound the count
    withheld = f"{head}: {WITHHELD}"
    if n == 0:
        return (withheld, []) if policy.zero_cells == "suppress" else (f"{head}: 0", [])
    if n < policy.min_cell or ctx.ledger.refused([members], ctx.threshold)[0]:
        return withheld, []
    return f"{head}: {n}", [members]


@dataclass(frozen=True)
class NoteCount:
    """A note's count as the node released it: `n` (None when withheld) and how."""

    n: int | None
    released: Literal["exact", "perturbed", "withheld"]
    noise: int | None = None

    def text(self) -> str:
        """'6', '7 (perturbed, ±2)' or 'withheld (a small count, ...)'."""
        if self.released == "withheld":
            return WITHHELD
        return f"{self.n}" + (
            f" (perturbed, ±{self.noise})" if self.released == "perturbed" else ""
        )


_COUNT = re.compile(r"^(\d+)(?: \(perturbed, ±(\d+)\))?$")


def read_note(reason: str | None, head: str) -> NoteCount | None:
    """The count a node's answer (`reason`: its notes joined by '; ') gives under `head`, as
    `release_excluded` wrote it; None when the answer has no such note."""
    for part in (reason or "").split("; "):
        if not part.startswith(f"{head}: "):
            continue
        value = part[len(head) + 2 :]
        if value == WITHHELD:
            return NoteCount(None, "withheld")
        m = _COUNT.match(value)
        if m is None:
            return None
        noise = int(m.group(2)) if m.group(2) else None
        return NoteCount(int(m.group(1)), "perturbed" if noise is not None else "exact", noise)
    return None
