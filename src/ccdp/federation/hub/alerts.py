"""Disclosure alerts at the hub (a feature; issue 28, item 4): after each release a node looks for
combinations of a project's released sets that isolate a few records; a hit alerts its custodian
(the node's audit log) and, through this feature, the hub's board.

A node posts each alert once (`POST /api/node/alerts`, its own token); the hub keeps it, chains it
to its audit log and shows it to the board (`GET /api/board/alerts`, the Governance page,
`ccdp hub alerts`). An alert names a project, studies (by id; the titles are the hub's own) and a
range of records (`wire.alerts.DisclosureAlert`): never a record, a key or a value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ccdp.federation.hub.context import Conflict, HubContext, NotFound, Principal
from ccdp.federation.hub.doors import AsNode, AsUser
from ccdp.federation.hub.models import DisclosureAlertRow, NodeRow, ProjectRow, StudyRow
from ccdp.wire.alerts import DisclosureAlert
from ccdp.wire.protocol import utcnow

MAX_LIST = 1000  # alerts a board listing returns at most (newest first)


def alert_digest(alert: DisclosureAlert) -> str:
    """The content of an alert, to tell a repeated post from a different one with its id."""
    body = alert.model_dump(mode="json")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Alerts:
    """The nodes' disclosure alerts, over the hub's database."""

    def __init__(self, context: HubContext) -> None:
        self.context = context

    def receive(self, node: Principal, alert: DisclosureAlert) -> dict[str, Any]:
        """Keep a node's alert (validated already) and audit it as `disclosure-alert`. Posting
        the same alert again returns the first; the same id with other content is a Conflict;
        a project the hub does not hold, or that does not name the node, is NotFound."""
        digest = alert_digest(alert)
        with self.context.sessions() as s:
            project = s.get(ProjectRow, alert.project)
            if project is None or node.name not in (project.spec or {}).get("nodes", []):
                raise NotFound(f"no project {alert.project!r} for this node")
            held = s.scalars(
                select(DisclosureAlertRow).where(
                    DisclosureAlertRow.node_id == node.id,
                    DisclosureAlertRow.alert_id == alert.alert_id,
                )
            ).first()
            if held is not None:
                if held.digest != digest:
                    raise Conflict(f"alert {alert.alert_id} was received with other content")
                return _receipt(held)
            row = self._row(node, alert, digest)
            s.add(row)
            self._audit(s, node, alert)
            try:
                s.commit()
            except IntegrityError:  # the same alert posted twice at once: the first stands
                s.rollback()
                return self.receive(node, alert)
            return _receipt(row)

    @staticmethod
    def _row(node: Principal, alert: DisclosureAlert, digest: str) -> DisclosureAlertRow:
        return DisclosureAlertRow(
            node_id=node.id,
            alert_id=alert.alert_id,
            kind=alert.kind,
            project_id=alert.project,
            study_id=alert.study_id,
            findings=[f.model_dump(mode="json") for f in alert.findings],
            more=alert.more,
            set_limit=alert.limit,
            digest=digest,
            detected_at=alert.detected_at,
            received_at=utcnow(),
        )

    def _audit(self, s: Session, node: Principal, alert: DisclosureAlert) -> None:
        studies = sorted({i for f in alert.findings for i in f.studies})
        self.context.audit(
            s,
            f"node:{node.name}",
            "disclosure-alert",
            alert=alert.alert_id,
            kind=alert.kind,
            project=alert.project,
            study=alert.study_id,
            studies=studies,
            records=sorted({f.records for f in alert.findings}),
            findings=len(alert.findings) + alert.more,
            detected_at=alert.detected_at.isoformat(),
        )

    def all(self, project: str | None = None, limit: int = MAX_LIST) -> list[dict[str, Any]]:
        """The alerts, newest first (of one project when given), with the studies' and the
        project's titles as the hub holds them (`known`: a study of that project here)."""
        with self.context.sessions() as s:
            query = (
                select(DisclosureAlertRow, NodeRow.name)
                .join(NodeRow, NodeRow.id == DisclosureAlertRow.node_id)
                .order_by(DisclosureAlertRow.received_at.desc(), DisclosureAlertRow.id.desc())
                .limit(limit)
            )
            if project is not None:
                query = query.where(DisclosureAlertRow.project_id == project)
            rows = s.execute(query).all()
            ids = {r.study_id for r, _ in rows if r.study_id} | {
                i for r, _ in rows for f in r.findings for i in f.get("studies", [])
            }
            studies = {
                st.id: st for st in s.scalars(select(StudyRow).where(StudyRow.id.in_(sorted(ids))))
            }
            pids = sorted({r.project_id for r, _ in rows})
            titles = {
                p.id: p.title for p in s.scalars(select(ProjectRow).where(ProjectRow.id.in_(pids)))
            }
            return [_shown(r, node, studies, titles) for r, node in rows]


def _receipt(row: DisclosureAlertRow) -> dict[str, Any]:
    return {"alert_id": row.alert_id, "received_at": row.received_at.isoformat()}


def _study(study_id: str, project: str, studies: dict[str, StudyRow]) -> dict[str, Any]:
    st = studies.get(study_id)
    known = st is not None and (st.project_id or (st.spec or {}).get("project")) == project
    return {
        "study_id": study_id,
        "title": st.title if known and st is not None else None,
        "analysis": st.analysis if known and st is not None else None,
        "known": known,
    }


def _shown(
    row: DisclosureAlertRow, node: str, studies: dict[str, StudyRow], titles: dict[str, str]
) -> dict[str, Any]:
    """One alert as the board reads it."""
    return {
        "alert_id": row.alert_id,
        "node": node,
        "kind": row.kind,
        "project": row.project_id,
        "project_title": titles.get(row.project_id),
        "study": _study(row.study_id, row.project_id, studies) if row.study_id else None,
        "findings": [
            {
                "studies": [_study(i, row.project_id, studies) for i in f.get("studies", [])],
                "records": f.get("records"),
                "integer": f.get("integer"),
                "others": f.get("others", 0),
            }
            for f in row.findings
        ],
        "more": row.more,
        "limit": row.set_limit,
        "detected_at": row.detected_at.isoformat(),
        "received_at": row.received_at.isoformat(),
    }


def router(alerts: Callable[[], Alerts], api: APIRouter | None = None) -> APIRouter:
    """The alert routes; `alerts` gives the feature at request time."""
    api = api if api is not None else APIRouter()

    @api.post("/api/node/alerts", tags=["node"], status_code=201)
    def node_alert(body: DisclosureAlert, node: AsNode) -> dict[str, Any]:
        """A disclosure alert of this node's detection (project, studies, a range of records;
        never a record): kept once per `alert_id`, audited, shown to the board."""
        return alerts().receive(node, body)

    @api.get("/api/board/alerts", tags=["board"])
    def board_alerts(
        who: AsUser,
        project: Annotated[str | None, Query(max_length=64, description="one project")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 200,
    ) -> list[dict[str, Any]]:
        """The nodes' disclosure alerts, newest first: which studies of which project combine
        to isolate a few records, at which node (board or admin role)."""
        if who.role not in ("board", "admin"):
            raise HTTPException(403, "this route needs the board or admin role")
        return alerts().all(project, limit)

    return api
