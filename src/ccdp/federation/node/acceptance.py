"""The node's side of the registered-set audit (disclosure/registered_audit.py): the record sets
a project's registered studies would release here, the sets the node released before, and the
two moments the audit runs.

* **At acceptance** (`ccdp node projects show|accept`): every registered study's `local` step
  runs on the store (its first round: enough for a model's cohort) and passes the disclosure
  gate, and every set the gate would record in the ledger (each released cell, margin and
  total, event-time row and group, model cohort) is audited with every set the ledger holds:
  the audit finds what a combination of them isolates, before anything is released. The
  custodian sees which studies combine and "1–4 records", never who.
* **After each release** (`detect`, called by `LocalNode` once the release is in the ledger, in
  the background): the same audit over the project's releases, reporting only what the new sets
  add; a hit is a `disclosure-alert` in the node's audit log, naming project and studies.

Nothing here is sent anywhere by itself: findings are for the custodian.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ccdp.analyses import registry
from ccdp.cohort.spec import CohortSpec
from ccdp.disclosure.consent_note import FOLLOWUP_HEAD, SET_ASIDE_HEAD, release_excluded
from ccdp.disclosure.context import DisclosureContext
from ccdp.disclosure.gate import release
from ccdp.disclosure.ledger import Ledger
from ccdp.disclosure.policy import NodePolicy
from ccdp.disclosure.registered_audit import AuditResult, audit
from ccdp.errors import CcdpError
from ccdp.federation.node.detection import EARLIER, alerts, detect, released_sets
from ccdp.governance.projects import ProjectSpec
from ccdp.governance.registered import split_study, study_hash
from ccdp.wire.data_use import DataUse

if TYPE_CHECKING:
    from ccdp.federation.node.local import LocalNode

log = logging.getLogger(__name__)


class AcceptanceError(CcdpError):
    """The acceptance audit cannot run (no store, a study that cannot be read)."""


# -- record sets of a study ---------------------------------------------------------------------
def study_sets(
    node: LocalNode, raw: dict[str, Any], data_use: DataUse | None, policy: NodePolicy
) -> list[np.ndarray]:
    """The record sets one registered study (as written in the protocol) would release here:
    its `local` step on the store, first round, passed through the disclosure gate under the
    node's policy (with an in-memory ledger: the audit itself releases nothing). The sets are
    those the gate hands to the ledger when the answer leaves: every released cell, margin and
    total (not the cells small-cell and secondary suppression withhold), every event-time group
    (a registered study's rows come at the policy's resolution, as a published curve, and are
    not sets the gate keeps), every model's cohort (its n is a count, so its set is released),
    the count of children a data use excludes by consent and the count a survival analysis
    leaves out for a missing follow-up. A study the gate refuses releases
    nothing: Refusal, which the caller notes."""
    name, raw_params, raw_cohort = split_study(raw)
    analysis = registry.get(name)
    params = analysis.params_model.model_validate(raw_params)
    cohort = CohortSpec.load(raw_cohort)
    rows = analysis.view_rows(params)
    dedup = node.dedup_applies(params, rows)  # as the node answers it (docs/dedup.md)
    frame = node._read(
        analysis.columns(params), cohort, data_use, policy.consent, rows=rows, dedup=dedup
    )
    from ccdp.federation.node.local import StoreData

    # released as registered: exact counts under any `counts`, times at the policy's resolution
    context = DisclosureContext(policy, Ledger(), registered=True)
    data = StoreData(node.name, frame, node.store, cohort, context)
    summary = analysis.local(data, params, analysis.start(params).request, {})
    sets = list(release(summary, context).sets)
    if data_use is not None:
        excluded = node._excluded(cohort, data_use, policy.consent, rows, dedup)
        sets += release_excluded(excluded, context)[1]
    outcome = analysis.followup_outcome(params)
    if outcome is not None:  # a survival analysis says how many it left out (no follow-up)
        lost = node._no_followup(cohort, data_use, policy.consent, outcome, dedup)
        if lost is not None:
            sets += release_excluded(lost, context, FOLLOWUP_HEAD)[1]
    if dedup:  # and how many linked duplicates it set aside
        set_aside = node._set_aside(cohort, data_use, policy.consent)
        sets += release_excluded(set_aside, context, SET_ASIDE_HEAD)[1]
    return sets


# -- at acceptance -------------------------------------------------------------------------------
def study_label(raw: dict[str, Any]) -> str:
    """How a finding names a registered study: its title and the start of its hash."""
    title = str(raw.get("title", "untitled study"))
    try:
        short = study_hash(*split_study(raw))[:8]
    except ValueError:
        short = "invalid"
    return f"«{title}» ({short})"


def acceptance_audit(node: LocalNode, spec: ProjectSpec) -> tuple[AuditResult, list[str]]:
    """The audit of a project's registered studies with everything released before (less the
    sets whose counts never left: the catalogue's follow-up table, of which only a median is
    published). It reports what the studies add: a union that the earlier releases determine
    by themselves is not the project's doing (and declining it would not undo it). Returns the
    result and notes (a study that cannot be computed here is named, with the kind of error
    only, and left out: it would be refused when asked)."""
    policy = node.policy
    sets: list[np.ndarray] = []
    labels: list[str] = []
    notes: list[str] = []
    for raw in spec.study_specs():
        label = study_label(raw)
        try:
            got = study_sets(node, raw, spec.data_use, policy)
        except Exception as exc:  # an invalid or too small study releases nothing
            notes.append(f"{label}: not computed here ({type(exc).__name__}); left out")
            continue
        sets += got
        labels += [label] * len(got)
    earlier = released_sets(node.ledger)
    if earlier is not None:  # less the sets kept for the differencing rule whose counts never left
        kept = [s for s, meta in zip(*earlier, strict=True) if meta.get("counts") != "none"]
        sets += kept
        labels += [EARLIER] * len(kept)
    return audit(sets, labels, policy.min_cell, only_with=set(labels) - {EARLIER}), notes


def describe(result: AuditResult, notes: Iterable[str] = ()) -> list[str]:
    """The custodian's lines: which studies combine, how many records (a range), what was
    examined and how long it took; never a record, a date or an exact small count."""
    lines = [
        f"acceptance audit: {result.sets} released set(s), {result.atoms} atom(s), "
        f"{result.seconds:.1f} s"
    ]
    if result.clean and result.complete:
        lines.append("  no combination of these sets isolates fewer than min_cell records")
    elif result.clean:  # an incomplete audit found nothing in what it examined: not "clean"
        lines.append("  no finding in what was examined (the audit is incomplete)")
    for f in result.findings:
        lines.append(f"  FINDING: {f.text()}")
    if not result.complete and result.note:
        lines.append(f"  incomplete: {result.note}")
    lines += [f"  note: {n}" for n in notes]
    return lines


__all__ = [
    "AcceptanceError",
    "acceptance_audit",
    "alerts",
    "describe",
    "detect",
    "released_sets",
    "study_sets",
]
