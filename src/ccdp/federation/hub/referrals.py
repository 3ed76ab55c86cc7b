"""Expert-board referrals at the hub (docs/referrals.md): a node posts a case summary its
custodian released, board members (role `expert`) read it, discuss it in comments and record a
structured recommendation, which the referring node fetches.

Who sees what: a referral's summary, comments and recommendation are read by `expert` users
only; the referring node reads its own referrals' state and recommendation (never the board's
comments, never another node's referral); no other role reads any of it, admins included. The
hub's audit log (read by admins) records every step with the referral's id and a digest of what
was received, never a value of the case.

A feature: it works through the hub's context (context.py), never the core, and `router`
builds its routes for app.py to put on the hub's app.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from pydantic import Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ccdp.errors import SpecError
from ccdp.federation.hub.context import (
    Conflict,
    Forbidden,
    HubContext,
    HubError,
    NotFound,
    Principal,
)
from ccdp.federation.hub.doors import AsNode, AsUser, Strict
from ccdp.federation.hub.models import NodeRow, ReferralCommentRow, ReferralRow
from ccdp.specfile import first_error
from ccdp.wire.case_summary import CaseSummary, Recommendation, case_digest

EXPERT = "expert"


class CaseRefused(SpecError):
    """A posted case summary or recommendation is not of the accepted shape (422)."""


class Referrals:
    """Referrals and the board's work on them, over the hub's database."""

    def __init__(self, context: HubContext) -> None:
        self.context = context

    # -- helpers --------------------------------------------------------------------------
    def _need_expert(self, s: Session, who: Principal, action: str, ref: str | None) -> None:
        if who.kind == "user" and who.role == EXPERT:
            return
        self.context.audit(s, who.name, "referral-refused", step=action, referral=ref)
        s.commit()
        raise Forbidden("only members of the expert board (role expert) read or answer referrals")

    @staticmethod
    def _row(s: Session, ref: str) -> ReferralRow:
        row = s.scalars(select(ReferralRow).where(ReferralRow.ref == ref)).first()
        if row is None:
            raise NotFound(f"no referral {ref[:40]!r}")
        return row

    @staticmethod
    def _headline(row: ReferralRow, node: str) -> dict[str, Any]:
        """What the board's list shows of a referral: enough to pick it, no more."""
        first = row.summary["tumours"][0]
        relapse = first.get("relapse") or {}
        return {
            "id": row.ref,
            "node": node,
            "state": row.state,
            "received_at": row.created_at.isoformat(),
            "age_months": row.summary["age_months"],
            "diagnosis": first["diagnosis"].get("label") or first["diagnosis"]["morphology"],
            "strategic_group": relapse.get("strategic_group"),
            "question": row.question[:200],
        }

    @staticmethod
    def _for_node(row: ReferralRow) -> dict[str, Any]:
        return {
            "id": row.ref,
            "node_ref": row.node_ref,
            "state": row.state,
            "digest": row.digest,
            "received_at": row.created_at.isoformat(),
            "recommendation": row.recommendation,
            "recommended_by": row.recommended_by,
            "recommended_at": row.recommended_at.isoformat() if row.recommended_at else None,
        }

    # -- the node -------------------------------------------------------------------------
    def receive(
        self, node: Principal, node_ref: str, summary: dict[str, Any], question: str
    ) -> dict[str, Any]:
        """Store a released case; posting the same referral again returns the first (a node
        retrying after a lost answer must not make a second case for the board)."""
        try:
            case = CaseSummary.model_validate(summary)
        except ValidationError as exc:
            raise CaseRefused(f"not a case summary the hub accepts: {first_error(exc)}") from None
        body = case.model_dump(mode="json", by_alias=True)
        digest = case_digest(body, question)
        with self.context.sessions() as s:
            held = s.scalars(
                select(ReferralRow).where(
                    ReferralRow.node_id == node.id, ReferralRow.node_ref == node_ref
                )
            ).first()
            if held is not None:
                if held.digest != digest:
                    raise Conflict(f"referral {node_ref} was received with other content")
                return self._for_node(held)
            row = ReferralRow(
                ref="R-" + secrets.token_hex(6),
                node_id=node.id,
                node_ref=node_ref,
                question=question,
                summary=body,
                digest=digest,
                state="open",
            )
            s.add(row)
            self.context.audit(
                s,
                node.name,
                "referral-received",
                referral=row.ref,
                node_ref=node_ref,
                digest=digest,
            )
            try:
                s.commit()
            except IntegrityError:  # the same referral posted twice at once: the first stands
                s.rollback()
                return self.receive(node, node_ref, summary, question)
            return self._for_node(row)

    def node_list(self, node: Principal) -> list[dict[str, Any]]:
        """This node's referrals with their state and recommendation (audited: the node
        learns the board's answer through this route)."""
        with self.context.sessions() as s:
            rows = list(
                s.scalars(
                    select(ReferralRow)
                    .where(ReferralRow.node_id == node.id)
                    .order_by(ReferralRow.id)
                )
            )
            answered = [r.ref for r in rows if r.recommendation is not None]
            if answered:
                self.context.audit(
                    s, node.name, "referral-recommendations-read", referrals=answered
                )
                s.commit()
            return [self._for_node(r) for r in rows]

    # -- the board ------------------------------------------------------------------------
    def all(self, who: Principal) -> list[dict[str, Any]]:
        with self.context.sessions() as s:
            self._need_expert(s, who, "list", None)
            rows = s.execute(
                select(ReferralRow, NodeRow.name)
                .join(NodeRow, ReferralRow.node_id == NodeRow.id)
                .order_by(ReferralRow.id)
            )
            return [self._headline(r, n) for r, n in rows]

    def show(self, who: Principal, ref: str) -> dict[str, Any]:
        """The whole case, the board's comments and any recommendation (reading is audited)."""
        with self.context.sessions() as s:
            self._need_expert(s, who, "show", ref)
            row = self._row(s, ref)
            node = s.get(NodeRow, row.node_id)
            comments = [
                {"author": c.author, "at": c.created_at.isoformat(), "text": c.text}
                for c in s.scalars(
                    select(ReferralCommentRow)
                    .where(ReferralCommentRow.referral_id == row.id)
                    .order_by(ReferralCommentRow.id)
                )
            ]
            self.context.audit(s, who.name, "referral-read", referral=ref)
            s.commit()
            return {
                **self._headline(row, node.name if node else "?"),
                "question": row.question,
                "summary": row.summary,
                "digest": row.digest,
                "comments": comments,
                "recommendation": row.recommendation,
                "recommended_by": row.recommended_by,
                "recommended_at": row.recommended_at.isoformat() if row.recommended_at else None,
            }

    def comment(self, who: Principal, ref: str, text: str) -> dict[str, Any]:
        if not text.strip():
            raise HubError("a comment needs text")
        with self.context.sessions() as s:
            self._need_expert(s, who, "comment", ref)
            row = self._row(s, ref)
            c = ReferralCommentRow(referral_id=row.id, author=who.name, text=text)
            s.add(c)
            s.flush()
            self.context.audit(s, who.name, "referral-comment", referral=ref, comment=c.id)
            s.commit()
            return {"referral": ref, "comment": c.id, "author": who.name}

    def recommend(self, who: Principal, ref: str, raw: dict[str, Any]) -> dict[str, Any]:
        """Record the board's recommendation: once (a change of mind is a new referral, so
        the node never holds an answer that silently changed under it)."""
        try:
            rec = Recommendation.model_validate(raw)
        except ValidationError as exc:
            raise CaseRefused(f"not a recommendation: {first_error(exc)}") from None
        with self.context.sessions() as s:
            self._need_expert(s, who, "recommend", ref)
            row = self._row(s, ref)
            if row.state != "open":
                raise Conflict(f"referral {ref} is {row.state}; its recommendation stands")
            body = rec.model_dump(mode="json")
            row.recommendation = body
            row.recommended_by = who.name
            row.recommended_at = datetime.now(UTC)
            row.state = "recommended"
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            self.context.audit(
                s,
                who.name,
                "referral-recommended",
                referral=ref,
                digest=digest,
            )
            s.commit()
            return self._for_node(row)


