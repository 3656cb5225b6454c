"""Faults at the REST edge: a stopped or frozen core, bad bodies, CORS, metrics; never a hang or a traceback."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from gateways.common.auth import CACHE_TTL_S
from tests.support.market_seed import Seed
from tests.support.processes import run_cli, running_core, running_gateway
from tests.support.rest_stack import RestStack, make_key, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(exchange="faultx", exchange_id=720_001, symbol_id=720_002, symbol="FLT-USD")
DEADLINE_S = 1.0
CANDLES = f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}"


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED, PERSEUS_CORS_ORIGINS="https://app.example") as stack:
        yield stack


def timed_get(addr: str, path: str, key: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(f"http://{addr}{path}", headers={"X-API-Key": key}, timeout=10)
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "Traceback" not in response.text and elapsed < DEADLINE_S + 1.5


def test_a_stopped_core_is_503_at_once(stack: RestStack) -> None:
    env = {**stack.env, "PERSEUS_CORE_DEADLINE_S": str(DEADLINE_S)}
    with running_core(stack.env) as core, running_gateway("rest", env, core.addr) as gateway:
        assert timed_get(gateway.addr, "/public/v1/exchanges", stack.keys["pro"])[0].status_code == 200
        core.stop()
        for path in ("/public/v1/exchanges", "/public/v1/alerts", "/public/v1/prices/latest?symbols=BTC-USD"):
            assert_unavailable(*timed_get(gateway.addr, path, stack.keys["pro"]))
        assert_unavailable(*timed_get(gateway.addr, "/public/v1/exchanges", stack.keys["free"]))  # key not cached


def test_a_frozen_core_is_503_within_the_deadline(stack: RestStack) -> None:
    env = {**stack.env, "PERSEUS_CORE_DEADLINE_S": str(DEADLINE_S)}
    with running_core(stack.env) as core, running_gateway("rest", env, core.addr) as gateway:
        assert timed_get(gateway.addr, "/public/v1/exchanges", stack.keys["pro"])[0].status_code == 200
        os.kill(core.pid, signal.SIGSTOP)
        try:
            assert_unavailable(*timed_get(gateway.addr, "/public/v1/alerts", stack.keys["pro"]))
            assert_unavailable(*timed_get(gateway.addr, "/public/v1/exchanges", stack.keys["free"]))
        finally:
            os.kill(core.pid, signal.SIGCONT)


def test_bodies_that_are_not_json_or_too_large(stack: RestStack) -> None:
    url = f"http://{stack.rest.addr}/internal/v1/ingest"
    headers = {"X-API-Key": stack.keys["internal"]}
    not_json = httpx.post(url, content=b"{nope", headers=headers)
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "VALIDATION_ERROR"
    huge = httpx.post(url, content=b"x" * (2 * 1024 * 1024), headers=headers)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    wrong_method = httpx.post(f"http://{stack.rest.addr}/public/v1/exchanges", headers=headers)
    assert wrong_method.status_code == 405 and "Traceback" not in wrong_method.text


def test_cors_preflight_and_allowed_origins(stack: RestStack) -> None:
    preflight = httpx.options(
        f"http://{stack.rest.addr}{CANDLES}",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "X-API-Key" in preflight.headers["access-control-allow-headers"]
    allowed = stack.get(CANDLES, headers={"Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "X-RateLimit-Remaining" in allowed.headers["access-control-expose-headers"]
    other = stack.get(CANDLES, headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


def test_metrics_count_requests_per_route_and_status(stack: RestStack) -> None:
    stack.get(CANDLES)
    stack.get(f"/public/v1/candles/{SEED.exchange}/NONE-USD")
    metrics = httpx.get(f"http://{stack.rest.addr}/metrics").text
    route = 'route="/public/v1/candles/<exchange:str>/<symbol:str>"'
    counted = [
        line for line in metrics.splitlines() if line.startswith("perseus_http_requests_total") and route in line
    ]
    assert any('status="200"' in line for line in counted) and any('status="404"' in line for line in counted)
    assert "perseus_http_request_duration_seconds_bucket" in metrics


def test_a_revoked_key_stops_working_within_seconds(stack: RestStack) -> None:
    key = make_key(stack.env, "free")
    assert stack.get("/public/v1/exchanges", headers={"X-API-Key": key}).status_code == 200
    result = run_cli(["keys", "revoke", key], stack.env)
    assert result.returncode == 0, result.stderr
    revoked_at = time.monotonic()
    while stack.get("/public/v1/exchanges", headers={"X-API-Key": key}).status_code == 200:
        assert time.monotonic() - revoked_at < CACHE_TTL_S + 2, "the revoked key still works"
        time.sleep(0.2)
    refused = stack.get("/public/v1/exchanges", headers={"X-API-Key": key})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"


def test_the_request_id_reaches_the_core(stack: RestStack) -> None:
    response = stack.get(
        f"/public/v1/signals/{SEED.exchange}/{SEED.symbol}?timeframe=1m", headers={"X-Request-ID": "trace-rest-4711"}
    )
    assert response.status_code == 404 and response.headers["x-request-id"] == "trace-rest-4711"
    deadline = time.monotonic() + 5
    while "trace-rest-4711" not in stack.core.output():
        assert time.monotonic() < deadline, "the core never logged the gateway's request id"
        time.sleep(0.1)
