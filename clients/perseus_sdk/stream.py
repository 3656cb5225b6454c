"""A client of the WebSocket gateway's ``/public/v1/stream`` that reconnects and resumes.

    async with perseus_sdk.LiveStream("ws://127.0.0.1:8001", api_key) as stream:
        await stream.subscribe("candles:BTC-USD:1m", "prices:BTC-USD")
        async for item in stream:
            if isinstance(item, perseus_sdk.SeqGap):
                ...  # item.after_seq < seq < item.next_seq are gone for good
            else:
                print(item.type, item.channel, item.seq, item.data)

What it does so that callers do not have to:

- **Reconnects** after every drop that retrying can fix (network, gateway
  restart, 4008, 4009, 4029, 1013), with backoff and jitter from 0.1 s up to
  ``max_backoff_s``, and subscribes again with ``resume`` = the last ``seq``
  it handed over per channel, so the gateway replays exactly what was missed.
- **Exactly once, holes refilled**: events a resume brings twice are
  dropped. When a channel's seqs jump on an open connection (the gateway
  skipped events while this client read too slowly), the channel is
  subscribed again with ``resume`` and the missed events are handed over in
  order; only what the history no longer holds reaches the caller, as one
  :class:`SeqGap` before the next event.
- **Limits of the protocol**: subscribes go in messages of at most 20
  channels; more than 50 channels raise ``ValueError`` here.
- **Final closes end it**: 4001 (key missing, invalid or revoked) and 1009
  raise :class:`StreamClosed` from the iterator and from waiting calls.

A consumer that stops reading stops this client reading too (its buffer is
``buffer`` items): the gateway then skips events and closes the connection
with 4009, and the reconnect resumes from the last event handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

logger = logging.getLogger(__name__)

STREAM_PATH = "/public/v1/stream"
EVENT_TYPES = frozenset({"candle_close", "trade_signal", "price_update", "indicator_update"})
ANSWER_TYPES = frozenset({"subscribed", "unsubscribed", "error"})
FINAL_CLOSE_CODES = frozenset({4001, 1009})
CHANNELS_PER_MESSAGE = 20
MAX_CHANNELS = 50
FIRST_BACKOFF_S = 0.1
OPEN_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """``candle_close``, ``trade_signal``, ``price_update`` or ``indicator_update`` on ``channel`` (the name it
    was subscribed as)."""

    type: str
    channel: str
    seq: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SeqGap:
    """The events of ``channel`` after ``after_seq`` and before ``next_seq`` will never arrive."""

    channel: str
    after_seq: int
    next_seq: int


class StreamClosed(Exception):
    """The gateway closed the stream for a reason retrying cannot fix (or the client closed it)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"stream closed ({code}): {reason}")
        self.code = code
        self.reason = reason


