"""Shared hub set-up for the federation tests: a running count study made in-process, and the
hub's database on each backend (`hub_url`), so the tests that need them don't each write them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.context import Principal

LONG = 3600.0  # a poll or timeout no test could wait out: only a wake or an answer ends a wait


def running_count_study(
    hub: Hub,
    owner: Principal | None,
    nodes: Sequence[str] = ("FR",),
    timeout: float = LONG,
    title: str = "t",
) -> str:
    """A count study over `nodes` (one is enough), set `running` as the runner does before its
    first round; its id."""
    sid = hub.create_study(
        {"analysis": "count"},
        analysis="count",
        title=title,
        nodes=list(nodes),
        min_nodes=1,
        timeout=timeout,
        owner=owner,
    )
    hub.set_study_status(sid, "running")
    return sid


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The hub's database URL, once per backend: a SQLite file, then a throw-away PostgreSQL
    database (skipped without the server, a failure under CI)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    from tests.federation.pg import temporary_database

    with temporary_database() as url:
        yield url
