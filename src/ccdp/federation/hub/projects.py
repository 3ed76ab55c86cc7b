"""Projects at the hub: requested by a researcher, reviewed by the board, relayed to the nodes it
names, whose custodians' decisions come back; and the admission of a study to its project.

The hub only relays a custodian's decision: the node records what it accepted and checks every
task against that record itself (federation/node/local.py), so this class is a convenience and a
first line, never the only one.

A feature: it works through the hub's context (context.py), never the core, and `router`
builds its routes for app.py to put on the hub's app.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import Any, Literal, NoReturn

from fastapi import APIRouter
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdp.federation.hub.context import (
    Admission,
    Conflict,
    HubContext,
    HubError,
    NotFound,
    Principal,
    StudyRefused,
)
from ccdp.federation.hub.doors import AsBoard, AsNode, AsResearcher, AsUser, Strict
from ccdp.federation.hub.models import (
    AcceptedStudiesRow,
    NodeRow,
    ProjectNodeRow,
    ProjectRow,
    UserRow,
)
from ccdp.governance.projects import ProjectSpec, ProjectTerms, load_project, study_outside
from ccdp.wire.alerts import AcceptedStudies, ProjectAcceptance
from ccdp.wire.data_use import DataUse


def state_of(row: ProjectRow, on: date) -> str:
    """The stored state, except that an approved project past its expiry day (on `on`, the
    hub clock's day) is `expired`."""
    if row.state == "approved" and on > date.fromisoformat(row.spec["expires"]):
        return "expired"
    return row.state


def with_scope(
    cohort: dict[str, Any] | None, scope: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The study's cohort with each variable of the project's scope that it leaves out set to
    the scope's condition: the scope is the study's default cohort (docs/governance.md). What
    the study does restrict is left as written, for `study_outside` to judge against the scope;
    the completed cohort is what the study runs and shows, so each node's own (strict) check of
    the task against the accepted scope holds."""
    missing = {k: v for k, v in (scope or {}).items() if k not in (cohort or {})}
    return {**(cohort or {}), **missing} if missing else cohort


class Projects:
    """Project requests, reviews and node decisions, over the hub's database."""

    def __init__(self, context: HubContext) -> None:
        self.context = context

    # -- helpers --------------------------------------------------------------------------
    def today(self) -> date:
        """The hub clock's day (UTC): the day a project's expiry is judged on."""
        return self.context.clock().date()

    @staticmethod
    def _row(s: Session, project_id: str) -> ProjectRow:
        row = s.get(ProjectRow, project_id)
        if row is None:
            raise NotFound(f"no project {project_id!r}")
        return row

    @staticmethod
    def _may_see(row: ProjectRow, viewer: Principal) -> bool:
        if viewer.kind == "node":
            return viewer.name in row.spec["nodes"]
        return viewer.role in ("board", "admin") or row.owner_id == viewer.id

    def _dict(self, s: Session, row: ProjectRow) -> dict[str, Any]:
        owner = s.get(UserRow, row.owner_id)
        decided = {
            name: {"decision": d.decision, "reason": d.reason, "at": d.decided_at.isoformat()}
            for d, name in s.execute(
                select(ProjectNodeRow, NodeRow.name)
                .join(NodeRow, ProjectNodeRow.node_id == NodeRow.id)
                .where(ProjectNodeRow.project_id == row.id)
            ).all()
        }
        spec = ProjectSpec.model_validate(row.spec)
        terms = ProjectTerms.of(row.id, spec)  # the registered studies' hashes among them
        reported = self._reported(s, row.id, terms.studies)
        nodes = {
            n: {
                **decided.get(n, {"decision": "not decided", "reason": None, "at": None}),
                "reported": reported.get(n),
            }
            for n in row.spec["nodes"]
        }
        return {
            "project_id": row.id,
            "title": row.title,
            "state": state_of(row, self.today()),
            "requester": owner.name if owner is not None else None,
            "created_at": row.created_at.isoformat(),
            "review": {
                "by": row.reviewer,
                "reason": row.review_reason,
                "at": row.reviewed_at.isoformat() if row.reviewed_at else None,
            },
            "nodes": nodes,
            "terms": terms.model_dump(mode="json"),
            "studies": [
                {"title": st.get("title", "untitled study"), "hash": h, "spec": st}
                for st, h in zip(spec.study_specs(), terms.studies, strict=True)
            ],
            "spec": row.spec,
        }

    @staticmethod
    def _reported(s: Session, project_id: str, registered: list[str]) -> dict[str, Any]:
        """Per node, what it reported of its custodian's decision: the registered studies it
        accepted and those it did not (by hash, in the protocol's order), and any hash it
        accepted that the project no longer lists."""
        out: dict[str, Any] = {}
        for r, name in s.execute(
            select(AcceptedStudiesRow, NodeRow.name)
            .join(NodeRow, AcceptedStudiesRow.node_id == NodeRow.id)
            .where(AcceptedStudiesRow.project_id == project_id)
        ).all():
            held = set(r.studies)
            out[name] = {
                "decision": r.decision,
                "accepted": [h for h in registered if h in held],
                "not_accepted": [h for h in registered if h not in held],
                "other": sorted(held - set(registered)),
                "decided_at": r.decided_at.isoformat(),
                "reported_at": r.reported_at.isoformat(),
            }
        return out

    # -- researcher and board -------------------------------------------------------------
    def request(self, owner: Principal, raw: dict[str, Any]) -> str:
        """Store a researcher's request (state `requested`); every node named must exist."""
        spec = load_project(raw)
        project_id = uuid.uuid4().hex
        with self.context.sessions.begin() as s:
            live = {n.name for n in s.scalars(select(NodeRow).where(NodeRow.revoked_at.is_(None)))}
            unknown = [n for n in spec.nodes if n not in live]
            if unknown:
                raise HubError(f"project: nodes: unknown or revoked nodes: {', '.join(unknown)}")
            s.add(
                ProjectRow(
                    id=project_id,
                    title=spec.title,
                    spec=spec.model_dump(mode="json"),
                    owner_id=owner.id,
                    state="requested",
                )
            )
            self.context.audit(
                s, owner.name, "project-request", project=project_id, nodes=spec.nodes
            )
        return project_id

    def review(self, board: Principal, project_id: str, approve: bool, reason: str | None) -> str:
        """The board's decision on a requested project; a rejection needs its reason."""
        if not approve and not (reason and reason.strip()):
            raise HubError("reason: a rejection must say why (--reason)")
        with self.context.sessions.begin() as s:
            row = self._row(s, project_id)
            if row.state != "requested":
                raise Conflict(
                    f"project {project_id} is {state_of(row, self.today())}, not requested"
                )
            row.state = "approved" if approve else "rejected"
            row.reviewer, row.review_reason, row.reviewed_at = (
                board.name,
                reason,
                self.context.clock(),
            )
            self.context.audit(
                s, board.name, "project-review", project=project_id, state=row.state, reason=reason
            )
            return row.state

    def show(self, project_id: str, viewer: Principal) -> dict[str, Any]:
        with self.context.sessions() as s:
            row = s.get(ProjectRow, project_id)
            if row is None or not self._may_see(row, viewer):
                raise NotFound(f"no project {project_id!r}")
            return self._dict(s, row)

    def all(self, viewer: Principal) -> list[dict[str, Any]]:
        """Researchers: their own; board and admin: all; a node: those that name it."""
        with self.context.sessions() as s:
            rows = s.scalars(select(ProjectRow).order_by(ProjectRow.created_at))
            return [self._dict(s, r) for r in rows if self._may_see(r, viewer)]

    # -- nodes ----------------------------------------------------------------------------
    def decide(
        self, node: Principal, project_id: str, decision: str, reason: str | None
    ) -> dict[str, Any]:
        """Record the decision a node's custodian made at the node (the node sends it)."""
        if decision not in ("accepted", "declined"):
            raise HubError(f"decision: must be accepted or declined, got {decision!r}")
        with self.context.sessions.begin() as s:
            row = s.get(ProjectRow, project_id)
            if row is None or not self._may_see(row, node):
                raise NotFound(f"no project {project_id!r} for this node")
            state = state_of(row, self.today())
            if state != "approved":
                raise Conflict(
                    f"project {project_id} is {state}: a node decides only on approved projects"
                )
            held = s.scalar(
                select(ProjectNodeRow).where(
                    ProjectNodeRow.project_id == project_id, ProjectNodeRow.node_id == node.id
                )
            )
            if held is None:
                s.add(
                    ProjectNodeRow(
                        project_id=project_id, node_id=node.id, decision=decision, reason=reason
                    )
                )
            else:
                held.decision, held.reason, held.decided_at = decision, reason, self.context.clock()
            self.context.audit(
                s,
                f"node:{node.name}",
                "project-node-decision",
                project=project_id,
                decision=decision,
                reason=reason,
            )
            return self._dict(s, row)

    def report_accepted(self, node: Principal, body: AcceptedStudies) -> dict[str, Any]:
        """A node's whole record of its custodian's decisions, with the registered studies
        accepted per project: kept per project (replacing what the node reported before; a
        project it no longer lists is dropped), each change audited. Projects the hub does not
        hold, or that do not name the node, are left out and listed as `ignored`."""
        with self.context.sessions.begin() as s:
            held = {
                r.project_id: r
                for r in s.scalars(
                    select(AcceptedStudiesRow).where(AcceptedStudiesRow.node_id == node.id)
                )
            }
            kept, ignored = [], []
            for p in body.projects:
                row = s.get(ProjectRow, p.project_id)
                if row is None or not self._may_see(row, node):
                    ignored.append(p.project_id)
                    continue
                kept.append(p.project_id)
                self._keep_accepted(s, node, held.pop(p.project_id, None), p)
            for gone in held.values():
                s.delete(gone)
                self.context.audit(
                    s,
                    f"node:{node.name}",
                    "project-node-studies",
                    project=gone.project_id,
                    decision=None,
                    studies=[],
                )
        return {"node": node.name, "projects": kept, "ignored": ignored}

    def _keep_accepted(
        self, s: Session, node: Principal, row: AcceptedStudiesRow | None, p: ProjectAcceptance
    ) -> None:
        if row is not None and row.decision == p.decision and row.studies == p.studies:
            return  # unchanged (the agent reports its whole record at each start)
        if row is None:
            row = AcceptedStudiesRow(project_id=p.project_id, node_id=node.id)
            s.add(row)
        row.decision, row.studies, row.decided_at = p.decision, list(p.studies), p.decided_at
        row.reported_at = self.context.clock()
        self.context.audit(
            s,
            f"node:{node.name}",
            "project-node-studies",
            project=p.project_id,
            decision=p.decision,
            studies=list(p.studies),
        )

    # -- studies --------------------------------------------------------------------------
    def admit(
        self,
        s: Session,
        owner: Principal | None,
        spec: dict[str, Any],
        analysis: str,
        chosen: list[str],
        open_hub: bool,
    ) -> Admission:
        """Which of `chosen` a study may ask, or StudyRefused (before any node is asked) with
        the reason: no project on a closed hub, a project not approved or expired, an analysis
        or a cohort outside it, a data use other than its own, or no node that accepted it."""
        who = owner.name if owner is not None else "admin"
        project_id = spec.get("project")
        if project_id is None:
            if not open_hub:
                raise StudyRefused(
                    "project: this hub runs only studies of an approved project (name it with "
                    "`project: ID`); a hub started with --open also runs studies without one"
                )
            return Admission(None, chosen, {})
        row = s.get(ProjectRow, str(project_id))
        if row is None or not self._owner_may(row, owner):
            self._refused(s, who, str(project_id), f"no project {project_id!r} of this researcher")
        state = state_of(row, self.today())
        if state != "approved":
            self._refused(s, who, row.id, f"project {row.id} is {state}")
        spec_row = ProjectSpec.model_validate(row.spec)
        terms = ProjectTerms.of(row.id, spec_row)
        cohort = with_scope(spec.get("cohort"), terms.cohort)
        broken = study_outside(terms, analysis, cohort, self.today())
        if broken is not None:
            self._refused(s, who, row.id, broken[1])
        if (
            spec.get("data_use") is not None
            and DataUse.model_validate(spec["data_use"]) != terms.data_use
        ):
            self._refused(s, who, row.id, f"data_use: differs from project {row.id}'s data use")
        if not spec.get("nodes"):  # no nodes named: the project's nodes live at this hub
            chosen = [n for n in chosen if n in terms.nodes]
        outside = [n for n in chosen if n not in terms.nodes]
        if outside:
            self._refused(
                s, who, row.id, f"nodes: {', '.join(outside)} not asked by project {row.id}"
            )
        decisions = {
            name: (d.decision, d.reason)
            for d, name in s.execute(
                select(ProjectNodeRow, NodeRow.name)
                .join(NodeRow, ProjectNodeRow.node_id == NodeRow.id)
                .where(ProjectNodeRow.project_id == row.id)
            ).all()
        }
        asked, excluded = [], {}
        for n in chosen:
            decision, why = decisions.get(n, (None, None))
            if decision == "accepted":
                asked.append(n)
            elif decision == "declined":
                excluded[n] = {
                    "status": "declined",
                    "reason": f"the custodian of {n} declined project {row.id}"
                    + (f": {why}" if why else ""),
                }
            else:
                excluded[n] = {
                    "status": "not accepted",
                    "reason": f"the custodian of {n} has not accepted project {row.id}",
                }
        if not asked:
            self._refused(s, who, row.id, f"no node named by the study accepted project {row.id}")
        completed = {**spec, "cohort": cohort} if cohort != spec.get("cohort") else None
        return Admission(row.id, asked, excluded, completed)

    @staticmethod
    def _owner_may(row: ProjectRow, owner: Principal | None) -> bool:
        """Only the project's requester (or an admin, or the hub itself) runs its studies."""
        return owner is None or owner.role == "admin" or owner.id == row.owner_id

    def _refused(self, s: Session, who: str, project_id: str, why: str) -> NoReturn:
        """Refuse a study: audited in its own transaction (the study's one is rolled back)."""
        with self.context.sessions.begin() as audit:
            self.context.audit(audit, who, "study-refused", project=project_id, reason=why)
        raise StudyRefused(f"study refused: {why}")

    def governance_of(self, project_id: str | None) -> tuple[str | None, DataUse | None]:
        """(project id, data use) a study's tasks carry: the node filters and checks by them."""
        if project_id is None:
            return None, None
        with self.context.sessions() as s:
            row = self._row(s, project_id)
            return row.id, DataUse.model_validate(row.spec["data_use"])


class RequestProject(Strict):
    spec: dict[str, Any]


class ProjectRequested(Strict):
    project_id: str
    state: str


class Review(Strict):
    decision: Literal["approve", "reject"]
    reason: str | None = Field(None, max_length=2000)


class NodeDecisionBody(Strict):
    decision: Literal["accepted", "declined"]
    reason: str | None = Field(None, max_length=2000)


def router(projects: Callable[[], Projects], api: APIRouter | None = None) -> APIRouter:
    """The project routes; `projects` gives the feature at request time."""
    api = api if api is not None else APIRouter()

    @api.post("/api/projects", tags=["projects"], status_code=201)
    def request_project(body: RequestProject, user: AsResearcher) -> ProjectRequested:
        """A researcher's access request; the board reviews it, each node's custodian decides."""
        return ProjectRequested(project_id=projects().request(user, body.spec), state="requested")

    @api.get("/api/projects", tags=["projects"])
    def list_projects(user: AsUser) -> list[dict[str, Any]]:
        """A researcher's own projects; the board and admins see every project."""
        return projects().all(user)

    @api.get("/api/projects/{project_id}", tags=["projects"])
    def show_project(project_id: str, user: AsUser) -> dict[str, Any]:
        """A project's state, terms, the board's decision and each node's decision."""
        return projects().show(project_id, user)

    @api.post("/api/projects/{project_id}/review", tags=["projects"])
    def review_project(project_id: str, body: Review, board: AsBoard) -> ProjectRequested:
        """The board approves or rejects a requested project (a rejection gives its reason)."""
        state = projects().review(board, project_id, body.decision == "approve", body.reason)
        return ProjectRequested(project_id=project_id, state=state)

    @api.get("/api/node/projects", tags=["node"])
    def node_projects(node: AsNode) -> list[dict[str, Any]]:
        """Projects that name this node, for its custodian to decide at the node."""
        return projects().all(node)

    @api.get("/api/node/projects/{project_id}", tags=["node"])
    def node_project(project_id: str, node: AsNode) -> dict[str, Any]:
        return projects().show(project_id, node)

    @api.post("/api/node/projects/{project_id}/decision", tags=["node"])
    def node_decision(project_id: str, body: NodeDecisionBody, node: AsNode) -> dict[str, Any]:
        """Relay the decision the custodian made (and recorded) at the node."""
        return projects().decide(node, project_id, body.decision, body.reason)

    @api.put("/api/node/accepted-studies", tags=["node"])
    def node_accepted_studies(body: AcceptedStudies, node: AsNode) -> dict[str, Any]:
        """This node's record of its custodian's decisions: per project, the hashes of the
        registered studies accepted (the node checks every task against its own record; the
        board sees it on the Governance page). Sent whole; unknown projects are `ignored`."""
        return projects().report_accepted(node, body)

    return api
