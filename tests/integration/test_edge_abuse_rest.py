"""Abuse at the REST edge (issue 16): junk API keys, internal keys, price ranges, the candle cache.

A real core and REST gateway over a private seeded database, real Redis and PostgreSQL, a real HTTP client.
The gateway trusts one proxy (``PERSEUS_TRUSTED_PROXIES=1``), so each test can speak from addresses of its
own through ``X-Forwarded-For`` and the per-address limits of one test do not reach another.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import grpc
import httpx
import pytest

from perseus.marketdata.v1 import (
    common_pb2,
    ingest_service_pb2 as ingest_pb2,
    ingest_service_pb2_grpc as ingest_grpc,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
    prices_pb2,
)
from tests.support.market_seed import Seed
from tests.support.processes import Process, free_port, running_core
from tests.support.rest_stack import RestStack, make_key, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(exchange="abusex", exchange_id=760_001, symbol_id=760_002, symbol="ABX-USD")
CANDLES = f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}"
BAD_KEYS_PER_MINUTE = 5
INTERNAL_LIMIT = 40
HEAVY_PER_KEY = 2
CANDLE_BUDGET = 4_000  # a few 5-candle bodies; never a 30-candle one
DAY_MS = 86_400_000
AUTHENTICATE = "/perseus.marketdata.v1.KeyService/AuthenticateKey"
# A day long before any tick partition: its ticks would sit in price_feeds_default, which a test locks.
OLD_DAY = "2000-01-01T00:00:00Z", "2000-01-02T00:00:00Z"


@pytest.fixture(scope="module")
def metrics_addr() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str, metrics_addr: str) -> Iterator[RestStack]:
    env = {**base_env, "PERSEUS_CORE_METRICS_ADDR": metrics_addr}
    with seeded_rest_stack(
        env,
        admin_database_url,
        SEED,
        PERSEUS_TRUSTED_PROXIES="1",
        PERSEUS_BAD_KEYS_PER_MINUTE=str(BAD_KEYS_PER_MINUTE),
        PERSEUS_INTERNAL_REQUESTS_PER_MINUTE=str(INTERNAL_LIMIT),
        PERSEUS_HEAVY_READS_PER_KEY=str(HEAVY_PER_KEY),
        PERSEUS_CANDLE_CACHE_BYTES=str(CANDLE_BUDGET),
    ) as stack:
        yield stack


def url(stack: RestStack, path: str) -> str:
    return f"http://{stack.rest.addr}{path}"


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def key_lookups(metrics_addr: str) -> float:
    """AuthenticateKey calls the core has finished, whatever their answer."""
    return metric(
        httpx.get(f"http://{metrics_addr}/metrics", timeout=5).text, "perseus_grpc_requests_total", method=AUTHENTICATE
    )


def gateway_metric(stack: RestStack, name: str, **labels: str) -> float:
    return metric(httpx.get(url(stack, "/metrics"), timeout=5).text, name, **labels)


def early_in_a_minute() -> None:
    """Start a burst early in a minute, so it cannot straddle two rate-limit windows."""
    if time.time() % 60 > 40:
        time.sleep(60 - time.time() % 60 + 0.2)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    error: dict[str, object] = response.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["request_id"]
    return error


# --- junk keys -----------------------------------------------------------------------------------


MALFORMED = (
    "nope",
    "pk_pro_short",
    "pk_PRO_" + "A" * 43,  # the tier marker is lower-case
    "pk_pro_" + "A" * 101,  # too long
    "sk_pro_" + "A" * 43,  # another prefix
    "pk_pro_" + "A" * 40 + "%21",  # a character no key has
    "pk_pro_" + "A" * 40 + "...",
)


def test_malformed_keys_are_refused_without_asking_the_core(stack: RestStack, metrics_addr: str) -> None:
    before = key_lookups(metrics_addr)
    with httpx.Client(timeout=5) as client:
        for n, key in enumerate(MALFORMED * 3):
            response = client.get(
                url(stack, "/public/v1/exchanges"), headers={"X-API-Key": key, "X-Forwarded-For": f"192.0.2.{n}"}
            )
            error = assert_error(response, 401, "UNAUTHORIZED")
            assert "malformed" in str(error["message"])
    assert key_lookups(metrics_addr) == before


def test_unknown_keys_cost_one_lookup_each_then_429_for_that_address(stack: RestStack, metrics_addr: str) -> None:
    unknown = [f"pk_pro_{'Z' * 30}{n:013d}" for n in range(BAD_KEYS_PER_MINUTE + 3)]
    attacker, neighbour = {"X-Forwarded-For": "198.51.100.66"}, {"X-Forwarded-For": "198.51.100.67"}
    early_in_a_minute()
    before = key_lookups(metrics_addr)
    with httpx.Client(timeout=5) as client:

        def get(key: str, headers: dict[str, str]) -> httpx.Response:
            return client.get(url(stack, "/public/v1/exchanges"), headers={"X-API-Key": key, **headers})

        assert get(stack.keys["pro"], neighbour).status_code == 200  # a key this gateway knows
        before = key_lookups(metrics_addr)
        for _ in range(3):  # the same unknown key again and again: the negative cache answers
            assert_error(get(unknown[0], attacker), 401, "UNAUTHORIZED")
        assert key_lookups(metrics_addr) == before + 1
        for key in unknown[1:BAD_KEYS_PER_MINUTE]:
            assert_error(get(key, attacker), 401, "UNAUTHORIZED")
        assert key_lookups(metrics_addr) == before + BAD_KEYS_PER_MINUTE
        for key in unknown[BAD_KEYS_PER_MINUTE:]:  # this address tried enough: no more lookups
            refused = get(key, attacker)
            assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
            assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert key_lookups(metrics_addr) == before + BAD_KEYS_PER_MINUTE
        # a key the gateway confirmed still works from there, and another address is not affected
        assert get(stack.keys["pro"], attacker).status_code == 200
        assert_error(get(unknown[-1], neighbour), 401, "UNAUTHORIZED")


# --- internal keys -------------------------------------------------------------------------------


def ingest_body() -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 5)) + ".000Z"
    feed = f'{{"symbol": "ABX/USD", "price": "1.5", "volume": "1", "source": "binance", "timestamp": "{stamp}"}}'
    return f'{{"worker_id": "abuse", "feeds": [{feed}]}}'.encode()


def test_internal_keys_are_limited_ingest_included_and_admin_keys_are_not(stack: RestStack) -> None:
    internal = make_key(stack.env, "internal")
    early_in_a_minute()
    with httpx.Client(timeout=10, headers={"X-API-Key": internal}) as client:
        read = client.get(url(stack, "/public/v1/exchanges"))
        assert read.status_code == 200 and read.headers["x-ratelimit-limit"] == str(INTERNAL_LIMIT)
        ingested = client.post(url(stack, "/internal/v1/ingest"), content=ingest_body())
        assert ingested.status_code != 429 and ingested.headers["x-ratelimit-limit"] == str(INTERNAL_LIMIT)
        assert int(ingested.headers["x-ratelimit-remaining"]) == INTERNAL_LIMIT - 2  # the ingest was counted
        for _ in range(INTERNAL_LIMIT - 2):
            assert client.post(url(stack, "/internal/v1/ingest"), content=ingest_body()).status_code != 429
        assert_error(client.post(url(stack, "/internal/v1/ingest"), content=ingest_body()), 429, "RATE_LIMIT_EXCEEDED")
        refused = client.get(url(stack, "/public/v1/exchanges"))
        assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
        assert int(refused.headers["retry-after"]) >= 1
    with httpx.Client(timeout=10, headers={"X-API-Key": stack.keys["admin"]}) as client:
        for _ in range(INTERNAL_LIMIT + 5):
            response = client.post(url(stack, "/internal/v1/ingest"), content=ingest_body())
            assert response.status_code != 429 and response.headers["x-ratelimit-limit"] == "0"


# --- price ranges --------------------------------------------------------------------------------


def test_a_range_costs_its_span_and_is_capped_per_interval(stack: RestStack) -> None:
    key = make_key(stack.env, "pro")
    now = int(time.time() * 1000)
    early_in_a_minute()
    first = stack.get("/public/v1/exchanges", headers={"X-API-Key": key})
    month = stack.get(
        "/public/v1/prices/range",
        headers={"X-API-Key": key},
        params={"symbol": SEED.symbol, "from": now - 30 * DAY_MS, "to": now, "interval": "1d"},
    )
    assert month.status_code == 200, month.text
    spent = int(first.headers["x-ratelimit-remaining"]) - int(month.headers["x-ratelimit-remaining"])
    assert spent == 1 + 1 + 30  # one, one per thousand buckets, one per day scanned
    # 8 days of minutes is 11,520 intervals, beyond the 10,000 cap; 8 days of hours is 192
    params = {"symbol": SEED.symbol, "from": now - 8 * DAY_MS, "to": now}
    too_long = stack.get("/public/v1/prices/range", headers={"X-API-Key": key}, params={**params, "interval": "1m"})
    error = assert_error(too_long, 400, "VALIDATION_ERROR")
    assert error["details"] == {"field": "from"} and "10000 intervals" in str(error["message"])
    hours = stack.get("/public/v1/prices/range", headers={"X-API-Key": key}, params={**params, "interval": "1h"})
    assert hours.status_code == 200, hours.text


async def waiting_heavy_reads(conn: asyncpg.Connection) -> int:
    """Statements of the core's heavy-read pool waiting for a lock."""
    value = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'perseus-core-heavy-reads'"
        " AND wait_event_type = 'Lock'"
    )
    return int(value)


