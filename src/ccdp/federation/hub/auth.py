"""Tokens: random, shown once, stored only as a SHA-256 digest (like an API key, never a password).

A node token and a user token look different (`ccdp-node-…`, `ccdp-user-…`) so that a token pasted
in the wrong place is recognised, but what a token may do is decided by the table it is found in.

Checking a token is on every request's path, so it is one indexed read and nothing else: the
digest's unique index finds the row (the prefix only says which table to look in first), and
the digest found is compared again in constant time. Nothing is cached: a revocation is a row
the very next request reads, in this process or any other serving the same database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, bindparam, select

from ccdp.federation.hub.models import NodeRow, UserRow, UtcDateTime

TokenKind = Literal["node", "user"]
ROLES = ("researcher", "board", "admin", "statistician", "expert")


def new_token(kind: TokenKind) -> str:
    """256 bits from the OS's CSPRNG."""
    return f"ccdp-{kind}-{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """Digest stored in the database; a high-entropy token needs no salt or slow hash."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Holder:
    """The live row a token belongs to: what a request needs of it, and a node's last-seen."""

    kind: TokenKind
    id: int
    name: str
    role: str | None
    last_seen: datetime | None


def tables(token: str) -> tuple[TokenKind, TokenKind]:
    """Which table to look in first: the one the token's prefix names (a guess, not a right)."""
    return ("user", "node") if token.startswith("ccdp-user-") else ("node", "user")


# built once: composing a statement costs more than running it (a token check is all hot path)
_NODE_BY_DIGEST = select(NodeRow.id, NodeRow.name, NodeRow.token_hash, NodeRow.last_seen).where(
    NodeRow.token_hash == bindparam("digest"), NodeRow.revoked_at.is_(None)
)
_USER_BY_DIGEST = select(UserRow.id, UserRow.name, UserRow.token_hash, UserRow.role).where(
    UserRow.token_hash == bindparam("digest"), UserRow.revoked_at.is_(None)
)


_UTC = UtcDateTime()  # what the engine makes of a stored time: aware, in UTC


def holder_from_row(kind: TokenKind, row: Any, digest: str) -> Holder | None:
    """A row (id, name, token_hash, role or last_seen) as a Holder, None unless its digest
    matches in constant time: the one rule, whichever driver read the row."""
    if row is None or not same_digest(row[2], digest):
        return None
    if kind == "user":
        return Holder("user", row[0], row[1], row[3], None)
    seen = row[3]
    if isinstance(seen, str):  # SQLite's own driver gives SQLAlchemy's DateTime as ISO text
        seen = datetime.fromisoformat(seen)
    return Holder("node", row[0], row[1], None, _UTC.process_result_value(seen, None))


def _find(conn: Connection, kind: TokenKind, digest: str) -> Holder | None:
    """The live row of table `kind` whose stored digest is `digest` (unique index: one row)."""
    stmt = _NODE_BY_DIGEST if kind == "node" else _USER_BY_DIGEST
    return holder_from_row(kind, conn.execute(stmt, {"digest": digest}).first(), digest)


def holder_of(conn: Connection, token: str) -> Holder | None:
    """The live node or user holding `token`, found by its digest; None if unknown or revoked.
    A revoked row is never returned (`revoked_at IS NULL` is part of the read)."""
    digest = hash_token(token)
    first, second = tables(token)
    return _find(conn, first, digest) or _find(conn, second, digest)
