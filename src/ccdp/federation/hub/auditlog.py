"""The hub's audit log over HTTP and for the CLI (a feature): the latest records, and a walk of
the whole chain. The chain itself (key, head file, append) is audit.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from ccdp.federation.hub import audit as hub_audit
from ccdp.federation.hub.context import HubContext
from ccdp.federation.hub.doors import AsAdmin
from ccdp.federation.hub.models import AuditRow


class AuditLog:
    """Reads and verifies the hub's audit chain."""

    def __init__(self, context: HubContext) -> None:
        self.context = context

    def latest(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest `limit` records, newest first, with their seq and hashes."""
        with self.context.sessions() as s:
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

    def verify(self) -> hub_audit.Verified:
        """Walk the whole audit chain against its key, its head row and its head file."""
        return hub_audit.verify(self.context.sessions)


def router(log: Callable[[], AuditLog], api: APIRouter | None = None) -> APIRouter:
    """The audit routes (admins only); `log` gives the feature at request time."""
    api = api if api is not None else APIRouter()

    @api.get("/api/admin/audit", tags=["admin"])
    def audit(_admin: AsAdmin, limit: Annotated[int, Query(ge=1, le=5000)] = 200) -> list[Any]:
        """The latest audit records, newest first (seq, time, actor, action, detail, hashes)."""
        return log().latest(limit)

    @api.get("/api/admin/audit/verify", tags=["admin"])
    def audit_verify(_admin: AsAdmin) -> dict[str, Any]:
        """Walk the whole audit chain: `ok`, the head, and the first bad seq with the reason."""
        return log().verify().to_json()

    return api
