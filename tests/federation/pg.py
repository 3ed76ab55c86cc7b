"""A throw-away PostgreSQL database on 127.0.0.1:5432 for hub tests (created and dropped here).

Without a server the tests skip with the reason, except under CI (any truthy value), where
it is a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.conftest import under_ci

if TYPE_CHECKING:
    import psycopg

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def unavailable(reason: str) -> NoReturn:
    """Skip for `reason`, or fail under CI: the one rule for any PostgreSQL a test cannot have
    (this server, or the binaries of a private cluster)."""
    if under_ci():
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def _admin() -> psycopg.Connection:
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


def require_server() -> None:
    """Skip (fail under CI) unless the server answers: for a test that only needs it running."""
    try:
        _admin().close()
    except Exception as exc:
        unavailable(f"no PostgreSQL server on 127.0.0.1:5432 (user postgres, trust): {exc}")


@contextmanager
def temporary_database() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh database; drop it afterwards."""
    try:
        conn = _admin()
    except Exception as exc:
        unavailable(f"no PostgreSQL server on 127.0.0.1:5432 (user postgres, trust): {exc}")
    name = f"ccdp_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with _admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
