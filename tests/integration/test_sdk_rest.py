"""The SDK's ``RestClient`` against a real core and REST gateway over a seeded database, as an SDK user runs it.

Every method answers what its route answers, typed (every public field, prices
as exact decimals); cursors are followed to the last page; errors arrive with
the contract's code and request id.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import pytest

from perseus_sdk import ApiError, RestClient
from perseus_sdk.models import (
    Candle,
    ConsensusPrice,
    CurrentSignal,
    Exchange,
    LatestPrice,
    MacdV,
    PriceBucket,
    Symbol,
    TradeSignal,
    decode,
    decode_all,
)
from tests.support.market_seed import HOUR_MS, Seed, indicator_value, seed_indicator
from tests.support.processes import free_port
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed()


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED) as stack:
        env = stack.env
        value = indicator_value(SEED)  # a warm 1h MACD-V: /signals and /indicators answer
        asyncio.run(seed_indicator(env["PERSEUS_REDIS_URL"], env["PERSEUS_REDIS_PREFIX"], SEED, "1h", value))
        yield stack


def rest(stack: RestStack, tier: str = "pro", **kwargs: object) -> RestClient:
    return RestClient(f"http://{stack.rest.addr}", stack.keys[tier], **kwargs)  # type: ignore[arg-type]


def raw(stack: RestStack, path: str, **params: object) -> object:
    response = stack.get(f"/public/v1{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def test_every_method_answers_what_its_route_answers(stack: RestStack) -> None:
    since = int(time.time() * 1000) - HOUR_MS  # the seeded feeds are from the last 30 s
    async with rest(stack) as client:
        assert await client.exchanges() == decode_all(Exchange, raw(stack, "/exchanges"))
        symbols = await client.symbols(SEED.exchange)
        assert symbols == decode_all(Symbol, raw(stack, "/symbols", exchange=SEED.exchange))
        assert SEED.symbol in {s.symbol for s in symbols}
        candles = await client.candles(SEED.exchange, "seed/usd", limit=5)
        assert candles == decode_all(Candle, raw(stack, f"/candles/{SEED.exchange}/{SEED.symbol}", limit=5))
        assert [c.close for c in candles] == [Decimal(SEED.price(i)) for i in range(SEED.candles - 5, SEED.candles)]
        assert all(c.timestamp is not None and c.timestamp.utcoffset() == dt.timedelta(0) for c in candles)
        signal = await client.signal(SEED.exchange, SEED.symbol)
        assert signal == decode(CurrentSignal, raw(stack, f"/signals/{SEED.exchange}/{SEED.symbol}"))
        indicator = await client.indicator(SEED.exchange, "seed/usd")
        assert indicator == decode(MacdV, raw(stack, f"/indicators/{SEED.exchange}/{SEED.symbol}"))
        assert indicator.macd_v == indicator_value(SEED).macd_v and indicator.stage == "rallying"
        latest = await client.latest_prices([SEED.symbol])
        served = decode_all(LatestPrice, raw(stack, "/prices/latest", symbols=SEED.symbol))
        assert [replace(p, staleness_ms=0) for p in latest] == [replace(p, staleness_ms=0) for p in served]  # it ages
        assert latest[0].price == Decimal(SEED.price(3)) and latest[0].symbol == SEED.symbol
        buckets = await client.price_range(SEED.symbol, start=since, interval="1d")
        ranged = raw(stack, "/prices/range", symbol=SEED.symbol, **{"from": since, "interval": "1d"})
        assert buckets == decode_all(PriceBucket, ranged)
        assert buckets[0].num_feeds == 4
        consensus = await client.consensus([SEED.symbol, "BTC-USD"])
        assert consensus == decode_all(
            ConsensusPrice, raw(stack, "/aggregates/consensus", symbols=f"{SEED.symbol},BTC-USD")
        )
        assert client.rate_limit is not None and client.rate_limit.limit == 10_000
        assert client.rate_limit.remaining < 10_000


async def test_alerts_follow_the_cursor_through_every_page(stack: RestStack) -> None:
    async with rest(stack) as client:
        alerts = [alert async for alert in client.alerts(exchange=SEED.exchange, page_size=2)]
    everything = raw(stack, "/alerts", exchange=SEED.exchange, limit=100)
    assert alerts == decode_all(TradeSignal, everything) and len(alerts) == SEED.alerts


async def test_errors_carry_the_contract_code_and_request_id(stack: RestStack) -> None:
    async with rest(stack) as client:
        with pytest.raises(ApiError) as unknown:
            await client.candles(SEED.exchange, "NOPE-USD")
        with pytest.raises(ApiError) as invalid:
            await client.candles(SEED.exchange, SEED.symbol, limit=5000)
    async with RestClient(f"http://{stack.rest.addr}", "pk_not_a_key") as client:
        with pytest.raises(ApiError) as unauthorized:
            await client.exchanges()
    assert (unknown.value.status, unknown.value.code) == (404, "NOT_FOUND") and len(unknown.value.request_id) == 32
    assert (invalid.value.status, invalid.value.code) == (400, "VALIDATION_ERROR")
    assert invalid.value.details == {"field": "limit"}
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "UNAUTHORIZED")


async def test_a_gateway_that_is_not_there_is_unreachable_after_the_retries() -> None:
    async with RestClient(f"http://127.0.0.1:{free_port()}", "pk_any", retries=1) as client:
        with pytest.raises(ApiError) as raised:
            await client.exchanges()
    assert raised.value.status == 0 and raised.value.code == "UNREACHABLE"
