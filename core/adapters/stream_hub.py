"""One sharded pub/sub connection per core process, fanned out to every open stream.

:class:`StreamHub` owns one raw RESP connection to Redis and the one task that
reads it. Nothing else ever reads that socket, and commands
(``SSUBSCRIBE``/``SUNSUBSCRIBE``) are written to it synchronously from the
event loop, so no two coroutines ever share a parser or wait on the same
stream: the failure mode of driving redis-py's ``PubSub`` from a reader task
and from the subscribing tasks at once (its retries and health checks reconnect
under the reader's feet). Sharded pub/sub (Redis ≥ 7) is required: the
publisher (``SPUBLISH`` in ``core.adapters.events``) needs it already.

Channel subscriptions are reference-counted: the first subscriber of a
channel sends ``SSUBSCRIBE``, the last one leaving sends ``SUNSUBSCRIBE``.
Each :class:`Subscriber` has a bounded queue of ``(channel, seq, payload)``
items; when it is full the subscriber is ended with :class:`StreamFellBehind`
(the RPC edge answers RESOURCE_EXHAUSTED) instead of growing memory. An item
with ``seq == RESYNC`` (0, never a published seq) tells the subscriber that
messages of that channel may have been missed, so it reads the history after
its last delivered seq: the hub sends one whenever a channel's subscription is
confirmed again, which happens after every reconnect. A connection that stays
silent past ``PING_INTERVAL_S`` is pinged and one silent for
``IDLE_TIMEOUT_S`` is dropped and reopened.

On Redis Cluster a sharded channel lives on its slot's node; this hub holds
one connection, which is right for one node (or a proxy). A cluster-aware hub
keeps one such connection per node and routes each channel by its slot.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

from common import resp
from core.domain.errors import HubClosed, StreamFellBehind, Unavailable
from core.services.ports import RESYNC, HubItem

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1_000
SUBSCRIBE_TIMEOUT_S = 5.0
PING_INTERVAL_S = 5.0
IDLE_TIMEOUT_S = 15.0
RECONNECT_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
READ_BYTES = 256 * 1024
SUBSCRIBE_BATCH = 500

Item = HubItem


class Subscriber:
    """One stream's view of the hub: a bounded queue of items of the channels it holds.

    ``control`` items (anything the stream's own request reader puts in with
    :meth:`put_control`) travel in the same queue, outside its bound, so a
    stream sees its requests and its events in one order.
    """

    __slots__ = ("_closed", "_items", "_overflowed", "_size", "_waiter", "channels")

    def __init__(self, queue_size: int) -> None:
        self.channels: set[str] = set()
        self._items: collections.deque[Any] = collections.deque()
        self._size = queue_size
        self._waiter: asyncio.Future[None] | None = None
        self._overflowed = False
        self._closed = False

    @property
    def ended(self) -> bool:
        return self._overflowed or self._closed

    def offer(self, item: Item) -> None:
        if self.ended:
            return
        if len(self._items) >= self._size:
            self._overflowed = True
            self._items.clear()
        else:
            self._items.append(item)
        self._wake()

    def put_control(self, item: Any) -> None:
        self._items.append(item)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Any:
        """The next item if one is queued, else None; raises StreamFellBehind once the queue overflowed."""
        if self._overflowed:
            raise StreamFellBehind()
        return self._items.popleft() if self._items else None

    async def get(self) -> Any:
        """The next item; raises StreamFellBehind or HubClosed when the stream must end."""
        while True:
            if self._overflowed:
                raise StreamFellBehind()
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise HubClosed()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class _Entry:
    __slots__ = ("confirmed", "subscribers")

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.confirmed = asyncio.Event()


class StreamHub:
    def __init__(self, url: str, *, client_name: str = "perseus-stream-hub", queue_size: int = QUEUE_SIZE) -> None:
        self._params = parse_url(url)
        self._client_name = client_name
        self._queue_size = queue_size
        self._channels: dict[str, _Entry] = {}
        self._subscribers: set[Subscriber] = set()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def start(self) -> None:
        """Read in a task of the hub's own (for owners without a supervisor: tools and tests)."""
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(self.run(), name="stream-hub")

    async def aclose(self) -> None:
        """Stop reading and end every subscriber with HubClosed (UNAVAILABLE, retryable)."""
        self._closed = True
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for subscriber in self._subscribers:
            subscriber.close()

    def subscriber(self, queue_size: int | None = None) -> Subscriber:
        """A new subscriber holding no channel yet; give it back with :meth:`release_all`."""
        if self._closed:
            raise HubClosed()
        subscriber = Subscriber(queue_size or self._queue_size)
        self._subscribers.add(subscriber)
        return subscriber

    async def acquire(self, subscriber: Subscriber, names: Iterable[str]) -> None:
        """Add ``names`` to ``subscriber``; returns once Redis confirmed each (Unavailable if it does not)."""
        new: list[str] = []
        waits: list[asyncio.Event] = []
        for name in names:
            if name in subscriber.channels:
                continue
            entry = self._channels.get(name)
            if entry is None:
                entry = self._channels[name] = _Entry()
                new.append(name)
            entry.subscribers.add(subscriber)
            subscriber.channels.add(name)
            waits.append(entry.confirmed)
        self._send("SSUBSCRIBE", new)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                for event in waits:
                    await event.wait()
        except TimeoutError:
            raise Unavailable("Redis did not confirm the subscription; retry") from None

    def release(self, subscriber: Subscriber, names: Iterable[str]) -> None:
        gone: list[str] = []
        for name in names:
            if name not in subscriber.channels:
                continue
            subscriber.channels.discard(name)
            entry = self._channels.get(name)
            if entry is None:
                continue
            entry.subscribers.discard(subscriber)
            if not entry.subscribers:
                del self._channels[name]
                gone.append(name)
        self._send("SUNSUBSCRIBE", gone)

    def release_all(self, subscriber: Subscriber) -> None:
        self.release(subscriber, tuple(subscriber.channels))
        self._subscribers.discard(subscriber)
        subscriber.close()

    def _send(self, command: str, names: list[str]) -> None:
        """Write a command on the live connection; without one, the reader's reconnect catches up."""
        writer = self._writer
        if writer is None or not names:
            return
        for start in range(0, len(names), SUBSCRIBE_BATCH):
            # hiredis's stub types the command as a one-element tuple; it packs any length.
            batch: tuple[Any, ...] = (command, *names[start : start + SUBSCRIBE_BATCH])
            writer.write(hiredis.pack_command(batch))

    async def run(self) -> None:
        """Read the connection until cancelled, reconnecting as needed: the core runs this under its
        supervisor (restarted after a crash: the channels are kept, subscribed again and resynced)."""
        failures = 0
        while True:
            try:
                reader, writer = await self._connect()
            except (OSError, TimeoutError, hiredis.HiredisError, ConnectionError) as exc:
                delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                logger.warning("stream hub: cannot connect to Redis (%s); retrying in %s s", exc, delay)
                failures += 1
                await asyncio.sleep(delay)
                continue
            try:
                self._writer = writer
                self._send("SSUBSCRIBE", list(self._channels))
                failures = 0
                await self._read(reader, writer)
            except (OSError, TimeoutError, hiredis.HiredisError, ConnectionError) as exc:
                logger.warning("stream hub: Redis connection lost (%s); reconnecting", exc)
            finally:
                self._writer = None
                writer.close()
            await asyncio.sleep(RECONNECT_DELAYS_S[0])

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tls = self._params.get("connection_class") is SSLConnection
        return await resp.open_connection(self._params, tls=tls, client_name=self._client_name)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        gets = parser.gets
        dispatch = self._dispatch
        pinged = False
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT_S if pinged else PING_INTERVAL_S):
                    data = await reader.read(READ_BYTES)
            except TimeoutError:
                if pinged:
                    raise ConnectionError(f"no answer from Redis for {IDLE_TIMEOUT_S + PING_INTERVAL_S} s") from None
                writer.write(b"*1\r\n$4\r\nPING\r\n")  # in subscribed mode the answer is ["pong", ""]
                pinged = True
                continue
            if not data:
                raise ConnectionError("Redis closed the connection")
            pinged = False
            parser.feed(data)
            while (message := gets()) is not False:
                if isinstance(message, hiredis.ReplyError):
                    logger.warning("stream hub: Redis error %s", message)
                elif isinstance(message, list):
                    dispatch(message)

    def _dispatch(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == b"smessage":
            name = message[1].decode()
            entry = self._channels.get(name)
            if entry is None:
                return
            seq, _, payload = message[2].partition(b":")
            item = (name, int(seq), payload)
            for subscriber in entry.subscribers:
                subscriber.offer(item)
        elif kind == b"ssubscribe":
            entry = self._channels.get(message[1].decode())
            if entry is None:
                return
            if entry.confirmed.is_set():  # confirmed again: a reconnect, messages may be missing
                for subscriber in entry.subscribers:
                    subscriber.offer((message[1].decode(), RESYNC, b""))
            entry.confirmed.set()
