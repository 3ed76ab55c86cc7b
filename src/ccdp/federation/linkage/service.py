"""The linkage service's operations, apart from HTTP: members and tokens, runs, uploads, the
linking itself, the results each node may fetch, and the audit record of each step.

What the service holds and learns (docs/linkage.md): per run, each node's encodings under
per-run pseudonyms it cannot invert, until the run is linked (then deleted in the transaction
that stores the groups, or when linking fails); per node, its linked records' (pseudonym,
group, size) and, for those linked records only, the earliest diagnosis and last-contact years
and the keep flag, until that node confirms it stored them. Never an identifier, a stored
patient key or the linkage secret. Linking runs in the service's link worker (worker.py),
never inside a request.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from ccdp.federation.hub import audit as hub_audit
from ccdp.federation.hub.auth import hash_token, new_token, same_digest
from ccdp.federation.hub.context import Conflict, Forbidden, HubError, NotFound, Principal
from ccdp.federation.linkage import core
from ccdp.federation.linkage.db import scrub
from ccdp.federation.linkage.models import ClkRow, MemberRow, ResultRow, RunNodeRow, RunRow
from ccdp.federation.linkage.protocol import CreateRun, Upload, Years
from ccdp.wire.protocol import Clock, utcnow

SERVICE = "linkage-service"
FINISHED = ("done", "failed", "cancelled")  # a run in these states holds nothing
log = logging.getLogger("ccdp.linkage.service")


class LinkageRefused(HubError):
    """An upload or request the service refuses (wrong schema, bad encoding, wrong state)."""


@dataclass(frozen=True)
class Member:
    name: str
    kind: str
    token: str


class LinkageService:
    """Runs of record linkage between nodes, each step in the service's audit chain."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock = utcnow,
        link: Callable[[dict[str, list[bytes]], int, float], dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.link = link or core.link_registries
        self.notify: Callable[[], None] = lambda: None  # the link worker's wake-up, once started

    # -- members -------------------------------------------------------------------------------
    def add_member(self, name: str, kind: str, actor: str = "cli") -> Member:
        """A new node or admin with a fresh token (shown once; only its digest is kept)."""
        if kind not in ("node", "admin"):
            raise LinkageRefused(f"a member is a node or an admin, not {kind!r}")
        token = new_token("node" if kind == "node" else "user")
        with self.sessions.begin() as s:
            if s.scalar(select(MemberRow).where(MemberRow.name == name)) is not None:
                raise Conflict(f"a member named {name!r} exists already")
            s.add(MemberRow(name=name, kind=kind, token_hash=hash_token(token)))
            hub_audit.append(s, actor, f"add-{kind}", {"name": name})
        return Member(name, kind, token)

    def members(self, actor: str = "cli") -> list[dict[str, Any]]:
        """Every node and admin: name, kind, when added, whether revoked (never a token or its
        digest); the listing itself is an audit record."""
        with self.sessions.begin() as s:
            rows = s.scalars(select(MemberRow).order_by(MemberRow.kind, MemberRow.name)).all()
            out = [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "created_at": r.created_at.isoformat(),
                    "revoked": bool(r.revoked),
                }
                for r in rows
            ]
            hub_audit.append(s, actor, "list-members", {"members": len(out)})
        return out

    def revoke(self, name: str, actor: str = "cli") -> dict[str, Any]:
        """Revoke a member: its token is refused from now on (401) and a revoked node cannot be
        named in a new run. Runs that already name it wait on it until they are given up."""
        with self.sessions.begin() as s:
            row = s.scalar(select(MemberRow).where(MemberRow.name == name))
            if row is None:
                raise NotFound(f"no member named {name!r}")
            if row.revoked:
                raise Conflict(f"{row.kind} {name!r} is revoked already")
            row.revoked = True
            hub_audit.append(s, actor, f"revoke-{row.kind}", {"name": name})
            return {"name": row.name, "kind": row.kind, "revoked": True}

    def authenticate(self, token: str) -> Principal | None:
        """The member holding `token` (None if unknown or revoked); admins act as admin users."""
        digest = hash_token(token)
        with self.sessions() as s:
            row = s.scalar(select(MemberRow).where(MemberRow.token_hash == digest))
        if row is None or row.revoked or not same_digest(row.token_hash, digest):
            return None
        if row.kind == "admin":
            return Principal("user", row.id, row.name, "admin")
        return Principal("node", row.id, row.name)

    async def check_token(self, token: str) -> Principal | None:
        """`authenticate` for the hub's doors (which await it), in a worker thread."""
        return await run_in_threadpool(self.authenticate, token)

    # -- runs ----------------------------------------------------------------------------------
    def create_run(self, admin: Principal, body: CreateRun) -> dict[str, Any]:
        """A run over registered nodes; its tie key (random) decides ties of the keep rule."""
        with self.sessions.begin() as s:
            if s.get(RunRow, body.run_id) is not None:
                raise Conflict(f"run {body.run_id!r} exists already")
            known = {
                r.name: r.revoked
                for r in s.scalars(
                    select(MemberRow).where(
                        MemberRow.name.in_(body.nodes), MemberRow.kind == "node"
                    )
                )
            }
            unknown = [n for n in body.nodes if n not in known]
            if unknown:
                raise NotFound(
                    f"no node named {', '.join(unknown)} (add it: ccdp linkage add-node)"
                )
            revoked = [n for n in body.nodes if known[n]]
            if revoked:
                raise Conflict(f"node {', '.join(revoked)} is revoked: it joins no new run")
            s.add(
                RunRow(
                    id=body.run_id,
                    threshold=body.threshold,
                    created_by=admin.name,
                    created_at=self.clock(),
                    tie_key=secrets.token_hex(32),
                )
            )
            s.flush()  # the run before its nodes (their foreign key)
            s.add_all(RunNodeRow(run_id=body.run_id, node=n) for n in body.nodes)
            hub_audit.append(
                s,
                admin.name,
                "linkage-run-created",
                {"run": body.run_id, "nodes": body.nodes, "threshold": body.threshold},
            )
        return self.status(admin, body.run_id)

    def cancel(self, admin: Principal, run_id: str) -> dict[str, Any]:
        """Give a run up (an admin's): one that cannot finish (a node revoked or gone) or is no
        longer wanted. Its encodings and groups are deleted and scrubbed at once; a link worker
        half-way through it stores nothing (`_store_links` finds the run no longer linking);
        its nodes see `cancelled` and stop. A finished run is refused: nothing is left there."""
        with self.sessions.begin() as s:
            run = s.get(RunRow, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            if run.state in FINISHED:
                raise Conflict(f"run {run_id!r} is {run.state}: nothing to cancel")
            clks = s.scalar(select(func.count()).select_from(ClkRow).where(ClkRow.run_id == run_id))
            groups = s.scalar(
                select(func.count()).select_from(ResultRow).where(ResultRow.run_id == run_id)
            )
            s.execute(delete(ClkRow).where(ClkRow.run_id == run_id))
            s.execute(delete(ResultRow).where(ResultRow.run_id == run_id))
            was, run.state, run.error = run.state, "cancelled", f"admin {admin.name} gave it up"
            hub_audit.append(
                s,
                admin.name,
                "linkage-cancelled",
                {
                    "run": run_id,
                    "state": was,
                    "clks_deleted": int(clks or 0),
                    "results_deleted": int(groups or 0),
                },
            )
        scrub(self.sessions, "linkage_results", "linkage_clks")
        return self.status(admin, run_id)

    def _run(self, s: Session, who: Principal, run_id: str) -> RunRow:
        """The run, if `who` may see it: admins every run, a node only the runs naming it."""
        run = s.get(RunRow, run_id)
        if run is not None and who.kind == "node":
            named = s.scalar(
                select(RunNodeRow).where(RunNodeRow.run_id == run_id, RunNodeRow.node == who.name)
            )
            if named is None:
                raise Forbidden(f"node {who.name!r} is not in run {run_id!r}")
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        return run

    def status(self, who: Principal, run_id: str) -> dict[str, Any]:
        """The run's state and, per node, which steps it has done; record counts for admins and
        for the node itself only (a node learns nothing of another registry's size). `wait`
        (for a node) says its next step waits on the others."""
        with self.sessions() as s:
            run = self._run(s, who, run_id)
            nodes = s.scalars(
                select(RunNodeRow).where(RunNodeRow.run_id == run_id).order_by(RunNodeRow.node)
            ).all()
            out: dict[str, Any] = {
                "run_id": run.id,
                "state": run.state,
                "threshold": run.threshold,
                "error": run.error,
                "nodes": {n.node: self._node_status(who, n) for n in nodes},
            }
            if who.kind == "node":
                mine = next(n for n in nodes if n.node == who.name)
                out["you"] = who.name
                out["wait"] = (
                    (run.state == "uploading" and mine.uploaded_at is not None)
                    or run.state == "linking"
                    or (run.state == "linked" and mine.years_at is not None)
                )
            if run.state == "linking":
                last = max(n.uploaded_at for n in nodes if n.uploaded_at is not None)
                out["linking_seconds"] = round((self.clock() - last).total_seconds(), 1)
        return out

    @staticmethod
    def _node_status(who: Principal, n: RunNodeRow) -> dict[str, Any]:
        done: dict[str, Any] = {
            "uploaded": n.uploaded_at is not None,
            "years_sent": n.years_at is not None,
            "confirmed": n.downloaded_at is not None,
        }
        if who.kind == "user" or n.node == who.name:
            done |= {"records": n.records, "linked": n.linked}
        return done

    # -- upload and linking -----------------------------------------------------------------------
    def upload(self, node: Principal, run_id: str, body: Upload) -> dict[str, Any]:
        """Store one node's encodings for the run and return at once; the last node's upload
        turns the run to `linking` and wakes the link worker (linking never runs in a request)."""
        clks = _decoded(body)
        try:
            waiting = self._store_upload(node, run_id, body, clks)
        except IntegrityError:  # the same node's upload, sent twice at once: one is kept
            raise Conflict(f"node {node.name!r} has uploaded to run {run_id!r} already") from None
        if not waiting:
            self.notify()
        return self.status(node, run_id)

    def _store_upload(self, node: Principal, run_id: str, body: Upload, clks: list[bytes]) -> int:
        """Store the encodings; how many nodes of the run have still to upload."""
        with self.sessions.begin() as s:
            run = self._run(s, node, run_id)
            if run.state != "uploading":
                raise Conflict(f"run {run_id!r} is {run.state}: it takes no more uploads")
            mine = self._mine(s, run_id, node)
            if mine.uploaded_at is not None:
                raise Conflict(f"node {node.name!r} has uploaded to run {run_id!r} already")
            _same_encoding(run, body)
            s.add_all(
                ClkRow(run_id=run_id, node=node.name, pseudonym=r.p, clk=c)
                for r, c in zip(body.records, clks, strict=True)
            )
            mine.records, mine.uploaded_at = len(clks), self.clock()
            hub_audit.append(s, node.name, "linkage-upload", {"run": run_id, "records": len(clks)})
            s.flush()
            waiting = s.scalar(
                select(func.count())
                .select_from(RunNodeRow)
                .where(RunNodeRow.run_id == run_id, RunNodeRow.uploaded_at.is_(None))
            )
            if not waiting:
                run.state = "linking"
                hub_audit.append(s, SERVICE, "linkage-linking", {"run": run_id})
        return int(waiting or 0)

    def pending(self) -> list[str]:
        """The runs whose uploads are complete and that wait for the link worker (also those a
        stopped service left half-way: their encodings are still here)."""
        with self.sessions() as s:
            return list(
                s.scalars(select(RunRow.id).where(RunRow.state == "linking").order_by(RunRow.id))
            )

    def link_pending(self) -> int:
        """Link every run waiting for it, one after the other (the worker's one job); how many."""
        runs = self.pending()
        for run_id in runs:
            self.link_run(run_id)
        return len(runs)

    def link_run(self, run_id: str) -> None:
        """Link the run's encodings outside any transaction, then store each node's groups and
        delete every encoding in one; a run that cannot be linked is marked failed, its
        encodings deleted all the same, with a reason that names the error's kind only."""
        try:
            loaded = self._load(run_id)
            if loaded is None:
                return
            run, per_node = loaded
            results = self._groups(run, per_node)
            self._store_links(run_id, per_node, results)
        except Exception as exc:  # the core's or the database's: no encoding may stay behind
            self._fail(run_id, exc)
        finally:
            scrub(self.sessions, "linkage_clks")

    def _load(self, run_id: str) -> tuple[RunRow, dict[str, list[Any]]] | None:
        """The run and its encodings per node, if it is waiting to be linked."""
        with self.sessions() as s:
            run = s.get(RunRow, run_id)
            if run is None or run.state != "linking":
                return None
            rows = s.execute(
                select(ClkRow.node, ClkRow.pseudonym, ClkRow.clk)
                .where(ClkRow.run_id == run_id)
                .order_by(ClkRow.id)
            ).all()
            nodes = s.scalars(select(RunNodeRow.node).where(RunNodeRow.run_id == run_id)).all()
        per_node: dict[str, list[Any]] = {n: [] for n in nodes}
        for r in rows:
            per_node[r.node].append(r)
        return run, per_node

    def _store_links(
        self, run_id: str, per_node: dict[str, list[Any]], results: list[ResultRow]
    ) -> None:
        """The groups stored and every encoding of the run deleted, in one transaction."""
        with self.sessions.begin() as s:
            run = s.get(RunRow, run_id, with_for_update=True)
            if run is None or run.state != "linking":  # another worker stored it first
                return
            s.add_all(results)
            linked = {n: sum(1 for r in results if r.node == n) for n in per_node}
            for n in s.scalars(select(RunNodeRow).where(RunNodeRow.run_id == run_id)):
                n.linked = linked.get(n.node, 0)
            s.execute(delete(ClkRow).where(ClkRow.run_id == run_id))
            run.state, run.linked_at = "linked", self.clock()
            hub_audit.append(
                s,
                SERVICE,
                "linkage-linked",
                {
                    "run": run_id,
                    "records": {n: len(v) for n, v in per_node.items()},
                    "linked": linked,
                    "groups": len({r.group_id for r in results}),
                    "threshold": run.threshold,
                    "clks_deleted": sum(len(v) for v in per_node.values()),
                },
            )

    def _fail(self, run_id: str, exc: BaseException) -> None:
        """Mark the run failed and delete its encodings. The reason is the error's class name
        only: an exception's message could quote a value, and nodes read the reason."""
        reason = f"linking failed ({type(exc).__name__}); the service's operator has the details"
        log.error("linkage run %s: linking failed: %s", run_id, type(exc).__name__)
        with self.sessions.begin() as s:
            run = s.get(RunRow, run_id, with_for_update=True)
            if run is None or run.state != "linking":
                return
            deleted = s.scalar(
                select(func.count()).select_from(ClkRow).where(ClkRow.run_id == run_id)
            )
            s.execute(delete(ClkRow).where(ClkRow.run_id == run_id))
            run.state, run.error = "failed", reason
            hub_audit.append(
                s,
                SERVICE,
                "linkage-failed",
                {"run": run_id, "error": reason, "clks_deleted": int(deleted or 0)},
            )

    def _groups(self, run: RunRow, per_node: dict[str, list[Any]]) -> list[ResultRow]:
        """Each linked record's result row: random group id and group size (keep comes later,
        from the years of the linked records only)."""
        filled = {n: v for n, v in per_node.items() if v}
        if len(filled) < 2 or run.bits is None:
            return []
        clks = {n: [r.clk for r in v] for n, v in filled.items()}
        labels = self.link(clks, run.bits, run.threshold)
        members: dict[int, list[tuple[str, str]]] = {}
        for n, v in filled.items():
            for r, label in zip(v, labels[n].tolist(), strict=True):
                members.setdefault(int(label), []).append((n, r.pseudonym))
        out: list[ResultRow] = []
        for group in members.values():
            if len(group) < 2:
                continue
            gid = secrets.token_hex(8)
            out.extend(
                ResultRow(run_id=run.id, node=n, pseudonym=p, group_id=gid, group_size=len(group))
                for n, p in group
            )
        return out

    # -- results -----------------------------------------------------------------------------------
    def groups(self, node: Principal, run_id: str) -> dict[str, Any]:
        """The node's own linked records (every other node's stay unseen); `keep` is null until
        every node has sent the years of its linked records."""
        with self.sessions() as s:
            run = self._run(s, node, run_id)
            if run.state in ("failed", "cancelled"):
                raise Conflict(f"run {run_id!r} {run.state}: {run.error}")
            if run.state in ("uploading", "linking"):
                raise Conflict(f"run {run_id!r} is not linked yet ({run.state}): wait for it")
            if self._mine(s, run_id, node).downloaded_at is not None:
                raise Conflict(f"node {node.name!r} has fetched and confirmed run {run_id!r}")
            rows = s.scalars(
                select(ResultRow)
                .where(ResultRow.run_id == run_id, ResultRow.node == node.name)
                .order_by(ResultRow.id)
            ).all()
            return {
                "run_id": run_id,
                "state": run.state,
                "records": [
                    {"p": r.pseudonym, "group": r.group_id, "size": r.group_size, "keep": r.keep}
                    for r in rows
                ],
            }

    @staticmethod
    def _mine(s: Session, run_id: str, node: Principal) -> RunNodeRow:
        mine = s.scalar(
            select(RunNodeRow).where(RunNodeRow.run_id == run_id, RunNodeRow.node == node.name)
        )
        if mine is None:  # _run has checked it; kept for the type checker
            raise Forbidden(f"node {node.name!r} is not in run {run_id!r}")
        return mine

    def years(self, node: Principal, run_id: str, body: Years) -> dict[str, Any]:
        """The earliest diagnosis years of exactly this node's linked records; the last node's
        years decide which copy of each group pooled results keep."""
        with self.sessions.begin() as s:
            run = self._run(s, node, run_id)
            if run.state != "linked":
                raise Conflict(f"run {run_id!r} is {run.state}: it takes no years now")
            mine = self._mine(s, run_id, node)
            if mine.years_at is not None:
                raise Conflict(f"node {node.name!r} has sent its years for run {run_id!r}")
            rows = {
                r.pseudonym: r
                for r in s.scalars(
                    select(ResultRow).where(ResultRow.run_id == run_id, ResultRow.node == node.name)
                )
            }
            sent = [r.p for r in body.records]
            if len(set(sent)) != len(sent) or set(sent) != set(rows):
                raise LinkageRefused(
                    f"records: send one year for each of this node's {len(rows)} linked "
                    f"record(s) of the run, and no other ({len(sent)} sent)"
                )
            for r in body.records:
                rows[r.p].year, rows[r.p].last_year = r.year, r.last
            mine.years_at = self.clock()
            hub_audit.append(s, node.name, "linkage-years", {"run": run_id, "records": len(sent)})
            s.flush()
            left = s.scalar(
                select(func.count())
                .select_from(RunNodeRow)
                .where(RunNodeRow.run_id == run_id, RunNodeRow.years_at.is_(None))
            )
            if not left:
                self._decide(s, run)
        return self.status(node, run_id)

    def _decide(self, s: Session, run: RunRow) -> None:
        """The keep rule: in each group the copy with the earliest diagnosis year (unknown
        last); among those, the copy with the latest last-contact year (unknown last), so a
        copy made abroad, followed only while the child was treated there, does not stand for
        a child its origin follows longer; a tie still goes to the node whose name has the
        smaller HMAC under the run's random tie key, so no registry is favoured from run to
        run."""
        key = bytes.fromhex(run.tie_key)
        groups: dict[str, list[ResultRow]] = {}
        for r in s.scalars(select(ResultRow).where(ResultRow.run_id == run.id)):
            groups.setdefault(r.group_id, []).append(r)
        for members in groups.values():
            kept = min(
                members,
                key=lambda r: (
                    _year_order(r.year),
                    _later_first(r.last_year),
                    hmac.digest(key, r.node.encode(), "sha256"),
                ),
            )
            for r in members:
                r.keep = r is kept
        run.state = "ready"
        hub_audit.append(s, SERVICE, "linkage-kept", {"run": run.id, "groups": len(groups)})

    def confirm(self, node: Principal, run_id: str) -> dict[str, Any]:
        """The node stored its groups: delete them here; the run is done when every node has."""
        with self.sessions.begin() as s:
            run = self._run(s, node, run_id)
            if run.state not in ("ready", "done"):
                raise Conflict(f"run {run_id!r} is {run.state}: nothing to confirm")
            mine = self._mine(s, run_id, node)
            if mine.downloaded_at is None:
                s.execute(
                    delete(ResultRow).where(ResultRow.run_id == run_id, ResultRow.node == node.name)
                )
                mine.downloaded_at = self.clock()
                hub_audit.append(s, node.name, "linkage-confirmed", {"run": run_id})
            s.flush()
            left = s.scalar(
                select(func.count())
                .select_from(RunNodeRow)
                .where(RunNodeRow.run_id == run_id, RunNodeRow.downloaded_at.is_(None))
            )
            done = not left and run.state == "ready"
            if done:
                run.state = "done"
                hub_audit.append(s, SERVICE, "linkage-done", {"run": run_id})
        # a done run rewrites both tables on PostgreSQL (its encodings again, in case a reader
        # held them past the vacuum after linking); SQLite truncates its log at every confirm
        scrub(self.sessions, *(("linkage_results", "linkage_clks") if done else ()))
        return self.status(node, run_id)


def _year_order(year: int | None) -> int:
    """An unknown diagnosis year sorts after every known one."""
    return year if year is not None else 10_000


def _later_first(year: int | None) -> int:
    """A later last-contact year sorts first, an unknown one after every known one."""
    return -year if year is not None else 0


def _decoded(body: Upload) -> list[bytes]:
    """Every record's encoding as bytes of the declared length, distinct pseudonyms."""
    size = body.bits // 8
    out: list[bytes] = []
    for i, r in enumerate(body.records):
        try:
            clk = base64.b64decode(r.clk, validate=True)
        except (binascii.Error, ValueError):
            raise LinkageRefused(f"records[{i}].clk: not base64") from None
        if len(clk) != size:
            raise LinkageRefused(
                f"records[{i}].clk: {len(clk)} bytes, but bits={body.bits} means {size}"
            )
        out.append(clk)
    if len({r.p for r in body.records}) != len(body.records):
        raise LinkageRefused("records: a pseudonym appears twice")
    return out


def _same_encoding(run: RunRow, body: Upload) -> None:
    """The first upload fixes the run's schema, secret id and length; the others must match."""
    if run.schema_id is None:
        run.schema_id, run.secret_id, run.bits = body.schema_id, body.secret_id, body.bits
        return
    for what, mine, theirs in (
        ("schema", body.schema_id, run.schema_id),
        ("secret", body.secret_id, run.secret_id),
        ("length (bits)", str(body.bits), str(run.bits)),
    ):
        if mine != theirs:
            raise Conflict(
                f"this upload's {what} differs from the run's: encodings made with another "
                "schema or secret cannot be compared (rotate together, then re-encode)"
            )
