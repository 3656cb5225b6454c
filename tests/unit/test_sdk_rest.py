"""The SDK's REST client without a network (an injected httpx transport): what is retried, what raises."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

import perseus_sdk.rest
from perseus_sdk import ApiError, RateLimit, RestClient
from perseus_sdk.models import Exchange, TradeSignal

Handler = Callable[[httpx.Request], httpx.Response]
LIMIT_HEADERS = {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "990", "X-RateLimit-Reset": "1790000060"}


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perseus_sdk.rest, "FIRST_BACKOFF_S", 0.001)


def client(answers: list[httpx.Response | Exception], seen: list[httpx.Request], **kwargs: object) -> RestClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return RestClient("http://gateway", "pk_test", transport=httpx.MockTransport(handle), **kwargs)  # type: ignore[arg-type]


def error(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": code.lower(), "details": {}, "request_id": "rid"}, "status": status}
    return httpx.Response(status, json=body, headers=headers)


def ok(data: object) -> httpx.Response:
    return httpx.Response(200, json={"data": data}, headers=LIMIT_HEADERS)


SIM = {"name": "sim", "display_name": "Simulator", "status": "online", "simulated": True, "last_heartbeat_time": None}


def alert(n: int) -> dict[str, object]:
    return {
        "symbol": "BTC-USD",
        "exchange": "sim",
        "timeframe": "1h",
        "signal_type": "zero_cross",
        "direction": "bullish",
        "strength": "weak",
        "price": f"{n}.10",
        "timestamp": f"2026-12-01T1{n}:00:00Z",
    }


async def test_an_unavailable_gateway_is_retried_under_one_request_id() -> None:
    seen: list[httpx.Request] = []
    async with client([error(503, "SERVICE_UNAVAILABLE"), httpx.ConnectError("refused"), ok([SIM])], seen) as rest:
        assert await rest.exchanges() == [Exchange("sim", "Simulator", "online", True, None)]
    assert len(seen) == 3 and len({r.headers["x-request-id"] for r in seen}) == 1
    assert seen[0].headers["x-api-key"] == "pk_test" and seen[0].url.path == "/public/v1/exchanges"


async def test_a_429_is_retried_after_its_retry_after_and_the_limit_is_noted() -> None:
    seen: list[httpx.Request] = []
    async with client([error(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "0"}), ok([])], seen) as rest:
        assert await rest.symbols("sim") == []
        assert rest.rate_limit == RateLimit(limit=1000, remaining=990, reset=1790000060)
    assert len(seen) == 2 and seen[1].url.params["exchange"] == "sim"


async def test_a_429_longer_than_the_caller_waits_raises_at_once() -> None:
    seen: list[httpx.Request] = []
    async with client([error(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "30"})], seen, max_retry_wait_s=1) as rest:
        with pytest.raises(ApiError) as raised:
            await rest.exchanges()
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (429, "RATE_LIMIT_EXCEEDED", 30)
    assert len(seen) == 1


async def test_errors_retrying_cannot_fix_raise_with_the_contract_fields() -> None:
    seen: list[httpx.Request] = []
    async with client([error(404, "NOT_FOUND")], seen) as rest:
        with pytest.raises(ApiError) as raised:
            await rest.candles("sim", "NOPE-USD")
    assert (raised.value.status, raised.value.code, raised.value.request_id) == (404, "NOT_FOUND", "rid")
    assert len(seen) == 1


async def test_an_unreachable_gateway_raises_after_the_retries() -> None:
    seen: list[httpx.Request] = []
    async with client([httpx.ConnectError("refused")] * 3, seen, retries=2) as rest:
        with pytest.raises(ApiError) as raised:
            await rest.exchanges()
    assert raised.value.status == 0 and raised.value.code == "UNREACHABLE" and len(seen) == 3


async def test_alert_pages_are_followed_and_a_failed_page_is_retried_from_its_cursor() -> None:
    seen: list[httpx.Request] = []
    pages = [
        httpx.Response(200, json={"data": [alert(1), alert(2)], "meta": {"next_cursor": "c1", "limit": 2}}),
        error(503, "SERVICE_UNAVAILABLE"),
        httpx.Response(200, json={"data": [alert(3)], "meta": {"next_cursor": None, "limit": 2}}),
    ]
    async with client(pages, seen) as rest:
        alerts = [a async for a in rest.alerts(symbol="BTC-USD", page_size=2)]
    assert all(isinstance(a, TradeSignal) for a in alerts)
    assert [a.price for a in alerts] == [Decimal("1.10"), Decimal("2.10"), Decimal("3.10")]
    assert alerts[2].timestamp == dt.datetime(2026, 12, 1, 13, tzinfo=dt.UTC)
    assert [r.url.params.get("cursor") for r in seen] == [None, "c1", "c1"]
    assert all(r.url.params["limit"] == "2" and r.url.params["symbol"] == "BTC-USD" for r in seen)


async def test_times_symbols_and_lists_are_sent_as_the_gateway_reads_them() -> None:
    seen: list[httpx.Request] = []
    async with client([ok([]), ok([]), ok([])], seen) as rest:
        await rest.candles("sim", "BTC/USD", start=dt.datetime(2026, 12, 1, 10, 0), limit=5)
        await rest.price_range("BTC-USD", start=1790000000000, interval="1d")
        await rest.latest_prices(["BTC-USD", "ETH-USD"])
    candles, ranged, latest = seen
    assert candles.url.raw_path.startswith(b"/public/v1/candles/sim/BTC%2FUSD?")
    assert candles.url.params["start"] == "2026-12-01T10:00:00+00:00" and candles.url.params["limit"] == "5"
    assert ranged.url.params["from"] == "1790000000000" and "to" not in ranged.url.params
    assert latest.url.params["symbols"] == "BTC-USD,ETH-USD"


async def test_a_success_that_breaks_the_contract_raises_unexpected_response_without_a_retry() -> None:
    seen: list[httpx.Request] = []
    broken = {**SIM, "simulated": "yes"}
    async with client([ok([broken]), httpx.Response(200, text="<html>")], seen) as rest:
        with pytest.raises(ApiError) as wrong_type:
            await rest.exchanges()
        with pytest.raises(ApiError) as not_json:
            await rest.exchanges()
    assert (wrong_type.value.status, wrong_type.value.code) == (200, "UNEXPECTED_RESPONSE")
    assert "Exchange.simulated" in wrong_type.value.message and len(wrong_type.value.request_id) == 32
    assert not_json.value.code == "UNEXPECTED_RESPONSE" and len(seen) == 2
