"""Seed 004's answer fields on the price routes (issue 17), through a real REST gateway and core.

CONTRACT.md fixes the body as ``{"data": …}`` with ``meta`` beside it, so the seed's top-level fields live in
``meta``: latest ``cached`` and ``latency_ms``; range ``interval``, ``count`` and ``latency_ms``; consensus
``latency_ms``. The served OpenAPI document declares them, and real answers validate against it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema
import pytest

from tests.support.processes import Process, run_cli, running_core, running_gateway

pytestmark = pytest.mark.integration

WAIT_S = 15.0
LATEST = "/public/v1/prices/latest"
RANGE = "/public/v1/prices/range"
CONSENSUS = "/public/v1/aggregates/consensus"


@dataclass(frozen=True, slots=True)
class Stack:
    env: dict[str, str]
    rest: Process
    key: str
    symbol: str

    def get(self, path: str, **params: Any) -> httpx.Response:
        return get(self.rest, self.key, path, **params)


def get(rest: Process, key: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"http://{rest.addr}{path}", params=params, headers={"X-API-Key": key}, timeout=5)


def iso(offset_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - offset_s)) + ".000Z"


@pytest.fixture(scope="module")
def stack(migrated_env: dict[str, str]) -> Iterator[Stack]:
    created = run_cli(["keys", "create", "--tier", "internal"], migrated_env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    symbol = f"SPF{time.time_ns() % 1_000_000}-USD"
    with (
        running_core(migrated_env, PERSEUS_EXCHANGES="sim", PERSEUS_SIM_TRADES_PER_S="0") as core,
        running_gateway("rest", migrated_env, core.addr) as rest,
    ):
        feeds = [
            {"symbol": symbol, "price": price, "volume": "1", "source": source, "timestamp": iso(offset)}
            for price, source, offset in (("10.5", "coinbase", 40), ("10.7", "kraken", 30), ("10.6", "coinbase", 20))
        ]
        stored = httpx.post(
            f"http://{rest.addr}/internal/v1/ingest", headers={"X-API-Key": key}, json={"feeds": feeds}, timeout=5
        )
        assert stored.status_code == 200 and stored.json()["data"]["ingested"] == 3, stored.text
        yield Stack(migrated_env, rest, key, symbol)


def latest_from_cache(stack: Stack) -> httpx.Response:
    """The latest price reaches the cache just after the commit (the price-update queue): ask until it has."""
    deadline = time.monotonic() + WAIT_S
    while True:
        response = stack.get(LATEST, symbols=stack.symbol)
        assert response.status_code == 200, response.text
        if response.json()["meta"]["cached"]:
            return response
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)


def test_latest_says_whether_the_cache_answered_and_how_long_it_took(stack: Stack) -> None:
    body = latest_from_cache(stack).json()
    assert [p["price"] for p in body["data"]] == ["10.6"]
    assert set(body["meta"]) == {"cached", "latency_ms"}
    assert isinstance(body["meta"]["latency_ms"], float) and 0 < body["meta"]["latency_ms"] < 60_000


def test_latest_read_from_postgresql_is_not_cached(stack: Stack) -> None:
    """A pw-host core on another Redis prefix has none of these prices cached: PostgreSQL answers."""
    other = {**stack.env, "PERSEUS_REDIS_PREFIX": f"{stack.env['PERSEUS_REDIS_PREFIX']}spf:"}
    with (
        running_core(other, PERSEUS_MODE="pw-host") as core,
        running_gateway("rest", other, core.addr) as rest,
    ):
        body = get(rest, stack.key, LATEST, symbols=stack.symbol).json()
    assert [p["price"] for p in body["data"]] == ["10.6"]
    assert body["meta"]["cached"] is False


def test_an_empty_latest_answer_is_not_cached(stack: Stack) -> None:
    body = stack.get(LATEST, symbols="NOSUCH-USD").json()
    assert body["data"] == [] and body["meta"]["cached"] is False


def test_range_gives_its_interval_and_count(stack: Stack) -> None:
    hour = stack.get(RANGE, symbol=stack.symbol, **{"from": iso(3600)})
    assert hour.status_code == 200, hour.text
    body = hour.json()
    assert (body["meta"]["interval"], body["meta"]["count"]) == ("1h", len(body["data"]))
    assert sum(bucket["num_feeds"] for bucket in body["data"]) == 3
    minute = stack.get(RANGE, symbol=stack.symbol, interval="1m", **{"from": iso(3600)}).json()
    assert (minute["meta"]["interval"], minute["meta"]["count"]) == ("1m", len(minute["data"]))
    assert minute["meta"]["count"] >= 1 and minute["meta"]["latency_ms"] > 0


def test_consensus_gives_its_latency(stack: Stack) -> None:
    response = stack.get(CONSENSUS, symbols=stack.symbol)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["meta"]) == {"latency_ms"} and body["meta"]["latency_ms"] > 0
    [consensus] = body["data"]
    assert consensus["num_sources"] == 2


def test_the_served_document_declares_the_fields_and_real_answers_match(stack: Stack) -> None:
    document = httpx.get(f"http://{stack.rest.addr}/public/v1/openapi.json", timeout=5).json()
    answers = {
        LATEST: latest_from_cache(stack),
        RANGE: stack.get(RANGE, symbol=stack.symbol, **{"from": iso(3600)}),
        CONSENSUS: stack.get(CONSENSUS, symbols=stack.symbol),
    }
    for path, response in answers.items():
        schema = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "meta" in schema["required"], path
        jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(response.json())


def test_an_aggregated_range_may_span_two_years_and_no_more(stack: Stack) -> None:
    """Seed 004: aggregated ranges up to 2 years (it was 90 days)."""
    year = stack.get(RANGE, symbol=stack.symbol, interval="1d", **{"from": iso(365 * 86_400)})
    assert year.status_code == 200, year.text
    assert sum(bucket["num_feeds"] for bucket in year.json()["data"]) == 3
    too_long = stack.get(RANGE, symbol=stack.symbol, interval="1d", **{"from": iso(732 * 86_400)})
    assert too_long.status_code == 400, too_long.text
    error = too_long.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and "730 days" in error["message"]
