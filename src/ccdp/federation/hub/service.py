"""What the hub does, over its database: nodes and users, studies, rounds, tasks and answers.

The HTTP app, the CLI and the study runner all call this one class, so each rule (who may see
what, what counts as late, what a duplicate is) is written once. Every change is one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ccdp.analyses import registry
from ccdp.analyses.base import Analysis
from ccdp.errors import CcdpError
from ccdp.federation.hub.auth import ROLES, TokenKind, hash_token, new_token
from ccdp.federation.hub.models import (
    AnswerRow,
    AuditRow,
    CatalogueRow,
    NodeRow,
    RoundRow,
    StudyRow,
    TaskRow,
    UserRow,
    utcnow,
)
from ccdp.governance import hub_audit
from ccdp.governance.hub_projects import Admission
from ccdp.wire.catalogue import Catalogue
from ccdp.wire.errors import MalformedSummary
from ccdp.wire.protocol import Answer, AuditHead, HeadAtHub, Task
from ccdp.wire.summary import Summary


class HubError(CcdpError):
    """A hub operation was refused (unknown name, duplicate, bad state)."""


class NotFound(HubError):
    """The thing asked for does not exist, or the caller may not know it exists."""


class Conflict(HubError):
    """The request contradicts what the hub already holds (e.g. a second, different answer)."""


class Forbidden(HubError):
    """The caller may not do this (e.g. publish another node's catalogue)."""


class StudyRefused(HubError):
    """A study is outside its project (or has none on a closed hub): no node is asked."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a node or a user, with their id, name and (users) role."""

    kind: TokenKind
    id: int
    name: str
    role: str | None = None


@dataclass(frozen=True)
class Recorded:
    """Outcome of posting an answer: accepted, a duplicate of one already held, or late."""

    status: Literal["accepted", "duplicate", "late"]
    task_id: str


class Waker:
    """Wakes waiters when something changes: threads (study runners) and asyncio long-polls."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self.closing = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def event(self, key: str) -> asyncio.Event:
        """Called on the event loop: the event set at the next `wake(key)`."""
        ev = self._events.get(key)
        if ev is None:
            ev = self._events[key] = asyncio.Event()
        if self.closing:
            ev.set()
        return ev

    def close(self) -> None:
        """Thread- and signal-safe: the hub is stopping, so every long-poll returns now (the
        node asks again of the next hub) instead of holding the shutdown for its timeout."""
        self.closing = True
        with self._cond:
            self._version += 1
            self._cond.notify_all()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._set_all)
            except RuntimeError:
                return

    def _set_all(self) -> None:
        for key in list(self._events):
            self._set(key)

    def _set(self, key: str) -> None:
        ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()

    def wake(self, *keys: str) -> None:
        """Thread-safe: wake runner threads and any long-poll waiting on `keys`."""
        with self._cond:
            self._version += 1
            self._cond.notify_all()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for key in keys:
                try:
                    loop.call_soon_threadsafe(self._set, key)
                except RuntimeError:  # loop closed between the check and the call
                    return

    def version(self) -> int:
        with self._cond:
            return self._version

    def wait(self, since: int, timeout: float) -> int:
        """Block a thread until the version moves past `since` or `timeout` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != since, timeout=max(0.0, timeout))
            return self._version


def answer_digest(answer: Answer) -> str:
    """Identity of an answer's content (not its send time): equal digests are the same answer."""
    body = {"status": answer.status, "reason": answer.reason, "summary": answer.summary}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def task_fingerprint(task: dict[str, Any]) -> str:
    """What a round asks, without ids: a resumed study must ask the same again."""
    keep = {k: task.get(k) for k in ("analysis", "params", "cohort", "request")}
    return json.dumps(keep, sort_keys=True)


def registered_analysis(name: str) -> Analysis | None:
    """The registered analysis called `name`, or None (a stand-in the registry does not know:
    its answers are checked for form only)."""
    return registry.get(name) if name in registry.names() else None


