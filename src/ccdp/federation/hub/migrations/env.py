"""Alembic environment for the hub; `ccdp.federation.hub.db.migrate` gives it a connection."""

from __future__ import annotations

from alembic import context

from ccdp.federation.hub.models import Base

target_metadata = Base.metadata


def run_migrations() -> None:
    """Migrate over the connection the caller opened (online mode only)."""
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
