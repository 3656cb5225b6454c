"""One sharded pub/sub connection per core process, fanned out to every open stream.

:class:`StreamHub` owns a single redis-py ``PubSub`` (one connection taken
from the core's pool) and one reader task. Channel subscriptions are
reference-counted: the first subscriber of a channel sends ``SSUBSCRIBE``, the
last one leaving sends ``SUNSUBSCRIBE``. Sharded pub/sub (Redis ≥ 7) is
required, with no ``SUBSCRIBE`` fallback: the publisher (``SPUBLISH`` in
``core.adapters.events``) needs it already, and a plain ``SUBSCRIBE`` would
never see sharded messages.

Each subscriber has a bounded queue of ``(channel, seq, payload)`` items. When
it is full the subscriber is ended with :class:`StreamFellBehind` (the RPC
edge answers RESOURCE_EXHAUSTED) instead of growing memory. An item with
``seq == RESYNC`` (0, never a published seq) tells the subscriber that
messages of that channel may have been missed: it must read the history after
its last delivered seq. The hub sends one whenever a channel's subscription is
confirmed again, which happens after every reconnect (redis-py's own retry or
the reader's restart, which re-subscribes every channel with subscribers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis

from core.domain.errors import Unavailable

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1_000
RESYNC = 0
READ_TIMEOUT_S = 5.0
SUBSCRIBE_TIMEOUT_S = 5.0
RECONNECT_DELAYS_S = (0.1, 0.2, 0.5, 1.0, 2.0)

Item = tuple[str, int, bytes]


class StreamFellBehind(Exception):
    """The subscriber's queue filled up; the stream must end (RESOURCE_EXHAUSTED)."""

    def __init__(self) -> None:
        super().__init__("the stream fell behind; resume from your last seq")


class HubClosed(Unavailable):
    def __init__(self) -> None:
        super().__init__("the core is shutting down; resume from your last seq")


_OVERFLOW: Item = ("", -1, b"")
_CLOSED: Item = ("", -2, b"")


class Subscriber:
    """One stream's view of the hub: a bounded queue of items of its channels."""

    __slots__ = ("_queue", "channels", "ended")

    def __init__(self, channels: Sequence[str], queue_size: int) -> None:
        self.channels = tuple(dict.fromkeys(channels))
        self._queue: asyncio.Queue[Item] = asyncio.Queue(queue_size + 1)  # +1: room for the end marker
        self.ended = False

    def offer(self, item: Item) -> None:
        if self.ended:
            return
        if self._queue.qsize() >= self._queue.maxsize - 1:
            self._end(_OVERFLOW)
        else:
            self._queue.put_nowait(item)

    def _end(self, marker: Item) -> None:
        self.ended = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(marker)

    async def get(self) -> Item:
        """The next item; raises StreamFellBehind or HubClosed when the stream must end."""
        item = await self._queue.get()
        if item[1] < 0:
            self._queue.put_nowait(item)  # keep answering the same way
            raise StreamFellBehind() if item is _OVERFLOW else HubClosed()
        return item


class _Entry:
    __slots__ = ("confirmed", "subscribers")

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.confirmed = asyncio.Event()


class StreamHub:
    def __init__(self, redis: aioredis.Redis, *, queue_size: int = QUEUE_SIZE) -> None:
        self._redis = redis
        self._queue_size = queue_size
        self._channels: dict[str, _Entry] = {}
        self._pubsub: Any = None
        self._lock = asyncio.Lock()  # orders (un)subscribe commands and the reader's re-subscribe
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    async def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._run(), name="stream-hub")

    async def aclose(self) -> None:
        """Stop reading and end every subscriber with HubClosed (UNAVAILABLE, retryable)."""
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        for entry in self._channels.values():
            for subscriber in entry.subscribers:
                if not subscriber.ended:
                    subscriber._end(_CLOSED)

    @contextlib.asynccontextmanager
    async def subscription(self, channels: Sequence[str]) -> AsyncIterator[Subscriber]:
        """Subscribe to ``channels`` (internal names) until the block exits; confirmed on entry."""
        if self._closed:
            raise HubClosed()
        subscriber = Subscriber(channels, self._queue_size)
        try:
            waits = [await self._acquire(name, subscriber) for name in subscriber.channels]
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                    for event in waits:
                        await event.wait()
            except TimeoutError:
                raise Unavailable("Redis did not confirm the subscription; retry") from None
            yield subscriber
        finally:
            await asyncio.shield(self._release(subscriber))

    async def _acquire(self, name: str, subscriber: Subscriber) -> asyncio.Event:
        async with self._lock:
            entry = self._channels.get(name)
            if entry is None:
                entry = self._channels[name] = _Entry()
                await self._send("ssubscribe", name)
            entry.subscribers.add(subscriber)
            return entry.confirmed

    async def _release(self, subscriber: Subscriber) -> None:
        async with self._lock:
            for name in subscriber.channels:
                entry = self._channels.get(name)
                if entry is None:
                    continue
                entry.subscribers.discard(subscriber)
                if not entry.subscribers:
                    del self._channels[name]
                    await self._send("sunsubscribe", name)

    async def _send(self, command: str, name: str) -> None:
        """Send (un)subscribe on the live connection; without one, the reader's reconnect catches up."""
        if self._pubsub is None:
            return
        try:
            await getattr(self._pubsub, command)(name)
        except (aioredis.RedisError, OSError) as exc:
            logger.warning("stream hub: %s %s failed (%s); the reader reconnects", command, name, exc)

    async def _run(self) -> None:
        failures = 0
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.connect()
                async with self._lock:
                    self._pubsub = pubsub
                    if self._channels:
                        await pubsub.ssubscribe(*self._channels)
                while True:
                    message = await pubsub.get_message(timeout=READ_TIMEOUT_S)
                    if message is not None:
                        failures = 0
                        self._dispatch(message)
            except (aioredis.RedisError, OSError) as exc:
                logger.warning("stream hub: Redis connection lost (%s); reconnecting", exc)
            finally:
                self._pubsub = None
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)])
            failures += 1

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else channel
        entry = self._channels.get(name)
        if entry is None:
            return
        if kind == "smessage":
            seq, _, payload = message["data"].partition(b":")
            item = (name, int(seq), payload)
            for subscriber in tuple(entry.subscribers):
                subscriber.offer(item)
        elif kind == "ssubscribe":
            if entry.confirmed.is_set():  # confirmed again: a reconnect, messages may be missing
                for subscriber in tuple(entry.subscribers):
                    subscriber.offer((name, RESYNC, b""))
            entry.confirmed.set()
