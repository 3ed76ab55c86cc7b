"""Schemathesis 4 against the CCDI spec itself (`swagger.yml` v1.3.0): every operation of the
spec called on the live hub's `/ccdi` prefix, with generated path and query parameters; every
response must be one the spec documents (status, content type, headers, body schema) and never
a 5xx. Kept short: a few examples per operation.

Two heuristic checks are left out, because the spec itself answers otherwise: the
positive-data check wants any schema-valid `field` of `/{entity}/by/{field}/count` accepted,
while the spec documents 422 `UnsupportedField` for a field the server does not hold; the
negative-data check wants unknown query parameters refused, while the spec's filters include
any `metadata.unharmonized.<field>` (so unknown parameters are ignored, as its record lists
are refused anyway)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.federation.test_ccdi import SPEC, world  # noqa: F401  (the module's live hub)

schema = schemathesis.openapi.from_path(SPEC)
HEURISTIC = [checks.positive_data_acceptance, checks.negative_data_rejection]


@pytest.fixture(scope="module")
def base_url(world: Any) -> str:  # noqa: F811
    return f"{world.url}/ccdi"


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_response_conforms_to_the_spec(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, excluded_checks=HEURISTIC)
