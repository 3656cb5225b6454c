"""Schemathesis against the running gateway: every route answers as its OpenAPI document says, and never 500.

The document is the one the gateway serves. Hypothesis generates parameters
(valid and invalid, within each schema) for every operation, with a bounded
number of examples, and each response is checked against the spec: status
code documented, content type, body schema, headers. Unknown exchanges or
symbols are 404s the spec lists; data comes from the seeded stores.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.specs.openapi.schemas import OpenApiSchema

from gateways.rest.app import OPERATIONS
from gateways.rest.operations import Operation
from tests.support.market_seed import Seed
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 40
OPERATION_TIMEOUT_S = 120  # 40 requests; a hang fails the test instead of stalling the suite
# A value can match its schema and still be refused with a documented 400 (2026-02-31, a range longer than
# 90 days, a cursor the core did not make); the spec cannot express those rules, so that check is off.
EXCLUDED_CHECKS = [checks.positive_data_acceptance]


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    seed = Seed(exchange="stx", exchange_id=730_001, symbol_id=730_002, symbol="BTC-USD")
    with seeded_rest_stack(base_env, admin_database_url, seed) as stack:
        yield stack


@pytest.fixture(scope="module")
def api_schema(stack: RestStack) -> OpenApiSchema:
    document = httpx.get(f"http://{stack.rest.addr}/public/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=f"http://{stack.rest.addr}")
    return schema


@pytest.mark.timeout(OPERATION_TIMEOUT_S)
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.name for op in OPERATIONS])
def test_every_route_conforms_and_never_fails(
    api_schema: OpenApiSchema, stack: RestStack, operation: Operation
) -> None:
    api_operation = api_schema[operation.path][operation.method]
    headers = {"X-API-Key": stack.keys["internal"]}

    @given(case=api_operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, timeout=10, excluded_checks=EXCLUDED_CHECKS)

    conforms()
