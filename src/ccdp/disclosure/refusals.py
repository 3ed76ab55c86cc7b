"""What a refusal or an error may say when it leaves a node.

A refusal carries the rule that refused and the term it concerns (a variable, analysis or part
name from the request itself), never a value of the store: not a count, a level, a date or the
size of a difference. `public_reason` turns any exception raised while a node answers into what
may be sent; the node's own log keeps the full detail. Every gate, and the node's governance and
trial checks, refuse through this one table.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ccdp.disclosure.context import DisclosureContext
from ccdp.errors import CcdpError, SpecError
from ccdp.wire.errors import InsufficientData

MAX_CELLS = 20_000  # the largest dense grid of one count table a node lays out

# A node with no eligible patients answers exactly as one with too few (1 to min_cohort - 1):
# telling the two apart would say that a rare child exists there. Reports and the CLI read this
# prefix to label such a node; it is the one definition of the phrase.
TOO_FEW = "no eligible patients, or too few to report"

# What a refusal says, by rule: filled only with the policy's thresholds and a `term` that the
# request itself named (a variable, an analysis, a part), so no store value can ride along.
REASONS: dict[str, str] = {
    "allowed_analyses": "this node does not answer {term!r} analyses",
    "min_cohort": TOO_FEW + ": the cohort at this node is smaller than its minimum cohort size "
    "({min_cohort})",
    "max_params": "{term}: the model has more parameters than this node allows "
    "({max_params_ratio:.3g} x the records it uses)",
    "model_levels": "{term}: a level of this term holds fewer than {min_cell} records at this "
    "node; merge its levels or leave the term out",
    "undeclared": "{term}: the part does not declare the records it counts; nothing undeclared "
    "leaves a node",
    "unknown_part": "{term}: unknown kind of summary part; nothing unknown leaves a node",
    "event_times_forbidden": "this node does not release event-time tables",
    "time_grid": "event times on a {term} grid; this node releases them on a {event_times} grid "
    "or coarser (set time_unit: {event_times})",
    "event_rows": "{term}: an event-time row would describe fewer than {min_cell} subjects",
    "differencing": "{term}: the answer would differ from an earlier release of this node by "
    "fewer than {threshold} records (differencing rule)",
    # the feasibility tier (counts: perturbed): the request's own terms, checked without data
    "feasibility": "not in this node's feasibility tier: {term}",
    # record linkage (docs/dedup.md): decided from the request and the policy, never the data
    "dedup": "dedup: false is answered only for a registered study, or one this node's "
    "custodian reviews: with and without it, two answers differ by exactly the children linked "
    "to another node",
    "too_many_cells": "{term}: the table would have more than {max_cells} cells",
    # governance (federation/node/projects.py): the terms the node's custodian accepted
    "not_accepted": "not accepted: project {term} is not accepted at this node",
    "project_terms": "not accepted: project {term}: the task is outside the terms this node "
    "accepted",
    "project_expired": "not accepted: project {term} expired on {expires} at this node",
    "no_project": "not accepted: this node answers only tasks of a project its custodian accepted",
    # randomisation (federation/node/enrol.py): what a trial may learn of a patient
    "trial_not_accepted": "not accepted: this node's custodian has not accepted trial {term!r} "
    "for randomisation (the node policy's `trials` lists those it randomises into)",
    "strata": "{term}: this node sends only categorical view variables as a trial's strata, "
    "with a value of the variable's levels (or short plain text); nothing else leaves for a "
    "randomisation",
}


class Refusal(CcdpError):
    """The node will not release this answer; `rule` says which rule refused, `term` what it
    concerns. The message is built from REASONS only, so it is safe to send."""

    def __init__(self, rule: str, term: str | None = None, **policy: Any) -> None:
        self.rule, self.term = rule, term
        values = {"term": term or "", "max_cells": MAX_CELLS, **policy}
        super().__init__(REASONS[rule].format(**values))


def too_few(ctx: DisclosureContext) -> Refusal:
    """The refusal of a cohort below min_cohort, empty ones included (see TOO_FEW)."""
    return refuse(ctx, "min_cohort")


def refuse(ctx: DisclosureContext, rule: str, term: str | None = None) -> Refusal:
    """A Refusal under `rule`, its text filled with this node's thresholds."""
    p = ctx.policy
    return Refusal(
        rule,
        term,
        min_cohort=p.min_cohort,
        min_cell=p.min_cell,
        max_params_ratio=p.max_params_ratio,
        event_times=p.event_times,
        threshold=ctx.threshold,
    )


SPEC_ERRORS = (SpecError, ValidationError)


def public_reason(exc: BaseException, node: str, data_read: bool) -> tuple[str, str]:
    """(status, reason) that may leave the node for an exception raised while answering.

    Before the node reads its data, errors concern only the request (its spec, parameters,
    the analysis asked) and are sent as they are. After, only the gate's own refusals speak; any
    other error is named by its kind, since its text may quote stored values."""
    if isinstance(exc, Refusal):
        return "refused", str(exc)
    if not data_read:
        if isinstance(exc, ValidationError):
            from ccdp.specfile import first_error

            return "failed", f"invalid parameters: {first_error(exc)}"
        if isinstance(exc, CcdpError):
            return "failed", str(exc)
    if isinstance(exc, InsufficientData):
        return "refused", "the cohort at this node cannot support this request (insufficient data)"
    if isinstance(exc, CcdpError):
        return "failed", (
            f"the analysis could not be computed on the data of node {node} "
            f"({type(exc).__name__}); its operator can read the detail in the node's log"
        )
    return "failed", f"internal error at node {node} ({type(exc).__name__})"
