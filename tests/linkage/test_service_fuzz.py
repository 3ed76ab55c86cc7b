"""Every route of the linkage service fuzzed from its own OpenAPI document (schemathesis, real
HTTP on loopback): whatever the body, path or query, with a node's or an admin's token, the
service answers below 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.linkage.linkwire_kit import LiveService


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with LiveService(tmp_path_factory.mktemp("fuzz")) as svc:
        svc.node_token = svc.token("A")  # type: ignore[attr-defined]
        svc.token("B")
        svc.admin_token = svc.token("boss", "admin")  # type: ignore[attr-defined]
        yield svc


@pytest.fixture(scope="module")
def api(live: Any) -> Any:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


def test_no_route_answers_500(live: Any, api: Any) -> None:
    seen = [_fuzz(live, result.ok()) for result in api.get_all_operations()]
    assert len(seen) >= 9


def _fuzz(live: Any, operation: Any) -> str:
    """Generated requests to one operation, with the token its routes take; its path."""
    token = live.admin_token if "/api/admin/" in operation.path else live.node_token

    @given(case=operation.as_strategy())
    @settings(
        max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        response = case.call(base_url=live.url, timeout=30)
        assert response.status_code < 500, (case.path, response.status_code, response.text)

    check()
    return str(operation.path)


def test_the_schema_lists_every_route(api: Any, tmp_path: Path) -> None:
    paths = set(api.raw_schema["paths"])
    assert {
        "/api/admin/runs",
        "/api/node/runs/{run_id}/clks",
        "/api/node/runs/{run_id}/years",
        "/api/node/runs/{run_id}/confirm",
    } <= paths
