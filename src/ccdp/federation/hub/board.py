"""The board's view at the hub (a feature): per study, what its nodes refused or withheld, as
their disclosure gates worded it (the answers' public reasons, nothing else).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from ccdp.federation.hub.context import HubContext
from ccdp.federation.hub.doors import AsUser
from ccdp.federation.hub.models import AnswerRow, NodeRow, RoundRow, StudyRow, TaskRow, UserRow


class Board:
    """What the board reviews, read from the hub's database."""

    def __init__(self, context: HubContext) -> None:
        self.context = context

    def refusals(self, project: str | None = None) -> list[dict[str, Any]]:
        """Per study, oldest first, what its nodes refused or withheld, in the words of their
        disclosure gates (the answers' public reasons, nothing else): the board's view. A
        study's `project` is read from its spec; `project` keeps only that project's studies."""
        with self.context.sessions() as s:
            rows = s.execute(
                select(StudyRow, RoundRow.round_no, NodeRow.name, AnswerRow, UserRow.name)
                .join(RoundRow, RoundRow.study_id == StudyRow.id)
                .join(TaskRow, TaskRow.round_id == RoundRow.id)
                .join(NodeRow, TaskRow.node_id == NodeRow.id)
                .join(AnswerRow, AnswerRow.task_id == TaskRow.id)
                .outerjoin(UserRow, UserRow.id == StudyRow.owner_id)
                .where((AnswerRow.status == "refused") | AnswerRow.reason.is_not(None))
                .order_by(StudyRow.created_at, RoundRow.round_no, NodeRow.name)
            ).all()
            out: dict[str, dict[str, Any]] = {}
            for study, round_no, node, ans, owner in rows:
                spec_project = (study.spec or {}).get("project")
                key = None if spec_project is None else str(spec_project)
                if project is not None and key != project:
                    continue
                entry = out.setdefault(
                    study.id,
                    {
                        "study": study.id,
                        "title": study.title,
                        "project": key,
                        "requester": owner or "admin",
                        "analysis": study.analysis,
                        "status": study.status,
                        "nodes": [],
                    },
                )
                entry["nodes"].append(
                    {
                        "node": node,
                        "round": round_no,
                        "status": ans.status,
                        "withheld": ans.status == "answered",
                        "reason": ans.reason,
                        "late": ans.late,
                    }
                )
            return list(out.values())


def router(board: Callable[[], Board], api: APIRouter | None = None) -> APIRouter:
    """The board's routes; `board` gives the feature at request time."""
    api = api if api is not None else APIRouter()

    @api.get("/api/board/refusals", tags=["board"])
    def refusals(
        who: AsUser,
        project: Annotated[str | None, Query(max_length=200, description="one project")] = None,
    ) -> list[dict[str, Any]]:
        """Per study (and project), the nodes' refusals and withheld parts, as the nodes' gates
        worded them: what the board reviews (board or admin role)."""
        if who.role not in ("board", "admin"):
            raise HTTPException(403, "this route needs the board or admin role")
        return board().refusals(project)

    return api
