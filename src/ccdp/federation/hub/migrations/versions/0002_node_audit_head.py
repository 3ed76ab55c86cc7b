"""Each node's last audit-log head (seq, hash, when received) and any alert about it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = ("audit_seq", "audit_hash", "audit_received_at", "audit_alert")


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("audit_seq", sa.Integer, nullable=True))
        batch.add_column(sa.Column("audit_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("audit_received_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("audit_alert", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
