"""The audit table becomes a keyed hash chain: seq, prev and hash per record, and `audit_head`.

Existing records are chained in the order they were written (by id), with the hub's audit key,
which `ccdp.federation.hub.db.migrate` passes in (`config.attributes["audit_chain"]`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    from ccdp.federation.hub.audit import HubAuditError, content
    from ccdp.governance.chain import record_mac

    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=True))
        batch.add_column(sa.Column("prev", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    audit = sa.table(
        "audit",
        sa.column("id", sa.Integer),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("detail", sa.JSON),
        sa.column("seq", sa.Integer),
        sa.column("prev", sa.String),
        sa.column("hash", sa.String),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(audit.c.id, audit.c.at, audit.c.actor, audit.c.action, audit.c.detail).order_by(
            audit.c.id
        )
    ).all()
    prev = GENESIS
    if rows:
        config = op.get_context().config
        chain = config.attributes.get("audit_chain") if config is not None else None
        if chain is None:
            raise HubAuditError(
                "chaining the existing audit records needs the hub's audit key: migrate with "
                "ccdp.federation.hub.db.migrate (ccdp hub serve does)"
            )
        for seq, (row_id, at, actor, action, detail) in enumerate(rows, start=1):
            body = content(seq, at, actor, action, detail or {}, prev)
            digest = record_mac(chain.key, body)
            conn.execute(
                audit.update()
                .where(audit.c.id == row_id)
                .values(seq=seq, prev=prev, hash=digest, detail=body["detail"])
            )
            prev = digest
    head = sa.table("audit_head", sa.column("id", sa.Integer), sa.column("seq"), sa.column("hash"))
    conn.execute(head.insert().values(id=1, seq=len(rows), hash=prev))
    with op.batch_alter_table("audit") as batch:
        batch.alter_column("seq", existing_type=sa.Integer, nullable=False)
        batch.alter_column("prev", existing_type=sa.String(64), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_audit_seq", ["seq"])


def downgrade() -> None:
    op.drop_table("audit_head")
    with op.batch_alter_table("audit") as batch:
        batch.drop_constraint("uq_audit_seq", type_="unique")
        for name in ("hash", "prev", "seq"):
            batch.drop_column(name)
