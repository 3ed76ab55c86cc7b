"""The hub's core, over its database: studies, rounds, tasks and answers (nodes and users:
members.py).

The HTTP app, the CLI and the study runner all call this one class, so each rule (who may see
what, what counts as late, what a duplicate is) is written once. Every change is one transaction.
It imports no feature (projects, trials, referrals, catalogues...): they share the context
(context.py) with it, and app.py composes them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Connection, Select, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ccdp.analyses import registry
from ccdp.analyses.base import Analysis
from ccdp.federation import resultfile
from ccdp.federation.hub import leases
from ccdp.federation.hub.context import (
    Admission,
    Admissions,
    Conflict,
    HubContext,
    HubError,
    NotFound,
    Principal,
)
from ccdp.federation.hub.loopreads import Listing, Query
from ccdp.federation.hub.members import Members
from ccdp.federation.hub.models import (
    AnswerRow,
    NodeRow,
    RoundRow,
    StudyRow,
    TaskRow,
    UserRow,
    one_of,
)
from ccdp.wire.data_use import DataUse
from ccdp.wire.errors import MalformedSummary
from ccdp.wire.protocol import Answer, Task
from ccdp.wire.summary import Summary


@dataclass(frozen=True)
class Recorded:
    """Outcome of posting an answer: accepted, a duplicate of one already held, or late."""

    status: Literal["accepted", "duplicate", "late"]
    task_id: str


def answer_digest(answer: Answer) -> str:
    """Identity of an answer's content (not its send time): equal digests are the same answer."""
    body = {"status": answer.status, "reason": answer.reason, "summary": answer.summary}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def task_fingerprint(task: dict[str, Any]) -> str:
    """What a round asks, without ids: a resumed study must ask the same again."""
    keep = {k: task.get(k) for k in ("analysis", "params", "cohort", "request")}
    return json.dumps(keep, sort_keys=True)


def _may_ask(admitted: Admission) -> str:
    """How many nodes a study may ask, and which it named but may not (and why, in short)."""
    out = f"the {len(admitted.asked)} node(s) the study may ask"
    if admitted.excluded:
        kept = "; ".join(f"{n}: {e['status']}" for n, e in sorted(admitted.excluded.items()))
        out += f" (kept out by its project: {kept})"
    return out


def registered_analysis(name: str) -> Analysis | None:
    """The registered analysis called `name`, or None (a stand-in the registry does not know:
    its answers are checked for form only)."""
    return registry.get(name) if name in registry.names() else None


FINISHED_STUDY = ("done", "failed")  # a study in these states is never written again
OPEN_TASK = ("pending", "delivered")  # a task in these states has no answer stored

_LISTED = (
    StudyRow.id,
    StudyRow.title,
    StudyRow.analysis,
    StudyRow.status,
    StudyRow.project_id,
    StudyRow.created_at,
    StudyRow.finished_at,
)


# built once (composing a statement costs more than running it), read outside any transaction
_ALL_LISTED = select(*_LISTED).order_by(StudyRow.created_at)
_OWN_LISTED = _ALL_LISTED.where(StudyRow.owner_id == bindparam("owner"))


