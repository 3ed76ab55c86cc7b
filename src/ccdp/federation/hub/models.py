"""The hub's tables (SQLAlchemy 2). The database is the hub's memory: a restarted hub resumes.

A study is driven round by round; each round is one `Task` sent to several nodes, stored as one
`RoundRow` plus one `TaskRow` per node; a node's answer is one `AnswerRow` per task (unique, so a
result posted twice is counted once). The Alembic migrations in `migrations/` create these tables.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    literal_column,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from ccdp.wire.protocol import utcnow


def one_of(column: Mapped[str], states: tuple[str, ...]) -> ColumnElement[bool]:
    """`column IN ('a', 'b')` with our own state words written into the SQL. An IN of values
    is an expanding parameter that SQLAlchemy renders again at every execution (3.5 % of the
    hub's time under node answers); these words are constants of the code, never input."""
    if not all(re.fullmatch(r"[a-z_]+", s) for s in states):
        raise ValueError(f"not a state word: {states!r}")
    return column.in_([literal_column(f"'{s}'") for s in states])


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime()}


class NodeRow(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    country: Mapped[str] = mapped_column(String(2))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # the highest audit head the node sent (never lowered) and, if one went back, the alert
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    audit_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    audit_received_at: Mapped[datetime | None] = mapped_column(nullable=True)
    audit_alert: Mapped[str | None] = mapped_column(Text, nullable=True)


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class StudyRow(Base):
    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    title: Mapped[str] = mapped_column(String(300), default="")
    analysis: Mapped[str] = mapped_column(String(50))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    nodes: Mapped[list[Any]] = mapped_column(JSON)
    min_nodes: Mapped[int] = mapped_column(Integer)
    timeout: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # governance: the study's project, and the nodes it named that were not asked (with why)
    project_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    excluded: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RoundRow(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("study_id", "round_no"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"))
    round_no: Mapped[int] = mapped_column(Integer)
    task: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline: Mapped[datetime] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("round_id", "node_id"),
        Index("ix_tasks_node_status", "node_id", "status"),  # a node's look for its tasks
    )

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AnswerRow(Base):
    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    digest: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(20), default="http")
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditRow(Base):
    """One record of the hub's keyed hash chain (audit.py writes and checks it)."""

    __tablename__ = "audit"
    __table_args__ = (UniqueConstraint("seq", name="uq_audit_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(60))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seq: Mapped[int] = mapped_column(Integer)
    prev: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The one row (id 1) holding the chain's last seq and hash; every append locks it first."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class ProjectRow(Base):
    """A project (access request): its file as requested, the board's decision, its state."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(20), default="requested")
    reviewer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    review_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProjectNodeRow(Base):
    """One node's custodian decision on a project, as the node relayed it."""

    __tablename__ = "project_nodes"
    __table_args__ = (UniqueConstraint("project_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    decision: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)


class CatalogueRow(Base):
    """The latest catalogue a node published (`PUT /api/node/catalogue`), as validated."""

    __tablename__ = "catalogues"
    __table_args__ = (UniqueConstraint("node_id", name="uq_catalogues_node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    catalogue: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrialRow(Base):
    """A randomised trial (clinical/randomisation.py): its spec, its secret seed, and how many
    patients it has allocated (the counter every allocation moves first: the lock)."""

    __tablename__ = "trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[str] = mapped_column(String(64))
    allocated: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AllocationRow(Base):
    """One patient's allocation: irreversible (one per trial, node and pseudonym)."""

    __tablename__ = "allocations"
    __table_args__ = (
        UniqueConstraint("trial_id", "seq", name="uq_allocations_seq"),
        UniqueConstraint("trial_id", "node_id", "patient", name="uq_allocations_patient"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"))
    seq: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    patient: Mapped[str] = mapped_column(String(100))
    strata: Mapped[dict[str, Any]] = mapped_column(JSON)
    stratum: Mapped[str] = mapped_column(String(1000))
    arm: Mapped[str] = mapped_column(String(100))
    allocated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReferralRow(Base):
    """A case a node referred to the expert board (federation/hub/referrals.py): the summary
    as the node's gate released it, the board's recommendation once recorded."""

    __tablename__ = "referrals"
    __table_args__ = (UniqueConstraint("node_id", "node_ref", name="uq_referrals_node_ref"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    node_ref: Mapped[str] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(Text)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))
    recommendation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    recommended_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    recommended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReferralCommentRow(Base):
    """One board member's comment on a referral (the board's discussion, never sent to the
    node)."""

    __tablename__ = "referral_comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id"))
    author: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DisclosureAlertRow(Base):
    """A disclosure alert a node's detection raised (federation/hub/alerts.py): project,
    studies and ranges as `wire.alerts.DisclosureAlert` bounds them, never a record."""

    __tablename__ = "disclosure_alerts"
    __table_args__ = (UniqueConstraint("node_id", "alert_id", name="uq_disclosure_alerts_node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    alert_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(30))
    project_id: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    findings: Mapped[list[Any]] = mapped_column(JSON)
    more: Mapped[int] = mapped_column(Integer, default=0)
    set_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    digest: Mapped[str] = mapped_column(String(64))
    detected_at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class AcceptedStudiesRow(Base):
    """What a node reported of its custodian's decision on a project: the hashes of the
    registered studies it accepted (`PUT /api/node/accepted-studies`, projects.py)."""

    __tablename__ = "node_accepted_studies"
    __table_args__ = (UniqueConstraint("project_id", "node_id", name="uq_accepted_studies"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    decision: Mapped[str] = mapped_column(String(20))
    studies: Mapped[list[Any]] = mapped_column(JSON)
    decided_at: Mapped[datetime] = mapped_column()
    reported_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebSessionRow(Base):
    """A dashboard sign-in (web/sessions.py): keyed by the hash of the cookie's id, the token
    sealed with a key only that id gives (migration 0009)."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed_token: Mapped[bytes] = mapped_column(LargeBinary)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(30))
    csrf: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column()
    seen: Mapped[datetime] = mapped_column(index=True)


class StudyLeaseRow(Base):
    """Which hub worker drives a study, until when (runner.py claims and renews it)."""

    __tablename__ = "study_leases"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(120))
    until: Mapped[datetime] = mapped_column()
