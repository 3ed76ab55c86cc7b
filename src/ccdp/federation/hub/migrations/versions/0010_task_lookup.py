"""Every node's look for tasks (each long-poll, each answer that also polls) reads its open tasks
by node and status; without an index it scanned the `tasks` table, which grows with every study
times every node (issue 27: found profiling a round's cost at the hub).

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-27
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_node_status", "tasks", ["node_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_tasks_node_status", "tasks")
