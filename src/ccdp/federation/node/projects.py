"""The node's own record of its custodian's project decisions, and the check of every task
against it.

The record is a file beside the store (`<store stem>.projects.json`, like the policy file): the
node's memory of the terms its custodian accepted (id, data use, analyses, scope, expiry, nodes).
A task naming a project is answered only if that project is accepted here and the task stays
within the accepted terms, whatever the hub says, so a compromised hub can neither open a node
nor loosen a project's data use. Refusals are the disclosure gate's (`Refusal`), like any other.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ccdp.disclosure.refusals import Refusal
from ccdp.errors import CcdpError
from ccdp.governance.projects import ProjectTerms, cohort_outside
from ccdp.governance.registered import RegisteredStudyError, study_hash
from ccdp.wire.alerts import MAX_PROJECTS, AcceptedStudies, ProjectAcceptance
from ccdp.wire.protocol import Task, utcnow


class NodeProjectsError(CcdpError):
    """The node's project record is unreadable, or a decision cannot be made."""


class Decision(BaseModel):
    """One custodian decision, with the terms it was about."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["accepted", "declined"]
    reason: str | None = None
    decided_at: datetime
    terms: ProjectTerms


def projects_path(store: Path | str) -> Path:
    """`<store stem>.projects.json` beside the store."""
    store = Path(store)
    return store.with_name(f"{store.stem}.projects.json")


def load_decisions(store: Path | str) -> dict[str, Decision]:
    """Every decision made at this node, by project id ({} when none was made yet)."""
    path = projects_path(store)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {pid: Decision.model_validate(d) for pid, d in raw.items()}
    except (OSError, ValueError, ValidationError, AttributeError) as exc:
        raise NodeProjectsError(f"{path}: not a valid project record ({exc})") from None


def record_decision(
    store: Path | str,
    terms: ProjectTerms,
    decision: Literal["accepted", "declined"],
    reason: str | None,
    audit: dict[str, Any] | None = None,
) -> Decision:
    """Write the custodian's decision (atomically, keeping the others) and log it in the
    node's audit log, with the acceptance audit's findings when one ran (sources and ranges,
    never records)."""
    from ccdp.federation.node.audit import AuditLog

    held = load_decisions(store)
    made = Decision(decision=decision, reason=reason, decided_at=utcnow(), terms=terms)
    held[terms.id] = made
    path = projects_path(store)
    tmp = path.with_name(path.name + ".tmp")
    body = {pid: d.model_dump(mode="json") for pid, d in held.items()}
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    AuditLog.for_store(store).append(
        {
            "time": made.decided_at.isoformat(),
            "event": "project-decision",
            "project": terms.id,
            "status": decision,
            "reason": reason,
            "terms": terms.model_dump(mode="json"),
            **({"acceptance_audit": audit} if audit is not None else {}),
        }
    )
    return made


def check_task(task: Task, node: str, decisions: dict[str, Decision], on: date) -> None:
    """Refusal unless `task` is within a project this node's custodian accepted. Checked
    before any data is read; a task without a project is left to the policy's
    `require_project` (checked by the caller)."""
    if task.project is None:
        return
    made = decisions.get(task.project)
    if made is None or made.decision != "accepted":
        raise Refusal("not_accepted", task.project)
    terms = made.terms

    def outside(what: str) -> Refusal:
        return Refusal("project_terms", f"{terms.id} ({what})")

    if node not in terms.nodes:
        raise outside("nodes")
    if on > terms.expires:
        raise Refusal("project_expired", terms.id, expires=terms.expires.isoformat())
    if task.analysis not in terms.analyses:
        raise outside("analyses")
    if task.data_use != terms.data_use:  # a hub that drops or loosens the use is refused
        raise outside("data_use")
    if cohort_outside(task.cohort, terms.cohort) is not None:
        raise outside("cohort")


ExactRelease = Literal["registered", "reviewed", "any"]


def registered_here(task: Task, decisions: dict[str, Decision]) -> bool:
    """Is `task` a registered study of the project it names, as this node's custodian accepted
    it? The hash is the node's own, of what it will run (analysis, parameters, cohort), compared
    with the hashes recorded at acceptance: a study the hub added or changed later (an
    amendment) is not one of them until the custodian accepts the project again."""
    made = decisions.get(task.project) if task.project is not None else None
    if made is None or made.decision != "accepted":
        return False
    try:
        return study_hash(task.analysis, task.params, task.cohort) in made.terms.studies
    except RegisteredStudyError:
        return False


def review_reason(
    task: Task, decisions: dict[str, Decision], exact_release: ExactRelease
) -> str | None:
    """Why the answer to `task` must wait for the custodian (policy `exact_release`), or None.
    Decided from the task and the custodian's record alone, never from the data, so the
    decision itself releases nothing."""
    if exact_release == "any":
        return None
    if exact_release == "reviewed":
        return "every exact answer waits for the custodian (exact_release: reviewed)"
    if registered_here(task, decisions):
        return None
    if task.project is None:
        return "not a registered study: the task names no project (exact_release: registered)"
    return (
        f"not a registered study of project {task.project} as accepted at this node "
        "(exact_release: registered)"
    )


def amendments(decisions: dict[str, Decision], project_id: str, now: list[str]) -> list[str]:
    """The hashes of the hub's current studies of a project that this node has not accepted
    (all of them when it accepted nothing yet): for the custodian deciding again."""
    made = decisions.get(project_id)
    accepted: set[str] = set()
    if made is not None and made.decision == "accepted":
        accepted = set(made.terms.studies)
    return [h for h in now if h not in accepted]


def acceptances(decisions: dict[str, Decision]) -> AcceptedStudies:
    """What the agent reports to the hub of this record: per project, the custodian's decision
    and the hashes of the registered studies accepted (none when declined), so that the board
    sees which studies each node answers exactly. Nothing of the data: hashes of study specs.
    A project no hub could name (e.g. a local `--project FILE` run's) is left out; the latest
    decisions first when there are more than a report holds."""
    out: list[ProjectAcceptance] = []
    for pid, d in sorted(decisions.items(), key=lambda kv: kv[1].decided_at, reverse=True):
        try:
            out.append(
                ProjectAcceptance(
                    project_id=pid,
                    decision=d.decision,
                    studies=list(dict.fromkeys(d.terms.studies))
                    if d.decision == "accepted"
                    else [],
                    decided_at=d.decided_at,
                )
            )
        except ValidationError:
            continue
    return AcceptedStudies(projects=sorted(out[:MAX_PROJECTS], key=lambda p: p.project_id))


def describe(decisions: dict[str, Decision]) -> list[dict[str, Any]]:
    """The record as rows for `ccdp node projects list` (node-side only)."""
    return [
        {
            "project_id": pid,
            "decision": d.decision,
            "reason": d.reason,
            **d.terms.model_dump(mode="json"),
        }
        for pid, d in decisions.items()
    ]