class ReferBody(Strict):
    node_ref: str = Field(
        min_length=8,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The node's own id of the referral (random; never a patient key)",
    )
    question: str = Field(min_length=1, max_length=2000)
    summary: dict[str, Any] = Field(description="The case summary (ccdp.case-summary/1)")


class CommentBody(Strict):
    text: str = Field(min_length=1, max_length=4000)


class RecommendBody(Strict):
    recommendation: dict[str, Any] = Field(description="options, trial, text")


def router(referrals: Callable[[], Referrals], api: APIRouter | None = None) -> APIRouter:
    """The referral routes (docs/referrals.md); `referrals` gives the feature at request time."""
    api = api if api is not None else APIRouter()

    @api.post("/api/node/referrals", tags=["node"], status_code=201)
    def node_refer(body: ReferBody, node: AsNode) -> dict[str, Any]:
        """A case summary the node's custodian released, for the expert board."""
        return referrals().receive(node, body.node_ref, body.summary, body.question)

    @api.get("/api/node/referrals", tags=["node"])
    def node_referrals(node: AsNode) -> list[dict[str, Any]]:
        """This node's referrals: state and the board's recommendation."""
        return referrals().node_list(node)

    @api.get("/api/referrals", tags=["referrals"])
    def list_referrals(who: AsUser) -> list[dict[str, Any]]:
        """Referrals to the board (role expert): one line each."""
        return referrals().all(who)

    @api.get("/api/referrals/{ref}", tags=["referrals"])
    def show_referral(ref: str, who: AsUser) -> dict[str, Any]:
        """One case in full, with the board's comments (role expert; audited)."""
        return referrals().show(who, ref)

    @api.post("/api/referrals/{ref}/comments", tags=["referrals"], status_code=201)
    def comment_referral(ref: str, body: CommentBody, who: AsUser) -> dict[str, Any]:
        """Add to the board's discussion of a case (role expert)."""
        return referrals().comment(who, ref, body.text)

    @api.post("/api/referrals/{ref}/recommendation", tags=["referrals"])
    def recommend_referral(ref: str, body: RecommendBody, who: AsUser) -> dict[str, Any]:
        """Record the board's recommendation (role expert; once): it returns to the node."""
        return referrals().recommend(who, ref, body.recommendation)

    return api
