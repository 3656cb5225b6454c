"""A client of the REST gateway (``/public/v1``) that retries what can be retried and follows cursors.

    async with perseus_sdk.RestClient("http://127.0.0.1:8000", api_key) as rest:
        candles = await rest.candles("coinbase", "BTC-USD", timeframe="1m", limit=100)
        async for alert in rest.alerts(symbol="BTC-USD"):   # every page, newest first
            ...

Every method returns the ``data`` of the answer as the typed objects of
:mod:`perseus_sdk.models` (``Candle``, ``TradeSignal``…: prices and volumes
as ``Decimal``, times as aware UTC ``datetime``); fields a newer gateway adds
are ignored. What it does so that callers do not have to:

- **Retries** a request when the gateway or the network failed it: a
  transport error, 502, 503 or 504, up to ``retries`` more times with
  backoff and jitter (every route is a read, so a retry is safe); a 429 after
  the ``Retry-After`` it was given, when that is at most ``max_retry_wait_s``.
  Every attempt carries the same ``X-Request-ID``, so the gateway's and the
  core's logs show one request.
- **Pages**: :meth:`alerts` follows ``meta.next_cursor``; a page that fails
  is retried from its own cursor, so nothing is skipped or repeated.
- **Errors** that retrying cannot fix raise :class:`ApiError` with the
  contract's ``code``, ``message``, ``details`` and ``request_id``; a success
  whose body breaks the contract raises it with code ``UNEXPECTED_RESPONSE``.
- :attr:`RestClient.rate_limit` is the ``X-RateLimit-*`` of the last answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from perseus_sdk.models import (
    Candle,
    ConsensusPrice,
    CurrentSignal,
    DecodeError,
    Exchange,
    LatestPrice,
    MacdV,
    PriceBucket,
    PriceFeed,
    Symbol,
    TradeSignal,
    decode,
    decode_all,
)

RETRIED_STATUSES = frozenset({502, 503, 504})
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
PREFIX = "/public/v1"

Time = dt.datetime | str | int  # a datetime (naive means UTC), ISO-8601 text or epoch milliseconds
R = TypeVar("R")
M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int  # units per minute; 0 for a key that is not limited
    remaining: int
    reset: int  # epoch second at which the window ends


class ApiError(Exception):
    """An answer that is not a success, with the gateway's error body (``status`` 0: no answer at all)."""

    def __init__(
        self, status: int, code: str, message: str, *, details: Any = None, request_id: str = "", retry_after: int = 0
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id
        self.retry_after = retry_after


class RestClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
        max_retry_wait_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers={"X-API-Key": api_key}, timeout=timeout_s, transport=transport
        )
        self._retries = retries
        self._max_retry_wait_s = max_retry_wait_s
        self.rate_limit: RateLimit | None = None

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the routes --------------------------------------------------------------------------

    async def exchanges(self) -> list[Exchange]:
        return await self._get("/exchanges", {}, _many(Exchange))

    async def symbols(self, exchange: str | None = None) -> list[Symbol]:
        return await self._get("/symbols", {"exchange": exchange}, _many(Symbol))

    async def candles(
        self,
        exchange: str,
        symbol: str,
        *,
        timeframe: str = "1h",
        limit: int = 100,
        start: Time | None = None,
        end: Time | None = None,
    ) -> list[Candle]:
        """Closed candles, oldest first: the newest ``limit`` (before ``end``), or the first from ``start``."""
        path = f"/candles/{_segment(exchange)}/{_segment(symbol)}"
        params = {"timeframe": timeframe, "limit": limit, "start": start, "end": end}
        return await self._get(path, params, _many(Candle))

    async def signal(self, exchange: str, symbol: str, *, timeframe: str = "1h") -> CurrentSignal:
        """The signal of the current MACD-V state; 404 ``details.reason == "warming_up"`` before it is warm."""
        path = f"/signals/{_segment(exchange)}/{_segment(symbol)}"
        return await self._get(path, {"timeframe": timeframe}, _one(CurrentSignal))

    async def indicator(self, exchange: str, symbol: str, *, timeframe: str = "1h") -> MacdV:
        """The public MACD-V of the last closed candle; 404 ``details.reason == "warming_up"`` before it is warm."""
        path = f"/indicators/{_segment(exchange)}/{_segment(symbol)}"
        return await self._get(path, {"timeframe": timeframe}, _one(MacdV))

    async def alerts(
        self,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
        since: Time | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[TradeSignal]:
        """Every trade signal that matches, newest first, page after page."""
        params: dict[str, Any] = {"exchange": exchange, "symbol": symbol, "timeframe": timeframe, "since": since}
        cursor: str | None = None
        while True:
            page, cursor = await self._get("/alerts", {**params, "limit": page_size, "cursor": cursor}, _page)
            for alert in page:
                yield alert
            if not cursor:
                return

    async def latest_prices(self, symbols: Iterable[str]) -> list[LatestPrice]:
        return await self._get("/prices/latest", {"symbols": ",".join(symbols)}, _many(LatestPrice))

    async def price_range(
        self,
        symbol: str,
        *,
        start: Time,
        end: Time | None = None,
        interval: str = "1h",
        source: str | None = None,
        limit: int = 1000,
    ) -> list[PriceBucket]:
        """OHLCV buckets of the price feeds from ``start`` to ``end`` (now), with ``num_feeds``."""
        params = {"symbol": symbol, "from": start, "to": end, "interval": interval, "source": source, "limit": limit}
        return await self._get("/prices/range", params, _many(PriceBucket))

    async def consensus(self, symbols: Iterable[str], *, timestamp: Time | None = None) -> list[ConsensusPrice]:
        params = {"symbols": ",".join(symbols), "timestamp": timestamp}
        return await self._get("/aggregates/consensus", params, _many(ConsensusPrice))

    # --- bulk export (NDJSON, streamed) -----------------------------------------------------------

    def export_candles(
        self, exchange: str, symbol: str, *, start: Time, end: Time, timeframe: str = "1m"
    ) -> AsyncIterator[Candle]:
        """Every stored candle with ``start <= timestamp < end``, oldest first, read as the gateway streams them
        (one request; memory stays one line). A body cut short, or ended by the gateway's error line, raises
        :class:`ApiError` after the candles that did arrive; an error before the first row raises at once."""
        path = f"/export/candles/{_segment(exchange)}/{_segment(symbol)}"
        return self._export(path, {"timeframe": timeframe, "start": start, "end": end}, Candle)

    def export_ticks(
        self, symbol: str, *, start: Time, end: Time, source: str | None = None
    ) -> AsyncIterator[PriceFeed]:
        """Every stored tick of ``symbol`` (of ``source`` only, if given) with ``start <= timestamp < end``, by
        time; as :meth:`export_candles`."""
        return self._export(
            "/export/ticks", {"symbol": symbol, "source": source, "start": start, "end": end}, PriceFeed
        )

    async def _export(self, path: str, params: dict[str, Any], model: type[M]) -> AsyncIterator[M]:
        query = {name: _param(value) for name, value in params.items() if value is not None}
        query["format"] = "ndjson"
        request_id = uuid.uuid4().hex
        headers = {"X-Request-ID": request_id}
        try:
            async with self._http.stream("GET", PREFIX + path, params=query, headers=headers, timeout=None) as response:
                self._note_limit(response)
                if not response.is_success:
                    await response.aread()
                    raise _error(response, request_id)
                rows = 0
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    item = json.loads(line)
                    kind = item.get("type") if isinstance(item, dict) else None
                    if kind == "end":
                        if item.get("rows") != rows:
                            raise ApiError(200, "UNEXPECTED_RESPONSE", f"{rows} rows, the end line says {item}")
                        return
                    if kind == "error":
                        error = item.get("error") or {}
                        raise ApiError(
                            200,
                            str(error.get("code", "HTTP_ERROR")),
                            str(error.get("message", "the export failed")),
                            details=error.get("details"),
                            request_id=str(error.get("request_id") or request_id),
                        )
                    yield decode(model, item)
                    rows += 1
        except httpx.TransportError as exc:
            raise ApiError(0, "UNREACHABLE", str(exc) or type(exc).__name__, request_id=request_id) from exc
        raise ApiError(
            200, "TRUNCATED", f"the export ended without its end line after {rows} rows", request_id=request_id
        )

    # --- one request -------------------------------------------------------------------------

    async def _get(self, path: str, params: dict[str, Any], read: Callable[[dict[str, Any]], R]) -> R:
        """The answer to ``GET path``, its body read by ``read`` (retried as the module says)."""
        query = {name: _param(value) for name, value in params.items() if value is not None}
        request_id = uuid.uuid4().hex
        backoff = FIRST_BACKOFF_S
        for attempt in range(self._retries + 1):
            wait: float | None = None
            try:
                response = await self._http.get(PREFIX + path, params=query, headers={"X-Request-ID": request_id})
            except httpx.TransportError as exc:
                error = ApiError(0, "UNREACHABLE", str(exc) or type(exc).__name__, request_id=request_id)
                error.__cause__ = exc
                wait = backoff * random.uniform(0.5, 1.0)
            else:
                self._note_limit(response)
                if response.is_success:
                    return _read(response, read, request_id)
                error = _error(response, request_id)
                if response.status_code == 429 and error.retry_after <= self._max_retry_wait_s:
                    wait = error.retry_after
                elif response.status_code in RETRIED_STATUSES:
                    wait = backoff * random.uniform(0.5, 1.0)
            if wait is None or attempt == self._retries:
                raise error
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")  # pragma: no cover

    def _note_limit(self, response: httpx.Response) -> None:
        try:
            self.rate_limit = RateLimit(
                int(response.headers["x-ratelimit-limit"]),
                int(response.headers["x-ratelimit-remaining"]),
                int(response.headers["x-ratelimit-reset"]),
            )
        except (KeyError, ValueError):
            pass


def _one(model: type[M]) -> Callable[[dict[str, Any]], M]:
    return lambda body: decode(model, body["data"])


def _many(model: type[M]) -> Callable[[dict[str, Any]], list[M]]:
    return lambda body: decode_all(model, body["data"])


def _page(body: dict[str, Any]) -> tuple[list[TradeSignal], str | None]:
    """One page of alerts and the cursor of the next (None after the last)."""
    cursor = (body.get("meta") or {}).get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise DecodeError(f"meta.next_cursor: expected a string or null, got {cursor!r}")
    return decode_all(TradeSignal, body["data"]), cursor


def _read(response: httpx.Response, read: Callable[[dict[str, Any]], R], request_id: str) -> R:
    """A success's body as ``read`` makes it; a body that breaks the contract is an :class:`ApiError`, not retried."""
    try:
        body = response.json()
        if not isinstance(body, dict):
            raise DecodeError(f"expected a JSON object, got {type(body).__name__}")
        return read(body)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # DecodeError and JSONDecodeError are ValueErrors
        message = f"the answer to {response.request.url.path} breaks the contract: {exc!r}"
        raise ApiError(response.status_code, "UNEXPECTED_RESPONSE", message, request_id=request_id) from exc


def _error(response: httpx.Response, request_id: str) -> ApiError:
    try:
        body = response.json()["error"]
        code, message, details = body["code"], body["message"], body.get("details")
        request_id = body.get("request_id") or request_id
    except (ValueError, KeyError, TypeError):
        code, message, details = "HTTP_ERROR", response.text[:200] or response.reason_phrase, None
    try:
        retry_after = int(response.headers.get("retry-after", "0"))
    except ValueError:
        retry_after = 0
    return ApiError(
        response.status_code, code, message, details=details, request_id=request_id, retry_after=retry_after
    )


def _param(value: Any) -> str:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.isoformat()
    return str(value)


def _segment(value: str) -> str:
    return quote(value, safe="")  # BTC/USD stays one path segment
