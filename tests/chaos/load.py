"""The load the drills run under, and what each client saw, timestamped on the harness's monotonic clock.

* :class:`Ingester` posts batches of unique feeds to ``/internal/v1/ingest``,
  one at a time; a failed batch is retried as is (ingest is idempotent) for
  up to ``RETRY_FOR_S``, then recorded as not acknowledged.
* :class:`WsClient` is a ``perseus_sdk.LiveStream`` subscribed to price and
  1m candle channels; it keeps every event and every ``SeqGap`` it is handed,
  and (through a thin wrapper around the connection) every close code.
* :class:`Poller` polls one URL and records each status (0: no answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

import perseus_sdk
from tests.chaos.checks import FeedKey, Seen

INGEST_SOURCE = "kraken"  # a known source that no running venue writes, so these rows are only ours
INGEST_SYMBOLS = ("CHX-USD", "CHY-USD")
BATCH = 20
INGEST_EVERY_S = 0.5
RETRY_FOR_S = 12.0
POLL_EVERY_S = 0.5


@dataclass(frozen=True, slots=True)
class Mark:
    """One thing a client saw: ``kind`` (health, candles, ingest, ws_close, ws_open, gap) and a detail."""

    t: float
    kind: str
    detail: str
    ok: bool


@dataclass
class Journal:
    marks: list[Mark] = field(default_factory=list)

    def add(self, kind: str, detail: str, ok: bool) -> None:
        self.marks.append(Mark(time.monotonic(), kind, detail, ok))

    def between(self, start: float, end: float) -> list[Mark]:
        return [m for m in self.marks if start <= m.t <= end]

    def last(self, kind: str) -> Mark | None:
        for mark in reversed(self.marks):
            if mark.kind == kind:
                return mark
        return None


class Ingester:
    def __init__(self, rest_url: str, key: str, journal: Journal) -> None:
        self._url = rest_url + "/internal/v1/ingest"
        self._key = key
        self._journal = journal
        self._last_ts = 0  # strictly increasing timestamps: every feed unique
        self.acknowledged: list[FeedKey] = []
        self.unacknowledged: list[FeedKey] = []
        self.batches = self.retries = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _batch(self) -> list[tuple[FeedKey, dict[str, Any]]]:
        feeds = []
        for i in range(BATCH):
            symbol = INGEST_SYMBOLS[i % len(INGEST_SYMBOLS)]
            self._last_ts = ts_ms = max(self._last_ts + 1, int(time.time() * 1000))
            price = Decimal(random.randint(100_000, 200_000)) / 100
            volume = Decimal(random.randint(1, 10_000)) / 1000
            key: FeedKey = (symbol, INGEST_SOURCE, ts_ms, price, volume)
            body = {
                "symbol": symbol,
                "price": str(price),
                "volume": str(volume),
                "source": INGEST_SOURCE,
                "timestamp": ts_ms,
            }
            feeds.append((key, body))
        return feeds

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0, headers={"X-API-Key": self._key}) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                await self._send(client, self._batch())
                await asyncio.sleep(max(0.0, INGEST_EVERY_S - (time.monotonic() - started)))

    async def _send(self, client: httpx.AsyncClient, batch: list[tuple[FeedKey, dict[str, Any]]]) -> None:
        self.batches += 1
        body = {"worker_id": "chaos", "feeds": [feed for _, feed in batch]}
        deadline = time.monotonic() + RETRY_FOR_S
        first = True
        while True:
            if not first:
                self.retries += 1
            first = False
            try:
                response = await client.post(self._url, json=body)
                status = response.status_code
            except httpx.HTTPError as exc:
                status, response = 0, None
                detail = type(exc).__name__
            if response is not None and status == 200:
                data = response.json()["data"]
                failed = {e["index"] for e in data.get("errors", [])}
                for index, (key, _) in enumerate(batch):
                    (self.unacknowledged if index in failed else self.acknowledged).append(key)
                self._journal.add("ingest", "200", not failed)
                return
            detail = str(status) if status else detail
            self._journal.add("ingest", detail, False)
            if time.monotonic() >= deadline or self._stop.is_set():
                self.unacknowledged.extend(key for key, _ in batch)
                return
            await asyncio.sleep(0.5)


class Poller:
    def __init__(self, kind: str, url: str, journal: Journal, key: str | None = None) -> None:
        self.kind = kind
        self._url = url
        self._journal = journal
        self._headers = {"X-API-Key": key} if key else {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=3.0, headers=self._headers) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = (await client.get(self._url)).status_code
                except httpx.HTTPError:
                    status = 0
                self._journal.add(self.kind, str(status), status == 200)
                await asyncio.sleep(max(0.0, POLL_EVERY_S - (time.monotonic() - started)))


class _Tapped:
    """A websockets connection that reports its close code to the journal (everything else passes through)."""

    def __init__(self, ws: Any, client: WsClient) -> None:
        self._ws = ws
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def __aiter__(self) -> Any:
        try:
            async for frame in self._ws:
                yield frame
        finally:
            self._client.connected = False
            self._client.journal.add("ws_close", str(self._ws.close_code), False)


class WsClient:
    def __init__(self, number: int, url: str, key: str, channels: Iterable[str], journal: Journal) -> None:
        self.number = number
        self.url = url
        self.key = key
        self.channels = list(channels)
        self.journal = journal
        self.seen: list[Seen] = []
        self.last_event = 0.0
        self.connected = False
        self.opens = 0
        self.stream: perseus_sdk.LiveStream | None = None
        self.error: str | None = None

    async def _connect(self, *args: Any, **kwargs: Any) -> Any:
        ws = await ws_connect(*args, **kwargs)
        self.connected = True
        self.opens += 1
        if self.opens > 1:
            self.journal.add("ws_open", "reconnected", True)
        return _Tapped(ws, self)

    async def run(self) -> None:
        try:
            async with perseus_sdk.LiveStream(self.url, self.key, max_backoff_s=5.0, connect=self._connect) as stream:
                self.stream = stream
                await stream.subscribe(*self.channels)
                async for item in stream:
                    if isinstance(item, perseus_sdk.SeqGap):
                        self.seen.append(Seen(item.channel, item.after_seq, item.next_seq, time.monotonic()))
                        self.journal.add("gap", f"{item.channel} {item.after_seq}->{item.next_seq}", False)
                    else:
                        self.seen.append(Seen(item.channel, item.seq, None, time.monotonic()))
                        if item.type == "price_update":
                            self.last_event = time.monotonic()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a final close: the client is gone, the report says so
            self.error = f"{type(exc).__name__}: {exc}"
            self.journal.add("ws_final", self.error, False)

    async def close(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(Exception):
                await self.stream.aclose()
