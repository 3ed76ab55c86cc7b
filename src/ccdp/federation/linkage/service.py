"""The linkage service's operations, apart from HTTP: members and tokens, runs, uploads, the
linking itself, the results each node may fetch, and the audit record of each step.

What the service holds and learns (docs/linkage-protocol.md): per run, each node's encodings and
each record's earliest diagnosis year, under per-run pseudonyms it cannot invert, until the run is
linked (then deleted in the transaction that stores the groups); per node, its linked records'
(pseudonym, group, keep, size) until that node confirms it stored them. Never an identifier, a
stored patient key or the linkage secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from ccdp.federation.hub import audit as hub_audit
from ccdp.federation.hub.auth import hash_token, new_token, same_digest
from ccdp.federation.hub.context import Conflict, Forbidden, HubError, NotFound, Principal
from ccdp.federation.linkage import core
from ccdp.federation.linkage.db import scrub
from ccdp.federation.linkage.models import ClkRow, MemberRow, ResultRow, RunNodeRow, RunRow
from ccdp.federation.linkage.protocol import CreateRun, Upload
from ccdp.wire.protocol import Clock, utcnow

SERVICE = "linkage-service"


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

    # -- runs ----------------------------------------------------------------------------------
    def create_run(self, admin: Principal, body: CreateRun) -> dict[str, Any]:
        """A run over registered nodes; its tie key (random) decides ties of the keep rule."""
        with self.sessions.begin() as s:
            if s.get(RunRow, body.run_id) is not None:
                raise Conflict(f"run {body.run_id!r} exists already")
            known = set(
                s.scalars(
                    select(MemberRow.name).where(
                        MemberRow.name.in_(body.nodes), MemberRow.kind == "node"
                    )
                )
            )
            unknown = [n for n in body.nodes if n not in known]
            if unknown:
                raise NotFound(
                    f"no node named {', '.join(unknown)} (add it: ccdp linkage add-node)"
                )
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
        """The run's state and, per node, whether it uploaded and downloaded; record counts
        for admins only (a node learns nothing of another registry's size)."""
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
                "nodes": {
                    n.node: {
                        "uploaded": n.uploaded_at is not None,
                        "downloaded": n.downloaded_at is not None,
                    }
                    | (
                        {"records": n.records, "linked": n.linked}
                        if who.kind == "user" or n.node == who.name
                        else {}
                    )
                    for n in nodes
                },
            }
            if who.kind == "node":
                out["you"] = who.name
        return out

    # -- upload and linking -----------------------------------------------------------------------
    def upload(self, node: Principal, run_id: str, body: Upload) -> dict[str, Any]:
        """Store one node's encodings for the run; the last node's upload links the run."""
        clks = _decoded(body)
        with self.sessions.begin() as s:
            run = self._run(s, node, run_id)
            if run.state != "open":
                raise Conflict(f"run {run_id!r} is {run.state}: it takes no more uploads")
            mine = s.scalar(
                select(RunNodeRow).where(RunNodeRow.run_id == run_id, RunNodeRow.node == node.name)
            )
            assert mine is not None  # _run checked the node is in the run
            if mine.uploaded_at is not None:
                raise Conflict(f"node {node.name!r} has uploaded to run {run_id!r} already")
            _same_encoding(run, body)
            s.add_all(
                ClkRow(run_id=run_id, node=node.name, pseudonym=r.p, clk=c, year=r.year)
                for r, c in zip(body.records, clks, strict=True)
            )
            mine.records, mine.uploaded_at = len(clks), self.clock()
            hub_audit.append(s, node.name, "linkage-upload", {"run": run_id, "records": len(clks)})
            waiting = s.scalar(
                select(func.count())
                .select_from(RunNodeRow)
                .where(RunNodeRow.run_id == run_id, RunNodeRow.uploaded_at.is_(None))
            )
        if not waiting:
            self.link_run(run_id)
            scrub(self.sessions)
        return self.status(node, run_id)

    def link_run(self, run_id: str) -> None:
        """Link the run's encodings, store each node's groups, delete every encoding; a run the
        core cannot link is marked failed (its encodings deleted all the same)."""
        with self.sessions.begin() as s:
            run = s.get(RunRow, run_id, with_for_update=True)
            if run is None or run.state != "open":
                return
            rows = s.execute(
                select(ClkRow.node, ClkRow.pseudonym, ClkRow.clk, ClkRow.year)
                .where(ClkRow.run_id == run_id)
                .order_by(ClkRow.id)
            ).all()
            nodes = s.scalars(select(RunNodeRow).where(RunNodeRow.run_id == run_id)).all()
            per_node: dict[str, list[Any]] = {n.node: [] for n in nodes}
            for r in rows:
                per_node[r.node].append(r)
            try:
                results = self._groups(run, per_node)
            except Exception as exc:  # the core's failure must not leave encodings behind
                run.state, run.error = "failed", f"linking failed: {type(exc).__name__}"
                s.execute(delete(ClkRow).where(ClkRow.run_id == run_id))
                hub_audit.append(s, SERVICE, "linkage-failed", {"run": run_id, "error": run.error})
                return
            s.add_all(results)
            linked = {n: sum(1 for r in results if r.node == n) for n in per_node}
            for n in nodes:
                n.linked = linked[n.node]
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
                    "clks_deleted": len(rows),
                },
            )

    def _groups(self, run: RunRow, per_node: dict[str, list[Any]]) -> list[ResultRow]:
        """Each linked record's result row: random group id, keep flag, group size."""
        filled = {n: v for n, v in per_node.items() if v}
        if len(filled) < 2 or run.bits is None:
            return []
        labels = self.link(
            {n: [r.clk for r in v] for n, v in filled.items()}, run.bits, run.threshold
        )
        members: dict[int, list[tuple[str, Any]]] = {}
        for n, v in filled.items():
            for r, label in zip(v, labels[n].tolist(), strict=True):
                members.setdefault(int(label), []).append((n, r))
        tie = {n: hmac.digest(bytes.fromhex(run.tie_key), n.encode(), "sha256") for n in filled}
        out: list[ResultRow] = []
        for group in members.values():
            if len(group) < 2:
                continue
            gid = secrets.token_hex(8)
            kept = min(group, key=lambda m: (_year_order(m[1].year), tie[m[0]]))
            out.extend(
                ResultRow(
                    run_id=run.id,
                    node=n,
                    pseudonym=r.pseudonym,
                    group_id=gid,
                    keep=n == kept[0],  # a group holds at most one record per node
                    group_size=len(group),
                )
                for n, r in group
            )
        return out

    # -- results -----------------------------------------------------------------------------------
    def groups(self, node: Principal, run_id: str) -> dict[str, Any]:
        """The node's own linked records (every other node's stay unseen)."""
        with self.sessions.begin() as s:
            run = self._run(s, node, run_id)
            if run.state == "failed":
                raise Conflict(f"run {run_id!r} failed: {run.error}")
            if run.state == "open":
                raise Conflict(f"run {run_id!r} is not linked yet: wait for every node's upload")
            mine = s.scalar(
                select(RunNodeRow).where(RunNodeRow.run_id == run_id, RunNodeRow.node == node.name)
            )
            assert mine is not None
            if mine.downloaded_at is not None:
                raise Conflict(f"node {node.name!r} has fetched and confirmed run {run_id!r}")
            rows = s.scalars(
                select(ResultRow)
                .where(ResultRow.run_id == run_id, ResultRow.node == node.name)
                .order_by(ResultRow.id)
            ).all()
            hub_audit.append(
                s, node.name, "linkage-download", {"run": run_id, "records": len(rows)}
            )
            return {
                "run_id": run_id,
                "records": [
                    {"p": r.pseudonym, "group": r.group_id, "keep": r.keep, "size": r.group_size}
                    for r in rows
                ],
            }

    def confirm(self, node: Principal, run_id: str) -> dict[str, Any]:
        """The node stored its groups: delete them here; the run is done when every node has."""
        with self.sessions.begin() as s:
            run = self._run(s, node, run_id)
            if run.state not in ("linked", "done"):
                raise Conflict(f"run {run_id!r} is {run.state}: nothing to confirm")
            mine = s.scalar(
                select(RunNodeRow).where(RunNodeRow.run_id == run_id, RunNodeRow.node == node.name)
            )
            assert mine is not None
            if mine.downloaded_at is None:
                s.execute(
                    delete(ResultRow).where(ResultRow.run_id == run_id, ResultRow.node == node.name)
                )
                mine.downloaded_at = self.clock()
                hub_audit.append(s, node.name, "linkage-confirmed", {"run": run_id})
            left = s.scalar(
                select(func.count())
                .select_from(RunNodeRow)
                .where(RunNodeRow.run_id == run_id, RunNodeRow.downloaded_at.is_(None))
            )
            if not left and run.state == "linked":
                run.state = "done"
                hub_audit.append(s, SERVICE, "linkage-done", {"run": run_id})
        scrub(self.sessions)
        return self.status(node, run_id)


def _year_order(year: int | None) -> int:
    """An unknown diagnosis year sorts after every known one."""
    return year if year is not None else 10_000


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