class Hub:
    """The hub's state and rules, over a SQLAlchemy session factory. `analyses` finds the
    analysis a task asked for, whose `check_summary` judges the answers to it on receipt."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        analyses: Callable[[str], Analysis | None] = registered_analysis,
        open_studies: bool = False,
    ) -> None:
        """`open_studies` (`ccdp hub serve --open`): also run studies without a project."""
        from ccdp.federation.hub.referrals import Referrals
        from ccdp.federation.hub.trials import Trials
        from ccdp.governance.hub_projects import Projects

        self.sessions = sessions
        self.waker = Waker()
        self.analyses = analyses
        self.open_studies = open_studies
        self.projects = Projects(self)
        self.trials = Trials(self)
        self.referrals = Referrals(self)

    # ---- audit -------------------------------------------------------------------------
    @staticmethod
    def _audit(s: Session, actor: str, action: str, **detail: Any) -> None:
        """Chain a record to the hub's audit log in the caller's transaction (never a token or
        a patient-level value in `detail`: see governance/hub_audit.py)."""
        hub_audit.append(s, actor, action, detail)

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest `limit` records, newest first, with their seq and hashes."""
        with self.sessions() as s:
            rows = s.scalars(select(AuditRow).order_by(AuditRow.seq.desc()).limit(limit))
            return [
                {
                    "seq": r.seq,
                    "at": hub_audit.at_text(r.at),
                    "actor": r.actor,
                    "action": r.action,
                    "detail": r.detail,
                    "prev": r.prev,
                    "hash": r.hash,
                }
                for r in rows
            ]

    def verify_audit(self) -> hub_audit.Verified:
        """Walk the whole audit chain against its key, its head row and its head file."""
        return hub_audit.verify(self.sessions)

    # ---- nodes and users ---------------------------------------------------------------
    def add_node(
        self, name: str, country: str, public_key: str | None = None, by: str = "admin"
    ) -> str:
        """Register a node; return its token (shown once, stored hashed; the audit record says
        a token was issued, never which)."""
        if len(country) != 2 or not country.isalpha():
            raise HubError(f"country must be a two-letter ISO code, got {country!r}")
        token = new_token("node")
        row = NodeRow(
            name=name, country=country.upper(), token_hash=hash_token(token), public_key=public_key
        )
        self._insert(
            row, f"a node named {name!r} already exists", by, "add-node", name=name, token="issued"
        )
        return token

    def add_user(self, name: str, role: str, by: str = "admin") -> str:
        if role not in ROLES:
            raise HubError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        token = new_token("user")
        row = UserRow(name=name, role=role, token_hash=hash_token(token))
        self._insert(
            row,
            f"a user named {name!r} already exists",
            by,
            "add-user",
            name=name,
            role=role,
            token="issued",
        )
        return token

    def _insert(self, row: Any, dup_message: str, by: str, action: str, **detail: Any) -> None:
        try:
            with self.sessions.begin() as s:
                s.add(row)
                self._audit(s, by, action, **detail)
        except IntegrityError as exc:
            raise HubError(dup_message) from exc

    def revoke(self, kind: TokenKind, name: str, by: str = "admin") -> None:
        """Revoke a node's or user's token: every later request with it gets 401."""
        with self.sessions.begin() as s:
            row: NodeRow | UserRow | None
            if kind == "node":
                row = s.scalar(select(NodeRow).where(NodeRow.name == name))
            else:
                row = s.scalar(select(UserRow).where(UserRow.name == name))
            if row is None:
                raise NotFound(f"no {kind} named {name!r}")
            row.revoked_at = utcnow()
            self._audit(s, by, f"revoke-{kind}", name=name, token="revoked")
        self.waker.wake(f"node:{row.id}" if kind == "node" else f"user:{row.id}")

    def set_public_key(self, node: str, public_key_pem: str) -> None:
        with self.sessions.begin() as s:
            row = s.scalar(select(NodeRow).where(NodeRow.name == node))
            if row is None:
                raise NotFound(f"no node named {node!r}")
            row.public_key = public_key_pem
            self._audit(s, "admin", "set-node-key", name=node)

    def authenticate(self, token: str) -> Principal | None:
        """The live (not revoked) node or user holding `token`; a node's last-seen is updated."""
        digest = hash_token(token)
        with self.sessions.begin() as s:
            node = s.scalar(select(NodeRow).where(NodeRow.token_hash == digest))
            if node is not None:
                if node.revoked_at is not None:
                    return None
                now = utcnow()
                # one write per second per node is enough for "last seen"
                if node.last_seen is None or (now - node.last_seen).total_seconds() >= 1.0:
                    node.last_seen = now
                return Principal("node", node.id, node.name)
            user = s.scalar(select(UserRow).where(UserRow.token_hash == digest))
            if user is not None and user.revoked_at is None:
                return Principal("user", user.id, user.name, user.role)
        return None

    def nodes(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            published = {c.node_id: c for c in s.scalars(select(CatalogueRow))}
            return [
                {
                    "name": n.name,
                    "country": n.country,
                    "last_seen": n.last_seen.isoformat() if n.last_seen else None,
                    "revoked": n.revoked_at is not None,
                    "signing_key": n.public_key is not None,
                    "audit_head": self._head_at_hub(n).model_dump(mode="json")["head"],
                    "audit_received_at": (
                        n.audit_received_at.isoformat() if n.audit_received_at else None
                    ),
                    "audit_alert": n.audit_alert,
                    "catalogue": _headline(published.get(n.id)),
                }
                for n in s.scalars(select(NodeRow).order_by(NodeRow.name))
            ]

    # ---- node catalogues -----------------------------------------------------------------
    def publish_catalogue(self, node: Principal, catalogue: Catalogue) -> dict[str, Any]:
        """Keep `catalogue` as the node's latest (validated already; its `node` must be the
        token's node), audited as "catalogue.published"."""
        if catalogue.node != node.name:
            with self.sessions.begin() as s:
                self._audit(
                    s,
                    f"node:{node.name}",
                    "catalogue.refused",
                    reason="the catalogue names another node",
                )
            raise Forbidden(
                f"node {node.name} cannot publish a catalogue of node {catalogue.node[:100]!r}"
            )
        body = catalogue.model_dump(mode="json")
        try:
            return self._store_catalogue(node, body)
        except IntegrityError:  # two first publications at once: the second one updates
            return self._store_catalogue(node, body)

    def _store_catalogue(self, node: Principal, body: dict[str, Any]) -> dict[str, Any]:
        now = utcnow()
        with self.sessions.begin() as s:
            row = s.scalars(
                select(CatalogueRow).where(CatalogueRow.node_id == node.id).with_for_update()
            ).first()
            if row is None:
                s.add(CatalogueRow(node_id=node.id, catalogue=body, received_at=now))
            else:
                row.catalogue, row.received_at = body, now
            self._audit(
                s,
                f"node:{node.name}",
                "catalogue.published",
                generated_at=body["generated_at"],
                last_ingest=body["last_ingest"],
            )
        return {"node": node.name, "received_at": now.isoformat()}

    def catalogues(self) -> list[dict[str, Any]]:
        """Every node's latest catalogue: node, country (the hub's registration), received_at."""
        with self.sessions() as s:
            rows = s.execute(
                select(CatalogueRow, NodeRow)
                .join(NodeRow, NodeRow.id == CatalogueRow.node_id)
                .order_by(NodeRow.name)
            ).all()
            return [_published(c, n) for c, n in rows]

    def catalogue(self, name: str) -> dict[str, Any]:
        with self.sessions() as s:
            found = s.execute(
                select(CatalogueRow, NodeRow)
                .join(NodeRow, NodeRow.id == CatalogueRow.node_id)
                .where(NodeRow.name == name)
            ).first()
            if found is None:
                raise NotFound(f"no catalogue of node {name[:100]!r}")
            return _published(*found)

    # ---- audit heads -------------------------------------------------------------------
    @staticmethod
    def _head_at_hub(row: NodeRow) -> HeadAtHub:
        head = None
        if row.audit_seq is not None and row.audit_hash is not None:
            head = AuditHead(seq=row.audit_seq, hash=row.audit_hash)
        return HeadAtHub(head=head, received_at=row.audit_received_at, alert=row.audit_alert)

    def audit_head(self, node_id: int) -> HeadAtHub:
        """What the hub holds of this node's audit log (the node checks its log against it)."""
        with self.sessions() as s:
            row = s.get(NodeRow, node_id)
            if row is None:
                raise NotFound(f"no node with id {node_id}")
            return self._head_at_hub(row)

    def record_audit_head(
        self, node_id: int, head: AuditHead, source: Literal["heartbeat", "answer"]
    ) -> HeadAtHub:
        """Keep the highest head a node sent; never lower it.

        A heartbeat carries the node's current head, so one with a lower seq than the hub holds
        means the log went back (cut or restored from a copy): an alert. An answer carries the
        head of when it was logged, and answers may be posted late (outbox, manual release), so
        a lower seq there is stale, not an alert. The same seq with another hash is a rewritten
        log, whatever carried it.
        """
        with self.sessions.begin() as s:
            row = s.get(NodeRow, node_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no node with id {node_id}")
            self._move_head(s, row, head, source)
            return self._head_at_hub(row)

    def _move_head(self, s: Session, row: NodeRow, head: AuditHead, source: str) -> None:
        now = utcnow()
        held_seq, held_hash = row.audit_seq, row.audit_hash
        if held_seq is None or head.seq > held_seq:
            row.audit_seq, row.audit_hash, row.audit_received_at = head.seq, head.hash, now
            return
        if head.seq == held_seq and head.hash == held_hash:
            row.audit_received_at = now
            return
        if head.seq == held_seq:
            why = (
                f"head {head.seq} changed hash from {held_hash[:12] if held_hash else None} "
                f"to {head.hash[:12]} at {now.isoformat()} ({source})"
            )
        elif source == "heartbeat":
            why = f"head went back from {held_seq} to {head.seq} at {now.isoformat()} ({source})"
        else:
            return  # a stale head in a late-posted answer
        if row.audit_alert is None:  # the first alert stands; repeats of it are not re-logged
            row.audit_alert = why
            self._audit(
                s,
                f"node:{row.name}",
                "audit-head-alert",
                alert=why,
                held={"seq": held_seq, "hash": held_hash},
                sent={"seq": head.seq, "hash": head.hash},
                source=source,
            )

    def users(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            return [
                {"name": u.name, "role": u.role, "revoked": u.revoked_at is not None}
                for u in s.scalars(select(UserRow).order_by(UserRow.name))
            ]

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
                raise HubError(f"min_nodes must be between 1 and {len(chosen)}, got {need}")
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
            self._audit(s, who, "submit-study", study=study_id, analysis=analysis, nodes=chosen)
        return study_id

    def admit_study(
        self,
        s: Session,
        owner: Principal | None,
        spec: dict[str, Any],
        analysis: str,
        chosen: list[str],
    ) -> Admission:
        """The project check of a study (governance/hub_projects.py); tests override it to
        play a hub that forwards everything, so the node's own check is seen to hold."""
        return self.projects.admit(s, owner, spec, analysis, chosen, self.open_studies)

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
            "spec": row.spec,  # what was asked, as submitted (its owner's or an admin's view)
        }

    def studies(self, viewer: Principal | None = None) -> list[dict[str, Any]]:
        """The studies `viewer` may see, oldest first: id, title, analysis, status, project
        and times (the result only from `study`)."""
        with self.sessions() as s:
            rows = s.scalars(select(StudyRow).order_by(StudyRow.created_at))
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
                if self._may_see(r, viewer)
            ]

    def record_read(self, viewer: Principal, study: dict[str, Any]) -> None:
        """Audit that `viewer` read a study: "read-result" once it has its result."""
        done = study.get("status") in ("done", "failed")
        with self.sessions.begin() as s:
            self._audit(
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
            self._audit(s, who.name, f"{action}-refused", reason=reason[:500], role=who.role)

    def refusals(self, project: str | None = None) -> list[dict[str, Any]]:
        """Per study, oldest first, what its nodes refused or withheld, in the words of their
        disclosure gates (the answers' public reasons, nothing else): the board's view. A
        study's `project` is read from its spec; `project` keeps only that project's studies."""
        with self.sessions() as s:
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
            stmt = select(StudyRow.id).where(StudyRow.status.in_(("queued", "running")))
            return list(s.scalars(stmt.order_by(StudyRow.created_at)))

    def set_study_status(
        self,
        study_id: str,
        status: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        with self.sessions.begin() as s:
            row = s.get(StudyRow, study_id)
            if row is None:
                raise NotFound(f"no study {study_id!r}")
            if status == "running" and row.status != "running":
                self._audit(s, "hub", "study-started", study=study_id, was=row.status)
            row.status = status
            if status in ("done", "failed"):
                row.result, row.error, row.finished_at = result, error, utcnow()
                self._audit(s, "hub", f"study-{status}", study=study_id, error=error)
        self.waker.wake(f"study:{study_id}")

    # ---- rounds and tasks --------------------------------------------------------------
    def open_round(
        self, study_id: str, round_no: int, task: Task, nodes: list[str], timeout: float
    ) -> int:
        """Create round `round_no` with one task per node, or return it if it exists (resume)."""
        body = task.model_dump(mode="json")
        with self.sessions.begin() as s:
            existing = s.scalar(
                select(RoundRow).where(RoundRow.study_id == study_id, RoundRow.round_no == round_no)
            )
            if existing is not None:
                if task_fingerprint(existing.task) != task_fingerprint(body):
                    raise HubError(
                        f"study {study_id}: round {round_no} on resume asks something different "
                        "from the round stored before the restart"
                    )
                return existing.id
            rnd = RoundRow(
                study_id=study_id,
                round_no=round_no,
                task=body,
                deadline=utcnow() + timedelta(seconds=timeout),
            )
            s.add(rnd)
            s.flush()
            node_rows = s.scalars(select(NodeRow).where(NodeRow.name.in_(nodes))).all()
            for node in node_rows:
                s.add(TaskRow(id=uuid.uuid4().hex, round_id=rnd.id, node_id=node.id))
            self._audit(s, "hub", "open-round", study=study_id, round=round_no, nodes=nodes)
            round_id = rnd.id
            node_ids = [n.id for n in node_rows]
        self.waker.wake(*(f"node:{i}" for i in node_ids))
        return round_id

    def pending_tasks(self, node_id: int, redeliver: bool = False) -> list[Task]:
        """Open tasks of this node (and only this node); marks them delivered.

        `redeliver` also returns tasks delivered before but not answered: a node agent that was
        killed mid-task asks for them again when it restarts.
        """
        states = ("pending", "delivered") if redeliver else ("pending",)
        with self.sessions.begin() as s:
            rows = s.execute(
                select(TaskRow, RoundRow)
                .join(RoundRow, TaskRow.round_id == RoundRow.id)
                .join(StudyRow, RoundRow.study_id == StudyRow.id)
                .where(
                    TaskRow.node_id == node_id,
                    TaskRow.status.in_(states),
                    RoundRow.closed_at.is_(None),
                    StudyRow.status == "running",
                )
                .order_by(RoundRow.created_at)
            ).all()
            out = []
            for task_row, rnd in rows:
                task_row.status = "delivered"
                task_row.delivered_at = utcnow()
                out.append(Task.model_validate({**rnd.task, "task_id": task_row.id}))
            return out

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
        if answer.summary is not None:
            Summary.from_dict(answer.summary)
        try:
            return self._record_answer(node_id, answer, source, by)
        except IntegrityError:
            # Two copies raced past the check; the unique task_id kept one: judge this one again.
            return self._record_answer(node_id, answer, source, by)

    def _record_answer(
        self, node_id: int, answer: Answer, source: str, by: str | None = None
    ) -> Recorded:
        digest = answer_digest(answer)
        with self.sessions.begin() as s:
            task = s.get(TaskRow, answer.task_id, with_for_update=True)
            if task is None or task.node_id != node_id:
                raise NotFound(f"no task {answer.task_id!r} for this node")
            node = s.get(NodeRow, node_id, with_for_update=True)  # its audit head may move
            assert node is not None
            if answer.node != node.name:
                raise Conflict(f"answer names node {answer.node!r} but comes from {node.name!r}")
            rnd = s.get(RoundRow, task.round_id)
            assert rnd is not None
            if answer.summary is not None:
                self._check_summary(rnd.task, answer.summary)
            held = s.scalar(select(AnswerRow).where(AnswerRow.task_id == task.id))
            if held is not None:
                if held.digest != digest:
                    raise Conflict(f"task {task.id} already has a different answer")
                return Recorded("duplicate", task.id)
            if answer.audit_head is not None:
                self._move_head(s, node, answer.audit_head, "answer")
            late = rnd.closed_at is not None or utcnow() > rnd.deadline
            s.add(
                AnswerRow(
                    task_id=task.id,
                    status=answer.status,
                    reason=answer.reason,
                    summary=answer.summary,
                    digest=digest,
                    source=source,
                    late=late,
                )
            )
            task.status = "late" if late else answer.status
            self._audit(
                s,
                f"node:{node.name}",
                "answer-late" if late else "answer",
                study=rnd.study_id,
                round=rnd.round_no,
                status=answer.status,
                source=source,
                **({"imported_by": by} if by else {}),
            )
            study_id = rnd.study_id
        self.waker.wake(f"study:{study_id}", f"round:{task.round_id}")
        return Recorded("late" if late else "accepted", task.id)

    def _check_summary(self, task: dict[str, Any], summary: dict[str, Any]) -> None:
        """MalformedSummary unless `summary` is what the task's analysis sends for its request."""
        analysis = self.analyses(str(task.get("analysis")))
        if analysis is None:
            return
        try:
            params = analysis.params_model.model_validate(task.get("params") or {})
        except ValidationError as exc:  # validated at submission: the analysis changed since
            raise Conflict(f"task parameters no longer valid for {analysis.name}: {exc}") from None
        analysis.check_summary(Summary.from_dict(summary), params, task.get("request") or {})

    def round_state(self, round_id: int) -> tuple[bool, datetime]:
        """(every task has an answer, deadline)."""
        with self.sessions() as s:
            rnd = s.get(RoundRow, round_id)
            assert rnd is not None
            waiting = s.scalar(
                select(TaskRow.id)
                .where(TaskRow.round_id == round_id, TaskRow.status.in_(("pending", "delivered")))
                .limit(1)
            )
            return waiting is None or rnd.closed_at is not None, rnd.deadline

    def close_round(self, round_id: int) -> dict[str, Answer]:
        """Close a round: unanswered tasks become timeouts; return every node's answer."""
        with self.sessions.begin() as s:
            rnd = s.get(RoundRow, round_id)
            assert rnd is not None
            if rnd.closed_at is None:
                rnd.closed_at = utcnow()
                s.execute(
                    update(TaskRow)
                    .where(
                        TaskRow.round_id == round_id,
                        TaskRow.status.in_(("pending", "delivered")),
                    )
                    .values(status="timeout")
                )
            study = s.get(StudyRow, rnd.study_id)
            assert study is not None
            rows = s.execute(
                select(TaskRow, NodeRow, AnswerRow)
                .join(NodeRow, TaskRow.node_id == NodeRow.id)
                .outerjoin(AnswerRow, AnswerRow.task_id == TaskRow.id)
                .where(TaskRow.round_id == round_id)
            ).all()
            out: dict[str, Answer] = {}
            for task, node, ans in rows:
                if ans is not None and not ans.late:
                    out[node.name] = Answer(
                        task_id=task.id,
                        node=node.name,
                        status=ans.status,
                        reason=ans.reason,
                        summary=ans.summary,
                        sent_at=ans.received_at,
                    )
                else:
                    out[node.name] = Answer(
                        task_id=task.id,
                        node=node.name,
                        status="failed",
                        reason=f"no answer within the study timeout ({study.timeout:g} s)",
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

    def node_of_name(self, name: str) -> tuple[int, str, str | None]:
        """(id, token digest, Ed25519 public key) of a live node: what verifies its files."""
        with self.sessions() as s:
            row = s.scalar(select(NodeRow).where(NodeRow.name == name))
            if row is None or row.revoked_at is not None:
                raise NotFound(f"no live node named {name!r}")
            return row.id, row.token_hash, row.public_key


def _published(row: CatalogueRow, node: NodeRow) -> dict[str, Any]:
    return {
        "node": node.name,
        "country": node.country,
        "received_at": row.received_at.isoformat(),
        "catalogue": row.catalogue,
    }


def _headline(row: CatalogueRow | None) -> dict[str, Any] | None:
    """What the node list shows of a node's catalogue (cheap: read from the stored body)."""
    if row is None:
        return None
    body = row.catalogue
    return {
        "patients": (body.get("patients") or {}).get("count"),
        "last_ingest": body.get("last_ingest"),
        "generated_at": body.get("generated_at"),
        "received_at": row.received_at.isoformat(),
    }