async def until(predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_key_may_have_only_a_few_range_reads_in_flight(stack: RestStack) -> None:
    pro, other = make_key(stack.env, "pro"), make_key(stack.env, "pro")
    params = {"symbol": SEED.symbol, "from": OLD_DAY[0], "to": OLD_DAY[1], "interval": "1h"}
    locker = await asyncpg.connect(stack.env["PERSEUS_DATABASE_URL"])
    observer = await asyncpg.connect(stack.env["PERSEUS_DATABASE_URL"])
    try:
        async with httpx.AsyncClient(timeout=20) as client:

            def read(key: str) -> asyncio.Task[httpx.Response]:
                return asyncio.ensure_future(
                    client.get(url(stack, "/public/v1/prices/range"), params=params, headers={"X-API-Key": key})
                )

            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE price_feeds_default IN ACCESS EXCLUSIVE MODE")
            try:
                held = [read(pro) for _ in range(HEAVY_PER_KEY)]
                await until(lambda: _at_least(observer, HEAVY_PER_KEY), "the first reads did not reach PostgreSQL")
                refused = await read(pro)  # while the key's reads are in flight
                assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
                assert refused.headers["retry-after"] == "1"
                another = read(other)  # another key is not affected
                await until(lambda: _at_least(observer, HEAVY_PER_KEY + 1), "the other key's read was held back")
                assert not any(task.done() for task in (*held, another))
            finally:
                await transaction.rollback()
            for response in await asyncio.gather(*held, another):
                assert response.status_code == 200, response.text
        async with httpx.AsyncClient(timeout=20, headers={"X-API-Key": pro}) as client:  # and the key is free again
            assert (await client.get(url(stack, "/public/v1/prices/range"), params=params)).status_code == 200
    finally:
        await locker.close()
        await observer.close()


async def _at_least(conn: asyncpg.Connection, count: int) -> bool:
    return await waiting_heavy_reads(conn) >= count


async def _waiting_ranges(conn: asyncpg.Connection, count: int) -> bool:
    """Whether ``count`` range reads (from any pool) of this database wait for a lock."""
    value = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        " AND query LIKE '%date_bin%'"
    )
    return int(value) >= count


