"""What an analysis may consult of the node's disclosure control while it builds its summary.

Most analyses never look: the gate judges what they return. Event-time tables are the exception:
only the node holds the per-subject times, so the analysis groups them (here, by the node's rules)
before it sums, and the gate then checks that every released row describes enough subjects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ccdp.disclosure.ledger import Ledger
from ccdp.disclosure.policy import NodePolicy


@dataclass
class DisclosureContext:
    """The node's policy and ledger (an in-memory ledger when none is given)."""

    policy: NodePolicy = field(default_factory=NodePolicy)
    ledger: Ledger = field(default_factory=Ledger)

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
        """Each subject's time replaced by its interval's time, intervals holding at least
        `min_cell` subjects leaving the risk set within each group (see disclosure.event_times)."""
        from ccdp.disclosure.event_times import group_times

        return group_times(group, time, keys, self.min_cell, step, self.ledger, self.threshold)