class StreamRefused(Exception):
    """The gateway answered a subscribe or unsubscribe with an error (``INVALID_CHANNEL``, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Refill:
    """For the stream, not the caller: subscribe ``channel`` again with ``resume`` to fetch a hole."""

    channel: str


class SeqTracker:
    """The last seq handed over per channel: duplicates dropped, holes refilled or said. No I/O.

    A jump in a channel's seqs asks for a :class:`Refill` and, until the event
    right after the last one arrives, drops that channel's events (the resumed
    subscription brings them again, in order). A ``resume_gap`` from the
    gateway is a :class:`SeqGap`: the replay then starts at its
    ``first_available_seq``.
    """

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.refilling: set[str] = set()

    def accept(self, message: dict[str, Any]) -> list[LiveEvent | SeqGap | Refill]:
        channel, seq = message["channel"], int(message["seq"])
        last = self.last.get(channel)
        if last is not None and seq != last + 1:
            if seq <= last or channel in self.refilling:
                return []  # replayed twice, or past a hole the refill is bringing
            self.refilling.add(channel)
            return [Refill(channel)]
        self.refilling.discard(channel)
        self.last[channel] = seq
        return [LiveEvent(message["type"], channel, seq, message.get("data") or {})]

    def resume_gap(self, message: dict[str, Any]) -> list[SeqGap]:
        """The history did not reach back to the resume: the replay starts at ``first_available_seq``."""
        channel, first = message["channel"], int(message["first_available_seq"])
        last = self.last.get(channel)
        if last is None or first <= last + 1:
            return []
        self.last[channel] = first - 1
        return [SeqGap(channel, last, first)]

    def resumed(self) -> None:
        """A new connection resumes every channel from its last seq: no refill is pending any more."""
        self.refilling.clear()

    def resume_of(self, channels: Iterable[str]) -> dict[str, int]:
        return {channel: self.last[channel] for channel in channels if channel in self.last}

    def forget(self, channels: Iterable[str]) -> None:
        for channel in channels:
            self.last.pop(channel, None)
            self.refilling.discard(channel)


class _Dropped(Exception):
    """The connection a message went out on was lost before its answer came."""


Connect = Callable[..., Any]  # websockets' ``connect``; tests and proxies may pass their own


class LiveStream:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        max_backoff_s: float = 30.0,
        buffer: int = 10_000,
        connect: Connect = ws_connect,
    ) -> None:
        self._url = url.rstrip("/") + STREAM_PATH
        self._headers = {"X-API-Key": api_key}
        self._max_backoff_s = max_backoff_s
        self._connect = connect
        self._tracker = SeqTracker()
        self._channels: dict[str, None] = {}  # acknowledged, in order
        self._items: asyncio.Queue[LiveEvent | SeqGap | StreamClosed] = asyncio.Queue(buffer)
        self._answers: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()  # connected, or ended for good
        self._final: StreamClosed | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()  # held until done (the loop keeps only weak references)
        self.reconnects = 0

    async def __aenter__(self) -> LiveStream:
        """Connects once (a wrong address fails here); later drops are retried."""
        ws = await self._open()
        self._task = asyncio.create_task(self._run(ws))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._end(StreamClosed(1000, "closed by the client"))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ws is not None:
            await self._ws.close()

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    async def subscribe(self, *channels: str) -> None:
        """Subscribe (resuming channels seen before); raises :class:`StreamRefused` when the gateway refuses."""
        adding = [c for c in dict.fromkeys(channels) if c not in self._channels]
        if len(self._channels) + len(adding) > MAX_CHANNELS:
            raise ValueError(f"a connection holds at most {MAX_CHANNELS} channels")
        for chunk in _chunks(adding):
            await self._ask("subscribe", chunk)
            self._channels.update(dict.fromkeys(chunk))

    async def unsubscribe(self, *channels: str) -> None:
        leaving = [c for c in dict.fromkeys(channels) if c in self._channels]
        for channel in leaving:
            del self._channels[channel]  # a reconnect from now on does not bring them back
        self._tracker.forget(leaving)
        for chunk in _chunks(leaving):
            await self._ask("unsubscribe", chunk)

    def __aiter__(self) -> LiveStream:
        return self

    async def __anext__(self) -> LiveEvent | SeqGap:
        if self._final is not None and self._items.empty():
            return self._stop(self._final)
        item = await self._items.get()
        if isinstance(item, StreamClosed):
            return self._stop(item)
        return item

    # --- the connection ------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        ws: ClientConnection = await self._connect(
            self._url, additional_headers=self._headers, open_timeout=OPEN_TIMEOUT_S
        )
        self._ws = ws
        self._tracker.resumed()
        for chunk in _chunks(list(self._channels)):  # again, after a drop: resumed where the caller is
            self._resubscribe(ws, chunk)
        self._ready.set()
        return ws

    async def _run(self, ws: ClientConnection | None) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            if ws is not None:
                code, reason = await self._read(ws)
                if code in FINAL_CLOSE_CODES:
                    self._end(StreamClosed(code, reason))
                    return
                logger.info("stream dropped (%s %s); reconnecting", code, reason)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._max_backoff_s)
            try:
                ws = await self._open()
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                logger.info("stream reconnect failed: %r", exc)
                ws = None
                continue
            self.reconnects += 1
            backoff = FIRST_BACKOFF_S

    async def _read(self, ws: ClientConnection) -> tuple[int | None, str]:
        """Hand over what arrives until the connection ends; its close code and reason."""
        try:
            async for frame in ws:
                message = orjson.loads(frame)
                kind = message.get("type")
                if kind in EVENT_TYPES:
                    for item in self._tracker.accept(message):
                        if isinstance(item, Refill):
                            self._refill(ws, item.channel)
                        else:
                            await self._items.put(item)
                elif kind == "resume_gap":
                    for gap in self._tracker.resume_gap(message):
                        await self._items.put(gap)
                elif kind in ANSWER_TYPES and self._answers:
                    answer = self._answers.popleft()
                    if not answer.done():
                        answer.set_result(message)
                # heartbeats need nothing: websockets' own pings watch the connection
        except ConnectionClosed:
            pass
        finally:
            self._ready.clear()
            self._ws = None
            while self._answers:
                answer = self._answers.popleft()
                if not answer.done():
                    answer.set_exception(_Dropped())
            await ws.close()
        return ws.close_code, ws.close_reason or ""

    def _expect(self, ws: ClientConnection, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send ``message``; its answer (the gateway answers every message, in order)."""
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers.append(answer)
        self._later(ws.send(orjson.dumps(message).decode()))
        return answer

    def _later(self, call: Coroutine[Any, Any, None]) -> None:
        """Run ``call`` in the background; its failure shows as a dropped connection, so it is only retrieved."""
        task = asyncio.ensure_future(call)
        self._background.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()

    def _message(self, action: str, channels: list[str]) -> dict[str, Any]:
        resume = self._tracker.resume_of(channels) if action == "subscribe" else {}
        return {"action": action, "channels": channels, **({"resume": resume} if resume else {})}

    async def _ask(self, action: str, channels: list[str]) -> dict[str, Any]:
        """Send on the current connection and wait for the answer, again on the next one if it drops first."""
        while True:
            await self._ready.wait()
            if self._final is not None:
                raise self._final
            assert self._ws is not None
            try:
                answer = await self._expect(self._ws, self._message(action, channels))
            except _Dropped:
                continue
            if answer["type"] == "error":
                raise StreamRefused(answer["code"], answer["message"])
            return answer

    def _refill(self, ws: ClientConnection, channel: str) -> None:
        if channel in self._channels:  # not while the caller is leaving it
            self._expect(ws, self._message("unsubscribe", [channel]))
            self._resubscribe(ws, [channel])

    def _resubscribe(self, ws: ClientConnection, channels: list[str]) -> None:
        """Subscribe again, resuming from the last seqs handed over; a refusal drops the connection to retry."""
        self._expect(ws, self._message("subscribe", channels)).add_done_callback(
            lambda answer: self._resubscribed(ws, answer)
        )

    def _resubscribed(self, ws: ClientConnection, answer: asyncio.Future[dict[str, Any]]) -> None:
        if answer.cancelled() or answer.exception() is not None:
            return  # dropped again: the next connection subscribes again
        if answer.result()["type"] == "error":  # refused what it accepted before: try again from scratch
            logger.warning("resubscribe refused (%s); reconnecting", answer.result().get("message"))
            self._later(ws.close(1000, "resubscribe refused"))

    def _end(self, final: StreamClosed) -> None:
        if self._final is None:
            self._final = final
            self._ready.set()
            with contextlib.suppress(asyncio.QueueFull):
                self._items.put_nowait(final)  # wakes a waiting consumer; a full buffer is drained first

    def _stop(self, final: StreamClosed) -> NoReturn:
        if final.code == 1000:
            raise StopAsyncIteration
        raise final