# --- heavy reads have their own pool -------------------------------------------------------------


@pytest.fixture(scope="module")
def small_heavy_pool_core(migrated_env: dict[str, str]) -> Iterator[Process]:
    with running_core(migrated_env, PERSEUS_DATABASE_HEAVY_POOL_SIZE="2") as process:
        yield process


def one_feed() -> ingest_pb2.IngestPricesRequest:
    feed = prices_pb2.PriceFeed(symbol="ABX-USD", price="2.5", volume="1", source="binance")
    feed.timestamp.FromMilliseconds(int(time.time() * 1000) - 5000)
    return ingest_pb2.IngestPricesRequest(worker_id="abuse", feeds=[feed])


async def test_heavy_reads_cannot_starve_ingestion(
    small_heavy_pool_core: Process, migrated_env: dict[str, str]
) -> None:
    """More range reads than the ingestion pool has connections, all stuck behind a lock: ingestion still
    gets a connection at once, because the reads queue on their own pool."""
    request = md_pb2.GetPriceRangeRequest(symbol="ABX-USD", interval=common_pb2.TIMEFRAME_1H, limit=10)
    request.start_time.FromMilliseconds(946_684_800_000)  # 2000-01-01: price_feeds_default
    request.end_time.FromMilliseconds(946_684_800_000 + DAY_MS)
    locker = await asyncpg.connect(migrated_env["PERSEUS_DATABASE_URL"])
    observer = await asyncpg.connect(migrated_env["PERSEUS_DATABASE_URL"])  # outside the lock's transaction
    try:
        async with grpc.aio.insecure_channel(small_heavy_pool_core.addr) as channel:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE price_feeds_default IN ACCESS EXCLUSIVE MODE")
            try:
                reads = [
                    asyncio.ensure_future(md_grpc.MarketDataServiceStub(channel).GetPriceRange(request, timeout=10))
                    for _ in range(12)  # more than the 10 connections of the core's main pool
                ]
                await until(lambda: _waiting_ranges(observer, 2), "the range reads did not reach PostgreSQL")
                reply = await ingest_grpc.IngestServiceStub(channel).IngestPrices(one_feed(), timeout=3)
                assert (reply.ingested, reply.failed) == (1, 0), reply
                assert not all(read.done() for read in reads)  # the reads were still stuck meanwhile
            finally:
                await transaction.rollback()
            for read in reads:  # each is answered or refused (its pool's wait is bounded), none hangs
                try:
                    await read
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), exc
    finally:
        await locker.close()
        await observer.close()


