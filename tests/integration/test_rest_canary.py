"""Whitelisting at the REST edge: internal values stored in the real stores never reach a public response.

Every internal field the public routes' data carries is filled, in PostgreSQL
and in the Redis candle window, with a value found nowhere else (ids, the
internal alert fields, candle sequence numbers, the worker id, the API key's
id; the indicator state's EMAs and ATR); the core then reads them through its
real paths. Every public route is
called, and no body or header may contain any canary, nor the name of any
internal field, nor an internal Redis key or channel name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from common.projection import is_public
from perseus.marketdata.v1 import (
    candles_pb2,
    indicators_pb2,
    market_pb2,
    prices_pb2,
    signals_pb2,
    webhook_service_pb2,
)
from tests.support.market_seed import Seed, indicator_value, seed_indicator
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(
    exchange="canaryx",
    exchange_id=91_337_101,
    symbol_id=91_337_102,
    symbol="CANARY-USD",
    sequence_base=91_337_200,
    alert_id_base=91_337_300,
    alert_type="canary-alert-type",
    trigger_label="canary-trigger-label",
    trigger_value=91_337_401.5,
    signal_delta=91_337_402.25,
    worker_id="canary-worker",
    feed_id_base=91_337_500,
)
FIRST_KEY_ID = 91_337_600
MESSAGES = (
    market_pb2.Exchange,
    market_pb2.Symbol,
    candles_pb2.Candle,
    signals_pb2.TradeSignal,
    signals_pb2.CurrentSignal,
    indicators_pb2.MacdV,
    prices_pb2.PriceFeed,
    prices_pb2.LatestPrice,
    prices_pb2.PriceBucket,
    prices_pb2.ConsensusPrice,
)
# The indicator state's internals (EMAs and ATR), found nowhere else.
INDICATOR = indicator_value(SEED, fast_ema=91_337_701.5, slow_ema=91_337_702.25, atr=91_337_703.125)
# A name public in another served message (a webhook's own "id") cannot mark a leak by its name; the seeded
# values above still catch any of these messages' internal ids.
PUBLIC_ELSEWHERE = {f.name for f in webhook_service_pb2.Webhook.DESCRIPTOR.fields if is_public(f)}
INTERNAL_FIELD_NAMES = sorted(
    {f.name for m in MESSAGES for f in m.DESCRIPTOR.fields if not is_public(f)} - PUBLIC_ELSEWHERE
)


def canaries(stack: RestStack) -> list[str]:
    values = [
        str(SEED.exchange_id),
        str(SEED.symbol_id),
        *(str(SEED.sequence_base + i) for i in range(SEED.candles)),
        *(str(SEED.alert_id_base + i) for i in range(SEED.alerts)),
        *(str(SEED.feed_id_base + i) for i in range(4)),
        *(str(FIRST_KEY_ID + i) for i in range(3)),
        SEED.alert_type,
        SEED.trigger_label,
        "91337401",  # trigger_value (+ i)
        "91337402",  # signal_delta (+ i)
        "91337701",  # fast_ema
        "91337702",  # slow_ema
        "91337703",  # atr
        SEED.worker_id,
        stack.env["PERSEUS_REDIS_PREFIX"],
        "ch:candles",
        "ch:signals",
        "ch:prices",
        "ch:indicators",
        "ratelimit:",
        *(f'"{name}"' for name in INTERNAL_FIELD_NAMES),
    ]
    return values


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED, first_key_id=FIRST_KEY_ID) as stack:
        env = stack.env
        asyncio.run(seed_indicator(env["PERSEUS_REDIS_URL"], env["PERSEUS_REDIS_PREFIX"], SEED, "1h", INDICATOR))
        yield stack


def public_calls(stack: RestStack) -> list[httpx.Response]:
    pair = f"{SEED.exchange}/{SEED.symbol}"
    now_ms = int(time.time() * 1000)
    calls = [
        ("/public/v1/exchanges", {}),
        ("/public/v1/symbols", {}),
        ("/public/v1/symbols", {"exchange": SEED.exchange}),
        (f"/public/v1/candles/{pair}", {}),
        (f"/public/v1/candles/{pair}", {"limit": 5}),  # the Redis window only
        (f"/public/v1/candles/{pair}", {"start": SEED.first_open_ms, "limit": 3}),  # PostgreSQL only
        (f"/public/v1/signals/{pair}", {"timeframe": "1h"}),
        ("/public/v1/alerts", {"exchange": SEED.exchange}),
        ("/public/v1/prices/latest", {"symbols": SEED.symbol}),
        (
            "/public/v1/prices/range",
            {"symbol": SEED.symbol, "from": int(time.time() * 1000) - 86_400_000, "interval": "1d"},
        ),
        ("/public/v1/aggregates/consensus", {"symbols": SEED.symbol}),
        (f"/public/v1/candles/{SEED.exchange}/NONE-USD", {}),  # errors too
        (f"/public/v1/signals/{SEED.exchange}/{SEED.symbol}", {"timeframe": "1m"}),
        (f"/public/v1/indicators/{pair}", {"timeframe": "1h"}),
        (f"/public/v1/indicators/{pair}", {"timeframe": "1m"}),  # warming up
        (f"/public/v1/indicators/{SEED.exchange}/NONE-USD", {}),
        # bulk export (issue 21): every stored candle and tick, as NDJSON and CSV
        *(
            (
                f"/public/v1/export/candles/{pair}",
                {"timeframe": "1h", "start": SEED.first_open_ms, "end": SEED.open_ms(SEED.candles), "format": fmt},
            )
            for fmt in ("ndjson", "csv")
        ),
        *(
            (
                "/public/v1/export/ticks",
                {"symbol": SEED.symbol, "start": now_ms - 3_600_000, "end": now_ms + 60_000, "format": fmt},
            )
            for fmt in ("ndjson", "csv")
        ),
        (f"/public/v1/export/candles/{SEED.exchange}/NONE-USD", {"start": 0, "end": 60_000}),
    ]
    responses = [stack.get(path, params=params) for path, params in calls]
    first_page = stack.get("/public/v1/alerts", params={"exchange": SEED.exchange, "limit": 2}).json()
    responses.append(stack.get("/public/v1/alerts", params={"limit": 2, "cursor": first_page["meta"]["next_cursor"]}))
    for tier in ("free", "internal"):
        responses.append(stack.get(f"/public/v1/candles/{pair}", tier=tier))
    responses.append(httpx.get(f"http://{stack.rest.addr}/public/v1/openapi.json"))
    responses.append(httpx.get(f"http://{stack.rest.addr}/docs"))
    return responses


def test_the_seeded_internal_values_are_really_read(stack: RestStack) -> None:
    """The canaries sit where the routes read: the data comes back, only the internal parts are gone."""
    candles = stack.get(f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}").json()["data"]
    alerts = stack.get("/public/v1/alerts", params={"exchange": SEED.exchange}).json()["data"]
    assert len(candles) == SEED.candles and len(alerts) == SEED.alerts
    indicator = stack.get(f"/public/v1/indicators/{SEED.exchange}/{SEED.symbol}").json()["data"]
    signal = stack.get(f"/public/v1/signals/{SEED.exchange}/{SEED.symbol}").json()["data"]
    assert indicator["macd_v"] == INDICATOR.macd_v and signal["stage"] == INDICATOR.stage.value
    assert candles[0]["volume"] == "0"  # zero values of public fields still appear
    # the export routes read the same rows: all of them, the internal parts gone
    now_ms = int(time.time() * 1000)
    exported = stack.get(
        f"/public/v1/export/candles/{SEED.exchange}/{SEED.symbol}",
        params={"timeframe": "1h", "start": SEED.first_open_ms, "end": SEED.open_ms(SEED.candles)},
    )
    assert exported.text.count("\n") == SEED.candles + 1 and exported.text.endswith(f'"rows":{SEED.candles}}}\n')
    ticks = stack.get("/public/v1/export/ticks", params={"symbol": SEED.symbol, "start": 0, "end": now_ms + 60_000})
    assert ticks.status_code == 400  # longer than the tick range cap
    ticks = stack.get(
        "/public/v1/export/ticks", params={"symbol": SEED.symbol, "start": now_ms - 3_600_000, "end": now_ms + 60_000}
    )
    assert ticks.text.endswith('{"type":"end","rows":4}\n')


def test_no_canary_reaches_any_public_response(stack: RestStack) -> None:
    wanted = canaries(stack)
    for response in public_calls(stack):
        assert response.status_code in (200, 404), (response.url, response.text)
        text = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        leaked = [canary for canary in wanted if canary in text]
        assert not leaked, f"{response.url} leaked {leaked}"
