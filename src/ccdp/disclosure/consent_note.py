"""The counts a node adds to an answer as a note: how many children their consent excluded, how
many a survival analysis left out because their follow-up is missing. Each is one count cell."""

from __future__ import annotations

import numpy as np

from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.perturb import cell_keys, perturb_counts

CONSENT_NOTE = "consent: patients of this cohort excluded by their consent (DUO)"
FOLLOWUP_HEAD = "follow-up: patients of this cohort left out because their follow-up is missing"


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
    withheld = f"{head}: withheld (a small count, or too close to an earlier release)"
    if n == 0:
        return (withheld, []) if policy.zero_cells == "suppress" else (f"{head}: 0", [])
    if n < policy.min_cell or ctx.ledger.refused([members], ctx.threshold)[0]:
        return withheld, []
    return f"{head}: {n}", [members]
