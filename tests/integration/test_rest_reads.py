"""Every public read of the REST gateway, through a real gateway and core over seeded stores."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.market_seed import HOUR_MS, Seed, indicator_value, seed_indicator
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed()
CANDLES = f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}"


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED) as stack:
        env = stack.env
        value = indicator_value(SEED)  # a warm 1h MACD-V on the newest candle: /signals serves its signal
        asyncio.run(seed_indicator(env["PERSEUS_REDIS_URL"], env["PERSEUS_REDIS_PREFIX"], SEED, "1h", value))
        yield stack


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_exchanges_and_symbols(stack: RestStack) -> None:
    exchanges = stack.get("/public/v1/exchanges")
    assert exchanges.status_code == 200, exchanges.text
    by_name = {e["name"]: e for e in exchanges.json()["data"]}
    assert by_name[SEED.exchange] == {
        "name": SEED.exchange,
        "display_name": SEED.exchange.title(),
        "status": "offline",
        "simulated": False,
        "last_heartbeat_time": None,
    }
    symbols = stack.get("/public/v1/symbols", params={"exchange": SEED.exchange})
    assert symbols.json() == {
        "data": [{"exchange": SEED.exchange, "symbol": SEED.symbol, "base": "SEED", "quote": "USD", "active": True}]
    }
    unknown = stack.get("/public/v1/symbols", params={"exchange": "nowhere"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"


def test_candles_default_to_1h_and_the_newest_100_oldest_first(stack: RestStack) -> None:
    response = stack.get(CANDLES)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == SEED.candles  # window and PostgreSQL merged
    assert [c["timestamp"] for c in data] == [iso(SEED.open_ms(i)) for i in range(SEED.candles)]
    assert data[0] == {
        "exchange": SEED.exchange,
        "symbol": SEED.symbol,
        "timeframe": "1h",
        "timestamp": iso(SEED.open_ms(0)),
        "open": "100.00",
        "high": "101.00",
        "low": "99.00",
        "close": "100.00",
        "volume": "0",  # a zero value still appears
    }


def test_candles_accept_slash_symbols_limits_and_ranges(stack: RestStack) -> None:
    slash = stack.get(f"/public/v1/candles/{SEED.exchange}/seed%2Fusd", params={"limit": 3})
    assert slash.status_code == 200, slash.text
    assert [c["timestamp"] for c in slash.json()["data"]] == [iso(SEED.open_ms(i)) for i in (27, 28, 29)]
    written = stack.get(f"/public/v1/candles/{SEED.exchange}/seed/USD", params={"limit": 3})
    assert written.json() == slash.json()
    signal = stack.get(f"/public/v1/signals/{SEED.exchange}/SEED/USD")
    assert signal.status_code == 200 and signal.json()["data"]["symbol"] == SEED.symbol
    ranged = stack.get(CANDLES, params={"start": iso(SEED.open_ms(5)), "end": SEED.open_ms(8), "timeframe": "1h"})
    assert [c["timestamp"] for c in ranged.json()["data"]] == [iso(SEED.open_ms(i)) for i in (5, 6, 7)]
    assert stack.get(CANDLES, params={"timeframe": "1m"}).json() == {"data": []}


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        (CANDLES, {"limit": "1001"}, 400, "limit"),
        (CANDLES, {"limit": "0"}, 400, "limit"),
        (CANDLES, {"limit": "99999999999999999999"}, 400, "limit"),
        (CANDLES, {"limit": "ten"}, 400, "limit"),
        (CANDLES, {"timeframe": "2h"}, 400, "timeframe"),
        (CANDLES, {"start": "yesterday"}, 400, "start"),
        (CANDLES, {"start": "2026-01-01T00:00:00"}, 400, "start"),
        (f"/public/v1/candles/{SEED.exchange}/NOPE", {}, 400, "symbol"),
        (f"/public/v1/candles/nowhere/{SEED.symbol}", {}, 404, None),
        (f"/public/v1/candles/{SEED.exchange}/NOPE-USD", {}, 404, None),
        ("/public/v1/alerts", {"cursor": "!!!"}, 400, "cursor"),
        ("/public/v1/alerts", {"cursor": "AAAA"}, 400, None),
        ("/public/v1/alerts", {"limit": "5000"}, 400, "limit"),
        ("/public/v1/prices/latest", {}, 400, "symbols"),
        ("/public/v1/prices/latest", {"symbols": ",".join(f"A{i}-USD" for i in range(101))}, 400, "symbols"),
        ("/public/v1/prices/range", {"symbol": SEED.symbol}, 400, "from"),
        ("/public/v1/signals/nowhere/BTC-USD", {}, 404, None),
    ],
)
def test_bad_parameters_are_400_and_unknown_names_404(
    stack: RestStack, path: str, params: dict[str, str], status: int, field: str | None
) -> None:
    response = stack.get(path, params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and body["error"]["request_id"] == response.headers["x-request-id"]
    assert body["error"]["code"] == {400: "VALIDATION_ERROR", 404: "NOT_FOUND"}[status]
    if field is not None:
        assert body["error"]["details"] == {"field": field}


def test_signal_and_paginated_alerts(stack: RestStack) -> None:
    signal = stack.get(f"/public/v1/signals/{SEED.exchange}/{SEED.symbol}", params={"timeframe": "1h"})
    assert signal.status_code == 200, signal.text
    newest = SEED.candles - 1
    assert signal.json() == {  # the current state's signal, not the newest alert (that one is in /alerts)
        "data": {
            "symbol": SEED.symbol,
            "exchange": SEED.exchange,
            "timeframe": "1h",
            "signal_type": "momentum_state",
            "direction": "bullish",
            "strength": "moderate",
            "stage": "rallying",
            "price": SEED.price(newest),
            "timestamp": iso(SEED.open_ms(newest + 1)),
        }
    }
    seen, cursor, pages = [], None, 0
    while True:
        params = {"exchange": SEED.exchange, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = stack.get("/public/v1/alerts", params=params).json()
        seen += [a["timestamp"] for a in page["data"]]
        pages += 1
        cursor = page["meta"]["next_cursor"]
        assert page["meta"]["limit"] == 2
        if cursor is None:
            break
    assert pages == 3 and seen == [iso(SEED.open_ms(i + 1)) for i in reversed(range(SEED.alerts))]


def test_prices_latest_range_and_consensus(stack: RestStack) -> None:
    latest = stack.get("/public/v1/prices/latest", params={"symbols": "seed/usd,NONE-USD"})
    assert latest.status_code == 200, latest.text
    [price] = latest.json()["data"]
    assert price["symbol"] == SEED.symbol and price["price"] == SEED.price(3) and price["staleness_ms"] >= 0
    now_ms = int(time.time() * 1000)  # the seeded feeds are from the last 30 s
    ranged = stack.get(
        "/public/v1/prices/range", params={"symbol": SEED.symbol, "from": now_ms - HOUR_MS, "interval": "1d"}
    )
    assert ranged.status_code == 200, ranged.text
    [bucket] = ranged.json()["data"]
    assert bucket["num_feeds"] == 4 and bucket["open"] == SEED.price(0) and bucket["close"] == SEED.price(3)
    consensus = stack.get("/public/v1/aggregates/consensus", params={"symbols": SEED.symbol})
    assert consensus.status_code == 200 and isinstance(consensus.json()["data"], list)  # the core's arithmetic


def test_keys_are_required_and_every_response_has_the_headers(stack: RestStack) -> None:
    missing = httpx.get(f"http://{stack.rest.addr}/public/v1/exchanges", headers={"X-Request-ID": "abc-123"})
    assert missing.status_code == 401 and missing.json()["error"]["request_id"] == "abc-123"
    assert missing.headers["x-request-id"] == "abc-123"
    bearer = httpx.get(
        f"http://{stack.rest.addr}/public/v1/exchanges", headers={"Authorization": f"Bearer {stack.keys['free']}"}
    )
    assert bearer.status_code == 200
    assert bearer.headers["x-ratelimit-limit"] == "1000" and int(bearer.headers["x-ratelimit-remaining"]) < 1000
    unlimited = stack.get("/public/v1/exchanges", tier="admin")
    assert unlimited.headers["x-ratelimit-limit"] == "0"
    for response in (missing, bearer, unlimited, httpx.get(f"http://{stack.rest.addr}/health")):
        assert {"x-request-id", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(
            response.headers
        )


def test_openapi_and_docs_are_open(stack: RestStack) -> None:
    spec = httpx.get(f"http://{stack.rest.addr}/public/v1/openapi.json")
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1")
    docs = httpx.get(f"http://{stack.rest.addr}/docs")
    assert docs.status_code == 200 and "/public/v1/candles/{exchange}/{symbol}" in docs.text
    assert "http://" not in docs.text.replace(f"http://{stack.rest.addr}", "") and "https://" not in docs.text