def _listed(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """The study list out of rows of `_LISTED`'s columns."""
    return [
        {
            "id": r.id,
            "title": r.title,
            "analysis": r.analysis,
            "status": r.status,
            "project": r.project_id,
            "created_at": r.created_at.isoformat(),
            "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        }
        for r in rows
    ]


def _studies_query(viewer: Principal | None) -> Query | None:
    """The studies `viewer` may see (None: a non-admin that is not a user sees none)."""
    if viewer is None or viewer.role == "admin":
        return _ALL_LISTED, {}
    if viewer.kind != "user":
        return None
    return _OWN_LISTED, {"owner": viewer.id}


STUDY_LIST: Listing[list[dict[str, Any]]] = Listing(_studies_query, _listed)


class HubCore(Members):
    """The hub's state and rules, over the context's session factory. `admissions` (the
    projects feature) says which nodes a study may ask; `analyses` finds the analysis a task
    asked for, whose `check_summary` judges the answers to it on receipt. The core names no
    feature: the composition root (app.py) hands them in."""

    def __init__(
        self,
        context: HubContext,
        admissions: Admissions,
        analyses: Callable[[str], Analysis | None] = registered_analysis,
        open_studies: bool = False,
    ) -> None:
        """`open_studies` (`ccdp hub serve --open`): also run studies without a project."""
        super().__init__(context)
        self.admissions = admissions
        self.analyses = analyses
        self.open_studies = open_studies

    # ---- studies -----------------------------------------------------------------------
    def create_study(
        self,
        spec: dict[str, Any],
        *,
        analysis: str,
        title: str,
        nodes: list[str] | None,
        min_nodes: int | None,
        timeout: float,
        owner: Principal | None,
    ) -> str:
        """Store a study; its node list and minimum are fixed now, so a resume asks the same."""
        with self.sessions.begin() as s:
            live = {n.name for n in s.scalars(select(NodeRow).where(NodeRow.revoked_at.is_(None)))}
            chosen = list(nodes) if nodes else sorted(live)
            unknown = [n for n in chosen if n not in live]
            if unknown:
                raise HubError(f"study names unknown or revoked nodes: {', '.join(unknown)}")
            if not chosen:
                raise HubError("no nodes are registered at this hub")
            admitted = self.admit_study(s, owner, spec, analysis, chosen)
            chosen = admitted.asked
            need = len(chosen) if min_nodes is None else min_nodes
            if not 1 <= need <= len(chosen):
                raise HubError(f"min_nodes: {need} is not between 1 and {_may_ask(admitted)}")
            spec = admitted.spec if admitted.spec is not None else spec
            study_id = uuid.uuid4().hex
            s.add(
                StudyRow(
                    id=study_id,
                    title=title,
                    analysis=analysis,
                    spec=spec,
                    owner_id=owner.id if owner else None,
                    nodes=chosen,
                    min_nodes=need,
                    timeout=float(timeout),
                    status="queued",
                    project_id=admitted.project_id,
                    excluded=admitted.excluded or None,
                )
            )
            who = owner.name if owner else "admin"
            self.context.audit(
                s, who, "submit-study", study=study_id, analysis=analysis, nodes=chosen
            )
        return study_id

    def admit_study(
        self,
        s: Session,
        owner: Principal | None,
        spec: dict[str, Any],
        analysis: str,
        chosen: list[str],
    ) -> Admission:
        """The project check of a study (the admission contract: projects.py); tests override it
        to play a hub that forwards everything, so the node's own check is seen to hold."""
        return self.admissions.admit(s, owner, spec, analysis, chosen, self.open_studies)

    def governance_of(self, project_id: str | None) -> tuple[str | None, DataUse | None]:
        """(project id, data use) a study's tasks carry (the admission contract)."""
        return self.admissions.governance_of(project_id)

    def study(self, study_id: str, viewer: Principal | None = None) -> dict[str, Any]:
        """A study's state and result; researchers see only their own studies."""
        with self.sessions() as s:
            row = s.get(StudyRow, study_id)
            if row is None or not self._may_see(row, viewer):
                raise NotFound(f"no study {study_id!r}")
            return self._study_dict(s, row)

    @staticmethod
    def _may_see(row: StudyRow, viewer: Principal | None) -> bool:
        if viewer is None or viewer.role == "admin":
            return True
        return viewer.kind == "user" and row.owner_id == viewer.id

    def _study_dict(self, s: Session, row: StudyRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "title": row.title,
            "analysis": row.analysis,
            "status": row.status,
            "project": row.project_id,
            "nodes": row.nodes,
            "min_nodes": row.min_nodes,
            "timeout": row.timeout,
            "created_at": row.created_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
            "rounds": s.scalar(
                select(RoundRow.round_no)
                .where(RoundRow.study_id == row.id)
                .order_by(RoundRow.round_no.desc())
                .limit(1)
            ),
            "late_answers": self._late(s, row.id),
            "result": row.result,
            "error": row.error,
            "spec": row.spec,  # what runs: as submitted, any project scope filled in
        }

    def studies(self, viewer: Principal | None = None) -> list[dict[str, Any]]:
        """The studies `viewer` may see, oldest first: id, title, analysis, status, project
        and times (the result only from `study`). Filtered and ordered in SQL, reading only the
        listed columns: the spec and result JSON of every study stay in the database."""
        with self._reads.connect() as conn:
            return self.studies_in(conn, viewer)

    def studies_in(self, conn: Connection, viewer: Principal | None) -> list[dict[str, Any]]:
        """`studies`, read on `conn` (autocommit: the list on the event loop, loopreads.py)."""
        return STUDY_LIST.on(conn, viewer)

    def record_read(self, viewer: Principal, study: dict[str, Any]) -> None:
        """Audit that `viewer` read a study: "read-result" once it has its result."""
        done = study.get("status") in ("done", "failed")
        with self.sessions.begin() as s:
            self.context.audit(
                s,
                viewer.name,
                "read-result" if done else "read-study",
                study=study.get("id"),
                status=study.get("status"),
                role=viewer.role,
            )

    def record_refused(self, who: Principal, action: str, reason: str) -> None:
        """Audit a request the hub refused (a study spec it would not take, ...)."""
        with self.sessions.begin() as s:
            self.context.audit(s, who.name, f"{action}-refused", reason=reason[:500], role=who.role)

    def study_requester(self, study_id: str) -> str:
        """Who submitted the study: its owner's user name, or admin (submitted by the hub)."""
        with self.sessions() as s:
            row = s.get(StudyRow, study_id)
            if row is None:
                raise NotFound(f"no study {study_id!r}")
            user = s.get(UserRow, row.owner_id) if row.owner_id is not None else None
            return user.name if user is not None else "admin"

    def study_row(self, study_id: str) -> StudyRow:
        with self.sessions() as s:
            row = s.get(StudyRow, study_id)
            if row is None:
                raise NotFound(f"no study {study_id!r}")
            return row

    def unfinished_studies(self) -> list[str]:
        with self.sessions() as s:
            stmt = select(StudyRow.id).where(one_of(StudyRow.status, ("queued", "running")))
            return list(s.scalars(stmt.order_by(StudyRow.created_at)))

    def set_study_status(
        self,
        study_id: str,
        status: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        owner: str | None = None,
    ) -> bool:
        """Write a study's status; whether it was written. A finished study (done, failed) is
        never rewritten. With `owner` (the worker driving it, runner.py) the write is fenced:
        it happens only while that worker holds the study's lease, checked in the same
        transaction under the study's and the lease's row locks (the order a claim takes them),
        so two workers never both finish one study, even one whose lease ran out mid-round."""
        with self.sessions.begin() as s:
            row = s.get(StudyRow, study_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no study {study_id!r}")
            if row.status in FINISHED_STUDY:
                return False
            if owner is not None and not leases.held(s, study_id, owner):
                return False
            if status == "running" and row.status != "running":
                self.context.audit(s, "hub", "study-started", study=study_id, was=row.status)
            row.status = status
            if status in ("done", "failed"):
                row.result, row.error, row.finished_at = result, error, self.context.clock()
                self.context.audit(s, "hub", f"study-{status}", study=study_id, error=error)
            self.waker.announce(s, [f"study:{study_id}"])
        return True

    # ---- rounds and tasks --------------------------------------------------------------
    def open_round(
        self, study_id: str, round_no: int, task: Task, nodes: list[str], timeout: float
    ) -> int:
        """Create round `round_no` with one task per node, or return it if it exists (resume)."""
        body = task.model_dump(mode="json")
        with self.sessions.begin() as s:
            conn = s.connection()
            key = {"study_id": study_id, "round_no": round_no}
            existing = conn.execute(_ROUND_OF_STUDY, key).one_or_none()
            if existing is not None:
                if task_fingerprint(existing.task) != task_fingerprint(body):
                    raise HubError(
                        f"study {study_id}: round {round_no} on resume asks something different "
                        "from the round stored before the restart"
                    )
                return int(existing.id)
            deadline = self.context.clock() + timedelta(seconds=timeout)
            added = conn.execute(_ADD_ROUND, key | {"task": body, "deadline": deadline})
            round_id = int(added.scalar_one())
            node_ids = list(conn.scalars(_NODE_IDS_NAMED, {"names": nodes}))
            if node_ids:
                tasks = [
                    {"id": uuid.uuid4().hex, "round_id": round_id, "node_id": n} for n in node_ids
                ]
                conn.execute(_ADD_TASK, tasks)
            self.context.audit(s, "hub", "open-round", study=study_id, round=round_no, nodes=nodes)
            self.waker.announce(s, [f"node:{n}" for n in node_ids])
            return round_id

    def pending_tasks(
        self, node_id: int, redeliver: bool = False, look_first: bool = True
    ) -> list[Task]:
        """Open tasks of this node (and only this node); marks them delivered.

        `redeliver` also returns tasks delivered before but not answered: a node agent that was
        killed mid-task asks for them again when it restarts. `look_first`: an indexed read
        first, so that a look finding nothing opens no write transaction (a look just woken
        for a new task skips it: it would find one).
        """
        states = ("pending", "delivered") if redeliver else ("pending",)
        if look_first and not self._has_open_tasks(node_id, states):
            return []  # most looks find nothing: one indexed read, no write transaction
        with self.sessions.begin() as s:
            conn = s.connection()
            rows = conn.execute(_OPEN_TASKS[states], {"node_id": node_id}).all()
            if rows:
                at = self.context.clock()
                conn.execute(_DELIVER, [{"task_id": r.id, "at": at} for r in rows])
            return [Task.model_validate({**r.task, "task_id": r.id}) for r in rows]

    def _has_open_tasks(self, node_id: int, states: tuple[str, ...]) -> bool:
        """Whether `pending_tasks` would find anything: read outside any transaction (a task
        written just after is not lost: its writer wakes the node's wait, armed before)."""
        with self._reads.connect() as conn:
            return bool(conn.execute(_ANY_OPEN_TASK[states], {"node_id": node_id}).scalar())

    def task_for_node(self, task_id: str, node_id: int) -> Task:
        """One task, only if it was sent to this node (other nodes' tasks do not exist for it)."""
        with self.sessions() as s:
            row = s.get(TaskRow, task_id)
            if row is None or row.node_id != node_id:
                raise NotFound(f"no task {task_id!r} for this node")
            rnd = s.get(RoundRow, row.round_id)
            assert rnd is not None
            return Task.model_validate({**rnd.task, "task_id": row.id})

    def record_answer(
        self, node_id: int, answer: Answer, source: str = "http", by: str | None = None
    ) -> Recorded:
        """Store a node's answer once. The same answer again is a no-op; a different one is a
        conflict; one after the round closed (deadline passed) is kept, flagged late, not used.
        A summary that is not well formed (MalformedSummary: ragged or non-finite arrays,
        negative counts...), an `answered` one without a summary, or one that is not what the
        task's analysis sends, is refused before anything is stored: the task stays open for
        the node to post a correct answer, and the other nodes' answers are untouched."""
        if answer.status == "answered" and not answer.summary:
            raise MalformedSummary("an answered answer needs a summary with at least one part")
        summary = None if answer.summary is None else Summary.from_dict(answer.summary)
        try:
            return self._record_answer(node_id, answer, summary, source, by)
        except IntegrityError:
            # Two copies raced past the check; the unique task_id kept one: judge this one again.
            return self._record_answer(node_id, answer, summary, source, by)

    def _record_answer(
        self,
        node_id: int,
        answer: Answer,
        summary: Summary | None,
        source: str,
        by: str | None = None,
    ) -> Recorded:
        """`summary`: the answer's, already parsed (and so well formed). The task and its round
        are read, and the answer and the task's status written, by statements built once (no
        ORM objects: they were most of an answer's CPU), as are the node row's lock and its audit
        head's move (`Members.node_head`, `move_head`, shared with the heartbeat)."""
        digest = answer_digest(answer)
        with self.sessions.begin() as s:
            conn = s.connection()
            task = conn.execute(_TASK_FOR_ANSWER, {"task_id": answer.task_id}).one_or_none()
            if task is None or task.node_id != node_id:
                raise NotFound(f"no task {answer.task_id!r} for this node")
            node = self.node_head(s, node_id)  # locked: its audit head may move
            if answer.node != node.name:
                raise Conflict(f"answer names node {answer.node!r} but comes from {node.name!r}")
            if summary is not None:
                self._check_summary(task.task, summary)
            # an answer is stored with its task's status moved off pending/delivered, in one
            # transaction: a task still there holds none (a racing copy: IntegrityError, above)
            if task.status not in OPEN_TASK:
                held = conn.scalar(_HELD_DIGEST, {"task_id": task.id})
                if held is not None:
                    if held != digest:
                        raise Conflict(f"task {task.id} already has a different answer")
                    return Recorded("duplicate", task.id)
            if answer.audit_head is not None:
                self.move_head(s, node, answer.audit_head, "answer")
            late = task.closed_at is not None or self.context.clock() > task.deadline
            conn.execute(
                _ADD_ANSWER,
                {
                    "task_id": task.id,
                    "status": answer.status,
                    "reason": answer.reason,
                    "summary": answer.summary,
                    "digest": digest,
                    "source": source,
                    "late": late,
                },
            )
            status = "late" if late else answer.status
            conn.execute(_SET_TASK_STATUS, {"task_id": task.id, "new_status": status})
            # the round's runner only: a researcher waiting on the study wakes when it finishes
            self.waker.announce(s, [f"round:{task.round_id}"])
            self.context.audit(
                s,
                f"node:{node.name}",
                "answer-late" if late else "answer",
                study=task.study_id,
                round=task.round_no,
                status=answer.status,
                source=source,
                **({"imported_by": by} if by else {}),
            )
        return Recorded("late" if late else "accepted", task.id)

    def _check_summary(self, task: dict[str, Any], summary: Summary) -> None:
        """MalformedSummary unless `summary` is what the task's analysis sends for its request."""
        analysis = self.analyses(str(task.get("analysis")))
        if analysis is None:
            return
        try:
            params = analysis.params_model.model_validate(task.get("params") or {})
        except ValidationError as exc:  # validated at submission: the analysis changed since
            raise Conflict(f"task parameters no longer valid for {analysis.name}: {exc}") from None
        analysis.check_summary(summary, params, task.get("request") or {})

    def round_state(self, round_id: int) -> tuple[bool, datetime]:
        """(every task has an answer, deadline): one read outside any transaction, as the
        runner asks at every answer of the round."""
        with self._reads.connect() as conn:
            closed_at, deadline, waiting = conn.execute(_ROUND_STATE, {"round_id": round_id}).one()
        return not waiting or closed_at is not None, deadline

    def close_round(self, round_id: int) -> dict[str, Answer]:
        """Close a round: unanswered tasks become timeouts; return every node's answer."""
        with self.sessions.begin() as s:
            conn = s.connection()
            rnd = conn.execute(_ROUND_TO_CLOSE, {"round_id": round_id}).one()
            if rnd.closed_at is None:
                at = self.context.clock()
                conn.execute(_CLOSE_ROUND, {"b_round": round_id, "at": at})
                conn.execute(_TIME_OUT_TASKS, {"b_round": round_id})
            rows = conn.execute(_ROUND_ANSWERS, {"round_id": round_id}).all()
            out: dict[str, Answer] = {}
            for row in rows:
                if row.status is not None and not row.late:
                    out[row.name] = Answer(
                        task_id=row.id,
                        node=row.name,
                        status=row.status,
                        reason=row.reason,
                        summary=row.summary,
                        sent_at=row.received_at,
                    )
                else:
                    out[row.name] = Answer(
                        task_id=row.id,
                        node=row.name,
                        status="failed",
                        reason=f"no answer within the study timeout ({rnd.timeout:g} s)",
                    )
            return out

    def _late(self, s: Session, study_id: str) -> list[dict[str, Any]]:
        rows = s.execute(
            select(NodeRow.name, RoundRow.round_no, AnswerRow.received_at)
            .join(TaskRow, AnswerRow.task_id == TaskRow.id)
            .join(RoundRow, TaskRow.round_id == RoundRow.id)
            .join(NodeRow, TaskRow.node_id == NodeRow.id)
            .where(RoundRow.study_id == study_id, AnswerRow.late.is_(True))
            .order_by(AnswerRow.received_at)
        ).all()
        return [
            {"node": n, "round": r, "received_at": t.isoformat(), "used": False} for n, r, t in rows
        ]


def _open_tasks(node_id: Any, states: Any, *columns: Any) -> Select[Any]:
    """A node's tasks in `states` of open rounds of running studies (with their rounds, or
    the `columns` given); `node_id` a value or a bound parameter, `states` task states."""
    return (
        select(*(columns or (TaskRow, RoundRow)))
        .join(RoundRow, TaskRow.round_id == RoundRow.id)
        .join(StudyRow, RoundRow.study_id == StudyRow.id)
        .where(
            TaskRow.node_id == node_id,
            one_of(TaskRow.status, states),
            RoundRow.closed_at.is_(None),
            StudyRow.status == "running",
        )
    )


# The statements of a node's answer and of its look for tasks, built once: building a
# SELECT is itself a good part of its cost at the rate nodes answer.
_TASK_FOR_ANSWER = (
    select(
        TaskRow.id,
        TaskRow.node_id,
        TaskRow.status,
        TaskRow.round_id,
        RoundRow.task,
        RoundRow.study_id,
        RoundRow.round_no,
        RoundRow.closed_at,
        RoundRow.deadline,
    )
    .join(RoundRow, TaskRow.round_id == RoundRow.id)
    .where(TaskRow.id == bindparam("task_id"))
    .with_for_update(of=TaskRow)
)
# a round opened: Core statements built once (the ORM's unit of work for a round and its ten
# tasks cost more than the statements)
_ROUND_OF_STUDY = select(RoundRow.id, RoundRow.task).where(
    RoundRow.study_id == bindparam("study_id"), RoundRow.round_no == bindparam("round_no")
)
_ADD_ROUND = insert(RoundRow).returning(RoundRow.id)
_NODE_IDS_NAMED = select(NodeRow.id).where(NodeRow.name.in_(bindparam("names", expanding=True)))
_ADD_TASK = insert(TaskRow)
# a round closed (Core, built once): whether it is already, and its study's timeout
_ROUND_TO_CLOSE = (
    select(RoundRow.closed_at, StudyRow.timeout)
    .join(StudyRow, RoundRow.study_id == StudyRow.id)
    .where(RoundRow.id == bindparam("round_id"))
)
_CLOSE_ROUND = (
    update(RoundRow).where(RoundRow.id == bindparam("b_round")).values(closed_at=bindparam("at"))
)
_TIME_OUT_TASKS = (  # b_round: SQLAlchemy keeps an UPDATE's column names (round_id) for SET
    update(TaskRow)
    .where(TaskRow.round_id == bindparam("b_round"), one_of(TaskRow.status, OPEN_TASK))
    .values(status="timeout")
)
_HELD_DIGEST = select(AnswerRow.digest).where(AnswerRow.task_id == bindparam("task_id"))
_ADD_ANSWER = insert(AnswerRow)
_SET_TASK_STATUS = (
    update(TaskRow).where(TaskRow.id == bindparam("task_id")).values(status=bindparam("new_status"))
)
# one statement per set of states a look asks for, the states written into its SQL (`one_of`)
_LOOKS: tuple[tuple[str, ...], ...] = (("pending",), OPEN_TASK)
_OPEN_TASKS = {
    states: _open_tasks(bindparam("node_id"), states, TaskRow.id, RoundRow.task).order_by(
        RoundRow.created_at
    )
    for states in _LOOKS
}
_DELIVER = (
    update(TaskRow)
    .where(TaskRow.id == bindparam("task_id"))
    .values(status="delivered", delivered_at=bindparam("at"))
)
# every task of a round with its node's name and its answer, if any (the answer's columns
# are None for a task without one)
_ROUND_ANSWERS = (
    select(
        TaskRow.id,
        NodeRow.name,
        AnswerRow.status,
        AnswerRow.reason,
        AnswerRow.summary,
        AnswerRow.received_at,
        AnswerRow.late,
    )
    .join(NodeRow, TaskRow.node_id == NodeRow.id)
    .outerjoin(AnswerRow, AnswerRow.task_id == TaskRow.id)
    .where(TaskRow.round_id == bindparam("round_id"))
)
# (closed at, deadline, whether a task still waits for its answer) of a round. EXISTS, not
# LIMIT 1: SQLAlchemy renders a LIMIT again at every execution, a cost at the rate nodes look.
_ROUND_STATE = select(
    RoundRow.closed_at,
    RoundRow.deadline,
    select(TaskRow.id)
    .where(TaskRow.round_id == bindparam("round_id"), one_of(TaskRow.status, OPEN_TASK))
    .exists(),
).where(RoundRow.id == bindparam("round_id"))
_ANY_OPEN_TASK = {
    states: select(_open_tasks(bindparam("node_id"), states, TaskRow.id).exists())
    for states in _LOOKS
}


def import_file(hub: HubCore, rf: resultfile.ResultFile, by: str = "admin") -> Recorded:
    """Verify a signed result file against the node's registered secret, then record it."""
    node_id, token_digest, public_key = hub.node_of_name(rf.node)
    resultfile.verify(rf, token_digest, public_key)
    if rf.answer.node != rf.node:
        raise Conflict(f"result file signed by {rf.node!r} carries an answer of {rf.answer.node!r}")
    held = hub.task_for_node(rf.answer.task_id, node_id)
    if resultfile.canonical(held.model_dump(mode="json")) != resultfile.canonical(
        rf.task.model_dump(mode="json")
    ):
        raise Conflict(f"result file answers a task that differs from task {held.task_id}")
    return hub.record_answer(node_id, rf.answer, source="file", by=by)
