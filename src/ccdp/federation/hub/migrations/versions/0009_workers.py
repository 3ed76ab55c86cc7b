"""Hub workers (issue 27): dashboard sign-in sessions and study leases live in the database, so
any of N hub processes serves a signed-in browser and exactly one drives a study.

`web_sessions` keys a session by the SHA-256 of its id (the id itself stays in the browser's
cookie) and holds the person's hub token sealed with a key derived from that id, so the table
alone signs no one in. `study_leases` names the worker driving a study until its lease runs out.

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("sealed_token", sa.LargeBinary, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(30), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_web_sessions_seen", "web_sessions", ["seen"])
    op.create_table(
        "study_leases",
        sa.Column("study_id", sa.String(36), sa.ForeignKey("studies.id"), primary_key=True),
        sa.Column("owner", sa.String(120), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("study_leases")
    op.drop_index("ix_web_sessions_seen", "web_sessions")
    op.drop_table("web_sessions")
