"""The rules every outgoing Summary passes at the node, whatever analysis produced it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ccdp.analyses.base import GROUP, AggregatePart, CountsPart, EventTimesPart, Summary
from ccdp.disclosure.policy import TIME_UNIT_DAYS, NodePolicy
from ccdp.disclosure.suppress import suppress
from ccdp.errors import CcdpError


class Refusal(CcdpError):
    """The node will not release this answer; the message is the reason sent back."""


@dataclass
class Checked:
    """A summary that may leave the node, with notes on what was withheld."""

    summary: Summary
    notes: list[str] = field(default_factory=list)


def check_aggregate(name: str, part: AggregatePart, policy: NodePolicy) -> None:
    """Models need enough rows, and few parameters per row, not to describe individuals."""
    if part.n < policy.min_cohort:
        raise Refusal(
            f"{name}: the model uses {part.n} records at this node, fewer than the minimum "
            f"cohort size {policy.min_cohort}"
        )
    if part.n_params > part.n * policy.max_params_ratio:
        raise Refusal(
            f"{name}: {part.n_params} parameters for {part.n} records exceeds the node's limit "
            f"of {policy.max_params_ratio:.3g} x n"
        )


def check_event_times(
    name: str, part: EventTimesPart, policy: NodePolicy
) -> tuple[EventTimesPart, list[str]]:
    """Event-time tables: allowed on the node's grid, small groups withheld."""
    if policy.event_times == "forbid":
        raise Refusal(f"{name}: this node does not release event-time tables")
    unit = part.time_unit
    if unit not in TIME_UNIT_DAYS:
        raise Refusal(f"{name}: unknown time unit {unit!r}")
    if TIME_UNIT_DAYS[unit] < TIME_UNIT_DAYS[policy.event_times]:
        raise Refusal(
            f"{name}: event times on a {unit} grid; this node releases them on a "
            f"{policy.event_times} grid or coarser (set time_unit: {policy.event_times})"
        )
    small = {k for k, n in part.group_sizes.items() if n < policy.min_group}
    if not small:
        return part, []
    keep = ~np.isin(part.columns[GROUP], sorted(small))
    sizes = {k: n for k, n in part.group_sizes.items() if k not in small}
    note = (
        f"{name}: {len(small)} group(s) with fewer than {policy.min_group} patients withheld: "
        + ", ".join(sorted(small))
    )
    return replace(part.take(keep), group_sizes=sizes), [note]


def apply_rules(summary: Summary, policy: NodePolicy) -> Checked:
    """The releasable form of `summary` under `policy`, or Refusal with the reason."""
    out: dict = {}
    notes: list[str] = []
    counts: dict[str, CountsPart] = {}
    for name, part in summary.parts.items():
        if isinstance(part, AggregatePart):
            check_aggregate(name, part, policy)
            out[name] = part
        elif isinstance(part, EventTimesPart):
            out[name], more = check_event_times(name, part, policy)
            notes += more
        elif isinstance(part, CountsPart):
            counts[name] = part
        else:
            raise Refusal(f"{name}: unknown kind of summary part; nothing unknown leaves a node")
    if counts:
        released, report = suppress(counts, policy.min_cell, policy.zero_cells)
        out.update(released)
        if report.total:
            notes.append(
                f"{sum(report.primary.values())} cell(s) below {policy.min_cell} suppressed, "
                f"{sum(report.secondary.values())} more to protect them"
            )
        if report.unprotectable:
            notes.append(
                f"{report.unprotectable} suppressed cell(s) equal a margin that a coarser query "
                "would itself suppress"
            )
    return Checked(Summary(parts={n: out[n] for n in summary.parts}), notes)
