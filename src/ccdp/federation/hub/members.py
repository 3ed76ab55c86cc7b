"""The hub's members: nodes and users, their tokens, and the audit heads nodes send.

Part of the core (service.py's `HubCore` is a `Members`): who may call the hub is the first rule
every route and feature relies on, so it is kept apart from the studies the core drives.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from sqlalchemy import Connection, Engine, Row, Select, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ccdp.federation.hub.auth import ROLES, Holder, TokenKind, hash_token, holder_of, new_token
from ccdp.federation.hub.context import HubContext, HubError, NotFound, Principal
from ccdp.federation.hub.loopreads import Listing, LoopReads, Query, loop_reads_for
from ccdp.federation.hub.models import NodeRow, UserRow
from ccdp.federation.hub.tokenbook import TokenBook, book_for
from ccdp.wire.protocol import AuditHead, HeadAtHub

T = TypeVar("T")

# the node list's columns, built once and read outside any transaction (no ORM objects)
_LISTED_NODES = select(
    NodeRow.id,
    NodeRow.name,
    NodeRow.country,
    NodeRow.last_seen,
    NodeRow.revoked_at,
    NodeRow.public_key,
    NodeRow.audit_seq,
    NodeRow.audit_hash,
    NodeRow.audit_received_at,
    NodeRow.audit_alert,
).order_by(NodeRow.name)
# a node's audit head, locked for the answer or heartbeat that may move it; Core statements
# built once (the ORM's load and flush of the node row were a sixth of an answer's hub CPU)
_NODE_HEAD = (
    select(
        NodeRow.id,
        NodeRow.name,
        NodeRow.audit_seq,
        NodeRow.audit_hash,
        NodeRow.audit_received_at,
        NodeRow.audit_alert,
    )
    .where(NodeRow.id == bindparam("b_node"))
    .with_for_update()
)
if TYPE_CHECKING:  # a row of _NODE_HEAD (SQLAlchemy 2.0's Row takes one type argument)
    NodeHead = Row[int, str, int | None, str | None, datetime | None, str | None]
# no .values(): the SET clause is the columns named in each execution's parameters
_SET_NODE_HEAD = update(NodeRow).where(NodeRow.id == bindparam("b_node"))


def head_change(
    held_seq: int | None, held_hash: str | None, head: AuditHead, source: str, now: datetime
) -> tuple[dict[str, Any], str | None]:
    """What `head`, sent by `source`, changes of the head a node row holds: the columns to
    set, and the alert it raises (None: no alert)."""
    if held_seq is None or head.seq > held_seq:
        return {"audit_seq": head.seq, "audit_hash": head.hash, "audit_received_at": now}, None
    if head.seq == held_seq and head.hash == held_hash:
        return {"audit_received_at": now}, None
    if head.seq == held_seq:
        return {}, (
            f"head {head.seq} changed hash from {held_hash[:12] if held_hash else None} "
            f"to {head.hash[:12]} at {now.isoformat()} ({source})"
        )
    if source == "heartbeat":
        return {}, f"head went back from {held_seq} to {head.seq} at {now.isoformat()} ({source})"
    return {}, None  # a stale head in a late-posted answer


class Members:
    """Nodes, users and tokens over the context's sessions; a revocation wakes the revoked."""

    def __init__(self, context: HubContext) -> None:
        self.context = context
        self.sessions = context.sessions
        self.waker = context.waker
        bind = context.sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise HubError("the hub's sessions must be bound to one engine")
        # token checks read in autocommit: no transaction to begin, commit or roll back
        self._reads = bind.execution_options(isolation_level="AUTOCOMMIT")
        self.tokens: TokenBook = book_for(self._reads)  # the same read on the event loop
        # the lists read on the event loop (None: in worker threads)
        self.loop_reads: LoopReads | None = loop_reads_for(bind)
        self._listed_nodes: tuple[tuple[str, ...], Select[Any]] | None = None
        self.node_list = Listing(self._nodes_query, self._built_nodes)

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
                self.context.audit(s, by, action, **detail)
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
            row.revoked_at = self.context.clock()
            self.context.audit(s, by, f"revoke-{kind}", name=name, token="revoked")
            self.waker.announce(s, [f"node:{row.id}" if kind == "node" else f"user:{row.id}"])

    def set_public_key(self, node: str, public_key_pem: str) -> None:
        with self.sessions.begin() as s:
            row = s.scalar(select(NodeRow).where(NodeRow.name == node))
            if row is None:
                raise NotFound(f"no node named {node!r}")
            row.public_key = public_key_pem
            self.context.audit(s, "admin", "set-node-key", name=node)

    def authenticate(self, token: str) -> Principal | None:
        """The live (not revoked) node or user holding `token`; a node's last-seen is updated.
        One indexed read outside any transaction (auth.py); a write only for a node's
        last-seen, at most once a second. `check_token` is the same, awaited on the loop."""
        with self._reads.connect() as conn:
            holder = holder_of(conn, token)
        return None if holder is None else self._principal(holder)

    async def check_token(self, token: str) -> Principal | None:
        """`authenticate` without a thread hop (tokenbook.py): only a node's last-seen write,
        at most once a second, goes to a worker thread."""
        holder = await self.tokens.holder(token)
        if holder is None:
            return None
        if holder.kind == "node" and self._seen_due(holder):
            return await run_in_threadpool(self._principal, holder)
        return self._principal(holder, write=False)

    def _seen_due(self, holder: Holder) -> bool:
        """Whether a node's last-seen is a second old (one write per second is enough)."""
        seen = holder.last_seen
        return seen is None or (self.context.clock() - seen).total_seconds() >= 1.0

    def _principal(self, holder: Holder, write: bool = True) -> Principal:
        """The holder as a Principal; a node's last-seen is written when due (and `write`)."""
        if holder.kind == "user":
            return Principal("user", holder.id, holder.name, holder.role)
        if write and self._seen_due(holder):
            now = self.context.clock()
            with self.sessions.begin() as s:
                s.execute(update(NodeRow).where(NodeRow.id == holder.id).values(last_seen=now))
        return Principal("node", holder.id, holder.name)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node; after the core's keys, what each feature hooked in shows of it (the
        `node_details` hook of the context: the catalogues feature's headline)."""
        with self._reads.connect() as conn:
            return self.nodes_in(conn)

    def read_listed(self, listing: Listing[T], who: Principal) -> T:
        """`listing` on an autocommit connection of the engine's pool (a list, in a worker
        thread)."""
        with self._reads.connect() as conn:
            return listing.on(conn, who)

    def _nodes_statement(self) -> Select[Any]:
        """The node list's one statement: the core's columns and each hook's, outer-joined
        (built once for the hooks registered, as features register theirs after the core)."""
        keys = tuple(self.context.node_details)
        built = self._listed_nodes
        if built is None or built[0] != keys:
            stmt = cast("Select[Any]", _LISTED_NODES)
            for detail in self.context.node_details.values():
                joined = detail.source.c.node_id == NodeRow.id
                stmt = stmt.outerjoin(detail.source, joined).add_columns(*detail.columns)
            built = self._listed_nodes = (keys, stmt)
        return built[1]

    def nodes_in(self, conn: Connection) -> list[dict[str, Any]]:
        """`nodes`, read on `conn` (autocommit: the list on the event loop, loopreads.py), in
        one round trip with what the hooks add."""
        return self.node_list.on(conn, None)

    def _nodes_query(self, _viewer: Principal | None) -> Query:
        """The node list's statement: every node is listed to every user."""
        return self._nodes_statement(), {}

    def _built_nodes(self, rows: Iterable[Any]) -> list[dict[str, Any]]:
        """The node list out of the rows of `_nodes_statement`."""
        details = self.context.node_details
        return [
            {
                "name": n.name,
                "country": n.country,
                "last_seen": n.last_seen.isoformat() if n.last_seen else None,
                "revoked": n.revoked_at is not None,
                "signing_key": n.public_key is not None,
                "audit_head": (
                    {"seq": n.audit_seq, "hash": n.audit_hash}  # AuditHead's fields, as sent
                    if n.audit_seq is not None and n.audit_hash is not None
                    else None
                ),
                "audit_received_at": (
                    n.audit_received_at.isoformat() if n.audit_received_at else None
                ),
                "audit_alert": n.audit_alert,
                **{key: detail.value(n) for key, detail in details.items()},
            }
            for n in rows
        ]

    # ---- audit heads -------------------------------------------------------------------
    @staticmethod
    def _head_at_hub(row: Any) -> HeadAtHub:
        """A NodeRow, or a row of `_LISTED_NODES`: what the hub holds of its audit log."""
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
            node = self.node_head(s, node_id)
            return self._head_at_hub(self.move_head(s, node, head, source))

    @staticmethod
    def node_head(s: Session, node_id: int) -> NodeHead:
        """The node's name and audit head, its row locked until `s` commits (NotFound: none)."""
        node = s.connection().execute(_NODE_HEAD, {"b_node": node_id}).one_or_none()
        if node is None:
            raise NotFound(f"no node with id {node_id}")
        return node

    def move_head(self, s: Session, node: NodeHead, head: AuditHead, source: str) -> Any:
        """Apply `head` to the node row `node` (from `node_head`); the first alert is logged,
        its repeats are not. Returns the node's head columns as they now are."""
        values, why = head_change(
            node.audit_seq, node.audit_hash, head, source, self.context.clock()
        )
        if why is not None and node.audit_alert is None:
            values["audit_alert"] = why
            self.context.audit(
                s,
                f"node:{node.name}",
                "audit-head-alert",
                alert=why,
                held={"seq": node.audit_seq, "hash": node.audit_hash},
                sent={"seq": head.seq, "hash": head.hash},
                source=source,
            )
        if values:
            s.connection().execute(_SET_NODE_HEAD, {"b_node": node.id, **values})
        return SimpleNamespace(**(node._asdict() | values))

    def users(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            return [
                {"name": u.name, "role": u.role, "revoked": u.revoked_at is not None}
                for u in s.scalars(select(UserRow).order_by(UserRow.name))
            ]

    def node_of_name(self, name: str) -> tuple[int, str, str | None]:
        """(id, token digest, Ed25519 public key) of a live node: what verifies its files."""
        with self.sessions() as s:
            row = s.scalar(select(NodeRow).where(NodeRow.name == name))
            if row is None or row.revoked_at is not None:
                raise NotFound(f"no live node named {name!r}")
            return row.id, row.token_hash, row.public_key
