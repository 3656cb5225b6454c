"""The public indicator and the current signal, through a real REST gateway and core over seeded stores.

The seeded pair has candles but no alert at all, and its indicator state is
written where the core reads it (the state the indicators service keeps in
Redis), so the routes are seen before the indicator exists, while it warms
up, and once it is warm: ``/indicators`` serves the public MACD-V projection
and nothing else, and ``/signals`` serves the signal of that state although
no alert was ever raised.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest

from core.domain.signals import Stage, Zone
from perseus_sdk.models import CurrentSignal, MacdV
from perseus_sdk.rest import ApiError, RestClient
from tests.support.market_seed import HOUR_MS, Seed, indicator_value, seed_indicator
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(exchange="indx", exchange_id=710_001, symbol_id=710_002, symbol="IND-USD", candles=40, alerts=0)
PAIR = f"{SEED.exchange}/{SEED.symbol}"
INDICATOR = f"/public/v1/indicators/{PAIR}"
SIGNAL = f"/public/v1/signals/{PAIR}"
NEWEST = SEED.candles - 1
PUBLIC_FIELDS = ["exchange", "symbol", "timeframe", "timestamp", "macd_v", "signal", "histogram", "stage", "zone"]


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED) as stack:
        yield stack


def seed(stack: RestStack, timeframe: str, **fields: object) -> None:
    value = indicator_value(SEED, **fields)
    asyncio.run(
        seed_indicator(stack.env["PERSEUS_REDIS_URL"], stack.env["PERSEUS_REDIS_PREFIX"], SEED, timeframe, value)
    )


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def assert_warming_up(stack: RestStack, path: str, timeframe: str) -> None:
    response = stack.get(path, params={"timeframe": timeframe})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "NOT_FOUND" and error["details"] == {"reason": "warming_up"}, error
    assert "warming up" in error["message"] or "no MACD-V" in error["message"]


def test_before_the_indicator_is_warm_both_routes_say_warming_up(stack: RestStack) -> None:
    for path in (INDICATOR, SIGNAL):
        assert_warming_up(stack, path, "4h")  # no state at all: no candle of it closed since indicators ran
    seed(stack, "15m", ready=False)  # a state with too few closes
    for path in (INDICATOR, SIGNAL):
        assert_warming_up(stack, path, "15m")
    assert stack.get("/public/v1/alerts", params={"exchange": SEED.exchange}).json()["data"] == []


@pytest.mark.parametrize("path", [INDICATOR, SIGNAL])
@pytest.mark.parametrize(
    ("pair", "status", "code"),
    [
        (f"{SEED.exchange}/NOPE-USD", 404, "NOT_FOUND"),
        (f"nowhere/{SEED.symbol}", 404, "NOT_FOUND"),
        (f"{SEED.exchange}/NOPE", 400, "VALIDATION_ERROR"),
    ],
)
def test_unknown_names_are_a_plain_404(stack: RestStack, path: str, pair: str, status: int, code: str) -> None:
    response = stack.get(path.replace(PAIR, pair))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and "reason" not in error["details"]
    bad_timeframe = stack.get(path, params={"timeframe": "2h"})
    assert bad_timeframe.status_code == 400 and bad_timeframe.json()["error"]["details"] == {"field": "timeframe"}


def test_the_indicator_is_the_public_projection_and_nothing_else(stack: RestStack) -> None:
    seed(stack, "1h")
    response = stack.get(INDICATOR)  # timeframe defaults to 1h
    assert response.status_code == 200, response.text
    assert response.json() == {
        "data": {
            "exchange": SEED.exchange,
            "symbol": SEED.symbol,
            "timeframe": "1h",
            "timestamp": iso(SEED.open_ms(NEWEST) + HOUR_MS),  # the close time of the reading's candle
            "macd_v": 63.25,
            "signal": 41.5,
            "histogram": 21.75,
            "stage": "rallying",
            "zone": "positive",
        }
    }
    assert list(response.json()["data"]) == PUBLIC_FIELDS
    for internal in ("101.125", "100.0625", "1.6796875", "ema", "atr", "period", "_id"):
        assert internal not in response.text
    slash = stack.get(f"/public/v1/indicators/{SEED.exchange}/ind%2Fusd", params={"timeframe": "1h"})
    assert slash.json() == response.json()


def test_the_signal_is_the_current_state_before_any_alert_exists(stack: RestStack) -> None:
    seed(stack, "1h")
    response = stack.get(SIGNAL, params={"timeframe": "1h"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "data": {
            "symbol": SEED.symbol,
            "exchange": SEED.exchange,
            "timeframe": "1h",
            "signal_type": "momentum_state",
            "direction": "bullish",  # MACD-V above its signal line
            "strength": "moderate",  # |63.25| >= 50
            "stage": "rallying",
            "price": SEED.price(NEWEST),  # the exact close of the reading's candle
            "timestamp": iso(SEED.open_ms(NEWEST) + HOUR_MS),
        }
    }
    assert stack.get("/public/v1/alerts", params={"symbol": SEED.symbol}).json()["data"] == []
    # The state moves on: the signal follows it at once (bearish below the line, strength from |MACD-V|).
    seed(stack, "1h", macd_v=-160.5, signal=-120.0, histogram=-40.5, stage=Stage.OVERSOLD, zone=Zone.DEEP_NEGATIVE)
    moved = stack.get(SIGNAL).json()["data"]
    assert (moved["direction"], moved["strength"], moved["stage"]) == ("bearish", "extreme", "oversold")


async def test_the_sdk_reads_both_and_sees_the_reason(stack: RestStack) -> None:
    await asyncio.to_thread(seed, stack, "1h")
    async with RestClient(f"http://{stack.rest.addr}", stack.keys["free"], retries=0) as rest:
        indicator = await rest.indicator(SEED.exchange, SEED.symbol)
        signal = await rest.signal(SEED.exchange, SEED.symbol, timeframe="1h")
        with pytest.raises(ApiError) as info:
            await rest.indicator(SEED.exchange, SEED.symbol, timeframe="1d")
    opened = dt.datetime.fromtimestamp((SEED.open_ms(NEWEST) + HOUR_MS) / 1000, dt.UTC)
    assert indicator == MacdV(SEED.exchange, SEED.symbol, "1h", opened, 63.25, 41.5, 21.75, "rallying", "positive")
    assert signal == CurrentSignal(
        SEED.symbol,
        SEED.exchange,
        "1h",
        "momentum_state",
        "bullish",
        "moderate",
        "rallying",
        Decimal(SEED.price(NEWEST)),
        opened,
    )
    assert info.value.status == 404 and info.value.details == {"reason": "warming_up"}
