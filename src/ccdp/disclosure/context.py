"""What an analysis may consult of the node's disclosure control while it builds its summary.

Most analyses never look: the gate judges what they return. Event-time tables are the exception:
only the node holds the per-subject times, so the analysis groups them (here, by the node's rules)
before it sums, and the gate then checks that every released row describes enough subjects.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ccdp.disclosure.ledger import Ledger
from ccdp.disclosure.policy import NodePolicy

# The salt of record keys where the node gives none (tests, dry runs, in-memory ledgers).
TEST_CELL_KEY_SALT = 0x0CD9_5A17_0000_0001


def node_cell_key_salt(store: Path | str) -> int:
    """The node's secret salt of cell-key perturbation: an HMAC of a fixed label under the
    node's pseudonymisation key (`<store stem>.node.yaml`), so it is as secret as the
    pseudonyms, survives re-ingests with the same key, and needs no new secret to keep."""
    from ccdp.store.config import pseudonym_key

    digest = hmac.new(pseudonym_key(store), b"ccdp cell-key salt v1", hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass
class DisclosureContext:
    """The node's policy and ledger (an in-memory ledger when none is given), and the salt of
    its cell keys (`disclosure.perturb`).

    `cell_key_salt` None means: the node's own salt when the ledger is the node's file (the
    ledger sits beside the store, `<store stem>.ledger.db`, so its node config is found there),
    else `TEST_CELL_KEY_SALT`."""

    policy: NodePolicy = field(default_factory=NodePolicy)
    ledger: Ledger = field(default_factory=Ledger)
    cell_key_salt: int | None = None
    # a registered study of a project accepted here (issue 28's exact tier): its counts are
    # exact even under `counts: perturbed`, its event times at the policy's resolution
    registered: bool = False
    # a release of the feasibility tier (count, crosstab, the catalogue): its counts are the
    # ones `counts: perturbed` perturbs; any other analysis's counts are exact (reviewed)
    feasibility: bool = True

    @property
    def perturbs(self) -> bool:
        """Are this release's counts perturbed? Under `counts: perturbed`, the feasibility
        tier's, except a registered study's (the custodian audited those at acceptance)."""
        return self.policy.counts == "perturbed" and self.feasibility and not self.registered

    @property
    def salt(self) -> int:
        """The salt record keys are mixed with (computed once)."""
        if self.cell_key_salt is None:
            path = self.ledger.path
            if path is not None and path.name.endswith(".ledger.db"):
                stem = path.name.removesuffix(".ledger.db")
                self.cell_key_salt = node_cell_key_salt(path.with_name(f"{stem}.duckdb"))
            else:
                self.cell_key_salt = TEST_CELL_KEY_SALT
        return self.cell_key_salt

    @property
    def min_cell(self) -> int:
        return self.policy.min_cell

    @property
    def threshold(self) -> int:
        """Smallest symmetric difference to an earlier release that is not refused."""
        t = self.policy.differencing_threshold
        return self.policy.min_cell if t is None else t

    def group_times(
        self, group: np.ndarray, time: np.ndarray, keys: np.ndarray, step: float
    ) -> np.ndarray:
        """Each subject's time replaced by the end of its interval, intervals holding at least
        `min_cell` subjects leaving the risk set within each group (see disclosure.event_times)."""
        return self.group_intervals(group, time, keys, step)[1]

    def group_intervals(
        self, group: np.ndarray, time: np.ndarray, keys: np.ndarray, step: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each subject's interval (start, end] by the node's rules; start == end where exact.
        A registered study's times are released at the policy's resolution, as a published
        curve is: the custodian audited its event-time rows at acceptance."""
        from ccdp.disclosure.event_times import group_intervals

        if self.registered:
            exact = np.asarray(time, dtype=float)
            return exact.copy(), exact.copy()

        return group_intervals(group, time, keys, self.min_cell, step, self.ledger, self.threshold)
