"""Abuse at the edge (issue 16): junk methods and paths in the metrics, huge ingest numbers, a /health flood.

Real gateways in front of the real core, real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
import redis

from perseus.marketdata.v1 import ingest_service_pb2 as ingest_pb2, ingest_service_pb2_grpc as ingest_grpc, prices_pb2
from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.support.processes import Process, run_cli, running_gateway

pytestmark = pytest.mark.integration

JUNK_METHODS = ("FOOBAR", "PROPFIND", "BREWCOFFEE")
JUNK_PATHS = ("/zz-junk-1", "/wp-admin/zz-junk-2.php", "/public/v1/zz-junk-3")
# A refused number must be answered at once: formatting 1e100000000 takes seconds and 100 MB.
QUICK_S = 2.0
HEALTH_FLOOD = 200


@pytest.fixture(scope="module")
def ws(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    with running_gateway("ws", migrated_env, core.addr) as process:
        yield process


@pytest.fixture(scope="module")
def admin_key(migrated_env: dict[str, str]) -> str:
    result = run_cli(["keys", "create", "--tier", "internal"], migrated_env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


# --- metrics labels ------------------------------------------------------------------------------


def request_counts(text: str) -> dict[tuple[str, str], float]:
    """``perseus_http_requests_total`` by (route, method)."""
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("perseus_http_requests_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        key = (labels["route"], labels["method"])
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


@pytest.mark.parametrize("kind", ["rest", "ws"])
def test_junk_methods_and_paths_are_counted_under_other(kind: str, request: pytest.FixtureRequest) -> None:
    gateway: Process = request.getfixturevalue(kind)
    base = f"http://{gateway.addr}"
    before = request_counts(httpx.get(f"{base}/metrics", timeout=5).text)
    with httpx.Client(timeout=5) as client:
        for method in JUNK_METHODS:
            client.request(method, f"{base}/health")
        for path in JUNK_PATHS:
            client.get(f"{base}{path}")
    text = httpx.get(f"{base}/metrics", timeout=5).text
    for junk in (*JUNK_METHODS, *(p.rsplit("/", 1)[1] for p in JUNK_PATHS)):
        assert f'"{junk}"' not in text and junk not in text, f"{junk} became a label"
    after = request_counts(text)
    methods = {method for _, method in after}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"}, methods
    other_methods = sum(n for (_, method), n in after.items() if method == "OTHER")
    other_methods -= sum(n for (_, method), n in before.items() if method == "OTHER")
    assert other_methods >= len(JUNK_METHODS)
    other_routes = after.get(("OTHER", "GET"), 0.0) - before.get(("OTHER", "GET"), 0.0)
    assert other_routes >= len(JUNK_PATHS)


# --- ingest numbers ------------------------------------------------------------------------------


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 5)) + ".000Z"


def feed_json(price: str, *, volume: str = '"1"', exchange_ts: str = "1728480896123") -> bytes:
    """One feed, its numbers spliced in as raw JSON text (``1e100000000`` stays a JSON number)."""
    feed = (
        f'{{"symbol": "ABU/USD", "price": {price}, "volume": {volume}, "source": "binance", '
        f'"timestamp": "{now_iso()}", "exchange_timestamp": {exchange_ts}}}'
    )
    return f'{{"worker_id": "abuse", "feeds": [{feed}]}}'.encode()


TEN_THOUSAND_DIGITS = "9" * 10_000
HUGE_BODIES = {
    "exponent as a JSON number": feed_json("1e100000000"),
    "exponent as a string": feed_json('"1e100000000"'),
    "tiny exponent as a JSON number": feed_json("1e-100000000"),
    "zero with a huge exponent": feed_json('"1"', volume="0e-100000000"),
    "10,000 digits as a JSON number": feed_json(TEN_THOUSAND_DIGITS),
    "10,000 digits as a string": feed_json(f'"{TEN_THOUSAND_DIGITS}"'),
    "41 significant digits": feed_json('"1.' + "1" * 40 + '"'),
    "1e30": feed_json('"1e30"'),
    "huge volume": feed_json('"1"', volume="1e100000000"),
    "huge epoch milliseconds": feed_json('"1"', exchange_ts="1e100000000"),
}


@pytest.mark.parametrize("body", HUGE_BODIES.values(), ids=HUGE_BODIES.keys())
def test_a_huge_number_is_refused_with_400_at_once(rest: Process, admin_key: str, body: bytes) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"http://{rest.addr}/internal/v1/ingest", content=body, headers={"X-API-Key": admin_key}, timeout=30
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["field"].startswith("feeds[0].")
    assert len(response.content) < 2000  # the number is not echoed back
    assert elapsed < QUICK_S, f"{elapsed:.1f} s"


def test_numbers_within_bounds_still_go_through(rest: Process, admin_key: str) -> None:
    body = feed_json('"' + "1" * 20 + "." + "2" * 20 + '"', volume="1e-29")  # 40 digits; 1e-29 is the smallest
    response = httpx.post(
        f"http://{rest.addr}/internal/v1/ingest", content=body, headers={"X-API-Key": admin_key}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["ingested"] == 1, response.text


# --- /health flood -------------------------------------------------------------------------------


def ping_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    entry = stats.get("cmdstat_ping")
    return int(entry["calls"]) if isinstance(entry, dict) else 0


@pytest.fixture(scope="module")
def rest_on_private_redis(
    migrated_env: dict[str, str], core: Process, embedded_redis: EmbeddedRedis
) -> Iterator[Process]:
    """A REST gateway whose own Redis is private: its PINGs are the only ones that Redis sees."""
    with running_gateway("rest", {**migrated_env, "PERSEUS_REDIS_URL": embedded_redis.url}, core.addr) as process:
        yield process


async def test_a_health_flood_probes_redis_about_once_a_second(
    rest_on_private_redis: Process, embedded_redis: EmbeddedRedis
) -> None:
    client = redis.Redis.from_url(embedded_redis.url)
    await asyncio.sleep(1.5)  # past the answer cached when the gateway started
    try:
        before = ping_calls(client)
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=HEALTH_FLOOD)) as http:
            url = f"http://{rest_on_private_redis.addr}/health"
            answers = await asyncio.gather(*(http.get(url) for _ in range(HEALTH_FLOOD)))
        elapsed = time.monotonic() - started
        pings = ping_calls(client) - before
    finally:
        client.close()
    # One probe per second of the flood (the cache lasts about 1 s), plus one for a probe started at the edge.
    assert 1 <= pings <= int(elapsed) + 2, f"{pings} Redis PINGs for {HEALTH_FLOOD} /health requests in {elapsed:.1f} s"
    # Every request got a health answer (200, or 503 if a store blinked under the flood), none an error.
    assert all(answer.json()["process"] == "rest" for answer in answers)
    assert len({answer.json()["timestamp"] for answer in answers}) <= pings


# --- the core's IngestService ------------------------------------------------------------------


GRPC_HUGE = {
    "exponent": "1e100000000",
    "tiny exponent": "1e-100000000",
    "10,000 digits": TEN_THOUSAND_DIGITS,
    "a megabyte of digits": "1" * 1_000_000,
}


@pytest.mark.parametrize("price", GRPC_HUGE.values(), ids=GRPC_HUGE.keys())
def test_the_core_refuses_a_huge_price_by_index_at_once(channel: grpc.Channel, price: str) -> None:
    feed = prices_pb2.PriceFeed(symbol="ABU-USD", price=price, volume="1", source="binance")
    feed.timestamp.FromMilliseconds(int(time.time() * 1000) - 5000)
    started = time.monotonic()
    reply = ingest_grpc.IngestServiceStub(channel).IngestPrices(
        ingest_pb2.IngestPricesRequest(worker_id="abuse", feeds=[feed]), timeout=10
    )
    elapsed = time.monotonic() - started
    assert (reply.ingested, reply.failed) == (0, 1)
    (error,) = reply.errors
    assert (error.index, error.field) == (0, "price")
    assert error.reason.startswith("is out of range"), error.reason
    assert len(error.reason) < 200, f"the reason echoes {len(error.reason)} characters"
    assert elapsed < QUICK_S, f"{elapsed:.1f} s"
