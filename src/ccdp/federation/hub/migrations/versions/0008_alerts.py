"""Disclosure alerts from the nodes' detection, and the registered studies each node reports its
custodian accepted (docs/disclosure.md, issue 28).

Revision ID: 0008
Revises: 0007
Create Date: 2027-01-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "disclosure_alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("study_id", sa.String(64), nullable=True),
        sa.Column("findings", sa.JSON, nullable=False),
        sa.Column("more", sa.Integer, nullable=False),
        sa.Column("set_limit", sa.Integer, nullable=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("node_id", "alert_id", name="uq_disclosure_alerts_node"),
    )
    op.create_table(
        "node_accepted_studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("studies", sa.JSON, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "node_id", name="uq_accepted_studies"),
    )


def downgrade() -> None:
    op.drop_table("node_accepted_studies")
    op.drop_table("disclosure_alerts")
