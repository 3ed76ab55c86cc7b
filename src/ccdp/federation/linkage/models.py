"""The linkage service's tables (SQLAlchemy 2), in its own database, apart from the hub's.

What a run holds, and for how long: `clks` (the encodings, each with its per-run pseudonym) only
until the run is linked, then deleted in the same transaction that stores `results`; `results`
(per node and linked record: pseudonym -> group, size, then the earliest diagnosis year the node
sends and the keep flag) only until that node confirms it stored them. The audit chain reuses
the hub's two tables (`audit`, `audit_head`) and its code (ccdp.federation.hub.audit).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ccdp.federation.hub.models import AuditHeadRow, AuditRow, UtcDateTime
from ccdp.wire.protocol import utcnow

__all__ = [
    "AuditHeadRow",
    "AuditRow",
    "Base",
    "ClkRow",
    "MemberRow",
    "ResultRow",
    "RunNodeRow",
    "RunRow",
]


class Base(DeclarativeBase):
    """The service's own metadata (the hub's tables are not created here, only its audit pair)."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime()}


class MemberRow(Base):
    """A node or an admin of the service; only the token's SHA-256 is kept."""

    __tablename__ = "linkage_members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(10))  # node | admin
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class RunRow(Base):
    """A linkage run: its nodes, threshold, the schema and secret every upload must share."""

    __tablename__ = "linkage_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    threshold: Mapped[float] = mapped_column(Float)
    # uploading -> linking (the link worker's) -> linked (years awaited) -> ready (keep decided)
    # -> done; or failed (linking failed: its encodings deleted all the same); or cancelled
    # (an admin gave it up at any step before done: its encodings and groups deleted)
    state: Mapped[str] = mapped_column(String(20), default="uploading")
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    linked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    schema_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    secret_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    bits: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tie_key: Mapped[str] = mapped_column(String(64))  # random per run: breaks keep-rule ties
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class RunNodeRow(Base):
    """A node named in a run: when it uploaded (how many records) and downloaded."""

    __tablename__ = "linkage_run_nodes"
    __table_args__ = (UniqueConstraint("run_id", "node", name="uq_run_node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("linkage_runs.id", ondelete="CASCADE"))
    node: Mapped[str] = mapped_column(String(100))
    records: Mapped[int | None] = mapped_column(Integer, nullable=True)
    uploaded_at: Mapped[datetime | None] = mapped_column(nullable=True)
    linked: Mapped[int | None] = mapped_column(Integer, nullable=True)  # its records in a group
    years_at: Mapped[datetime | None] = mapped_column(nullable=True)
    downloaded_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ClkRow(Base):
    """One uploaded encoding (deleted when the run is linked)."""

    __tablename__ = "linkage_clks"
    __table_args__ = (UniqueConstraint("run_id", "node", "pseudonym", name="uq_clk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    node: Mapped[str] = mapped_column(String(100))
    pseudonym: Mapped[str] = mapped_column(String(64))
    clk: Mapped[bytes] = mapped_column(LargeBinary)


class ResultRow(Base):
    """One linked record of one node (deleted when that node has downloaded its results)."""

    __tablename__ = "linkage_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    node: Mapped[str] = mapped_column(String(100))
    pseudonym: Mapped[str] = mapped_column(String(64))
    group_id: Mapped[str] = mapped_column(String(40))
    group_size: Mapped[int] = mapped_column(Integer)
    year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_year: Mapped[int | None] = mapped_column(Integer, nullable=True)  # last contact
    keep: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