# --- the candle cache ----------------------------------------------------------------------------


def candle_results(stack: RestStack) -> dict[str, float]:
    text = httpx.get(url(stack, "/metrics"), timeout=5).text
    return {r: metric(text, "perseus_rest_candle_cache_total", result=r) for r in ("hit", "miss", "shared", "bypass")}


def cache_size(stack: RestStack, measure: str) -> float:
    return gateway_metric(stack, "perseus_rest_candle_cache_size", measure=measure)


def test_start_and_end_within_one_candle_share_one_entry(stack: RestStack) -> None:
    base, end = SEED.open_ms(3), SEED.open_ms(9)
    aligned = stack.get(CANDLES, tier="admin", params={"limit": 5, "start": SEED.open_ms(4), "end": end})
    assert aligned.status_code == 200
    before = candle_results(stack)
    answers = [
        stack.get(CANDLES, tier="admin", params={"limit": 5, "start": base + n, "end": end - 1000 + n})
        for n in range(1, 11)
    ]
    after = candle_results(stack)
    assert {a.content for a in answers} == {aligned.content}  # the same candles: opens are boundaries
    assert after["miss"] - before["miss"] == 0 and after["hit"] - before["hit"] == 10


def test_the_cache_keeps_to_its_byte_budget(stack: RestStack) -> None:
    before = candle_results(stack)
    for _ in range(2):  # a body larger than the budget is never kept
        assert stack.get(CANDLES, tier="admin", params={"limit": SEED.candles}).status_code == 200
    after = candle_results(stack)
    assert after["miss"] - before["miss"] == 2 and after["hit"] == before["hit"]
    for limit in range(1, 11):  # many small ones: the oldest go
        assert stack.get(CANDLES, tier="admin", params={"limit": limit}).status_code == 200
        assert 0 < cache_size(stack, "bytes") <= CANDLE_BUDGET
    assert 1 <= cache_size(stack, "entries") < 10


def test_expired_entries_are_evicted(stack: RestStack) -> None:
    for limit in (1, 2, 3):
        assert stack.get(CANDLES, tier="admin", params={"limit": limit}).status_code == 200
    assert cache_size(stack, "entries") >= 2
    time.sleep(5.2)  # past the entries' age (MAX_AGE_S)
    assert stack.get(CANDLES, tier="admin", params={"limit": 4}).status_code == 200
    assert cache_size(stack, "entries") == 1