def _chunks(channels: list[str]) -> list[list[str]]:
    return [channels[i : i + CHANNELS_PER_MESSAGE] for i in range(0, len(channels), CHANNELS_PER_MESSAGE)]


@dataclass(frozen=True, slots=True)
class ReplayedEvent:
    """A stored event played back by :func:`replay`: the live envelope's ``type``, ``channel`` and ``data``
    (with the original times, e.g. ``data["timestamp"]``); replayed events carry no ``seq``."""

    type: str
    channel: str
    data: dict[str, Any]


async def replay(
    url: str,
    api_key: str,
    channel: str,
    start: int | str,
    end: int | str,
    *,
    speed: float | str = "max",
    connect: Connect = ws_connect,
) -> AsyncIterator[ReplayedEvent]:
    """The stored events of ``channel`` (a prices, candles or signals channel) with times in ``start <= t < end``
    (epoch milliseconds or ISO 8601 times), oldest first, at ``speed`` times real time or as fast as they
    are read (``"max"``), on a connection of its own::

        async for event in perseus_sdk.replay("ws://127.0.0.1:8001", key, "prices:BTC-USD", start, end):
            print(event.data["timestamp"], event.data["price"])

    It ends after the last event of the range. A refused request raises :class:`StreamRefused` with the
    gateway's code (``INVALID_CHANNEL``, ``INVALID_MESSAGE``, ``RATE_LIMITED``); a replay the gateway had to
    cut short raises it with ``REPLAY_FAILED``; a closed connection raises :class:`StreamClosed`. Leaving the
    loop early closes the connection, which stops the replay."""
    ws: ClientConnection = await connect(
        url.rstrip("/") + STREAM_PATH, additional_headers={"X-API-Key": api_key}, open_timeout=OPEN_TIMEOUT_S
    )
    try:
        request = {"action": "replay", "channel": channel, "start": start, "end": end, "speed": speed}
        await ws.send(orjson.dumps(request).decode())
        while True:
            try:
                message = orjson.loads(await ws.recv())
            except ConnectionClosed as exc:
                code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "connection lost")
                raise StreamClosed(code, reason) from exc
            kind = message.get("type")
            if kind in EVENT_TYPES and message.get("replay") is True:
                yield ReplayedEvent(kind, message["channel"], message["data"])
            elif kind == "error":
                raise StreamRefused(message.get("code", ""), message.get("message", ""))
            elif kind == "replay_done":
                return
            elif kind == "replay_stopped":
                raise StreamRefused("REPLAY_FAILED", message.get("error", "the replay was stopped"))
    finally:
        await ws.close()
