"""The core's sharded pub/sub, fanned out to every open stream: one connection per Redis node it needs.

:class:`StreamHub` owns raw RESP connections to Redis and the tasks that read
them: one connection on a standalone server, and on a Redis Cluster one per
master that owns the slot of at least one subscribed channel. Nothing else
ever reads those sockets, and commands (``SSUBSCRIBE``/``SUNSUBSCRIBE``) are
written to them synchronously from the event loop, so no two coroutines ever
share a parser or wait on the same stream: the failure mode of driving
redis-py's ``PubSub`` from a reader task and from the subscribing tasks at
once (its retries and health checks reconnect under the reader's feet).
Sharded pub/sub (Redis ≥ 7) is required: the publisher (``SPUBLISH`` in
``core.adapters.events``) needs it already.

Channel subscriptions are reference-counted: the first subscriber of a
channel sends ``SSUBSCRIBE``, the last one leaving sends ``SUNSUBSCRIBE``.
Each :class:`Subscriber` has a bounded queue of ``(channel, seq, payload)``
items; when it is full the subscriber is ended with :class:`StreamFellBehind`
(the RPC edge answers RESOURCE_EXHAUSTED) instead of growing memory. An item
with ``seq == RESYNC`` (0, never a published seq) tells the subscriber that
messages of that channel may have been missed, so it reads the history after
its last delivered seq: the hub sends one whenever a channel's subscription is
confirmed again, which happens after every reconnect and every move to
another node. A connection that stays silent past ``PING_INTERVAL_S`` is
pinged and one silent for ``IDLE_TIMEOUT_S`` is dropped and reopened.

On a cluster a sharded channel lives on its slot's master (it hashes like a
key, hash tag included), so each ``SSUBSCRIBE`` names channels of one slot
(``CROSSSLOT`` otherwise) and goes to that master's connection, found in a
:class:`~common.resp_cluster.SlotMap`. A failed connection, a ``MOVED``
answer, or a ``sunsubscribe`` Redis sends by itself (a slot migrated away)
makes :meth:`StreamHub.run` refresh the slot table, backing off while a
failover is in progress, and move the affected channels to their new master,
where the confirmation brings the ``RESYNC``. See docs/design/streams.md.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import hiredis
from redis.exceptions import RedisError

from common import resp
from common.redis_clients import url_params
from common.redis_mode import RedisMode, detect
from common.resp_cluster import Node, SlotMap, slot_of
from core.domain.errors import HubClosed, StreamFellBehind, Unavailable
from core.services.ports import RESYNC, HubItem

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1_000
SUBSCRIBE_TIMEOUT_S = 5.0
PING_INTERVAL_S = 5.0
IDLE_TIMEOUT_S = 15.0
RECONNECT_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
# Between slot-table refreshes while each brings another change or failure (a failover in progress): a
# CLUSTER SLOTS costs the cluster little, and every refresh skipped is a stream late by as much after the
# promotion (with the reconnect delays above, channels came back 1.4 s after the REST reads did).
REFRESH_DELAYS_S = (0.05, 0.1, 0.25)
STABLE_S = 1.0  # a connection that lived this long starts the reconnect delays over
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


class _Shard:
    """One connection to one node and the channels subscribed (or to subscribe) on it.

    ``unsubscribing`` counts the ``SUNSUBSCRIBE`` confirmations still due on the live connection, so a
    ``sunsubscribe`` the hub did not ask for (Redis 7 sends one for every channel of a slot that moved away)
    is told apart from the answer to its own command.
    """

    __slots__ = ("channels", "node", "params", "task", "unsubscribing", "writer")

    def __init__(self, node: Node | None, params: Mapping[str, Any]) -> None:
        self.node = node  # None: the one server of a standalone Redis
        self.params = params
        self.channels: set[str] = set()
        self.unsubscribing: collections.Counter[str] = collections.Counter()
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def __str__(self) -> str:
        return str(self.node) if self.node is not None else "Redis"

    def send(self, command: str, names: Collection[str]) -> None:
        """Write a command on the live connection; without one, the connection's next start subscribes.

        On a cluster every command names channels of one slot (a sharded channel hashes like a key, and
        channels of two slots in one command are refused with ``CROSSSLOT``); one server takes batches.
        """
        writer = self.writer
        if writer is None or not names:
            return
        if self.node is None:
            listed = list(names)
            groups = [listed[start : start + SUBSCRIBE_BATCH] for start in range(0, len(listed), SUBSCRIBE_BATCH)]
        else:
            by_slot: dict[int, list[str]] = {}
            for name in names:
                by_slot.setdefault(slot_of(name), []).append(name)
            groups = list(by_slot.values())
        if command == "SUNSUBSCRIBE":
            self.unsubscribing.update(names)
        for group in groups:
            # hiredis's stub types the command as a one-element tuple; it packs any length.
            packed: tuple[Any, ...] = (command, *group)
            writer.write(hiredis.pack_command(packed))


class StreamHub:
    """The process's sharded pub/sub: one connection on one server, one per owning master on a cluster.

    ``mode`` is what :func:`common.redis_mode.detect` answered for ``url``; None asks it when :meth:`run`
    starts (retried until the server answers).
    """

    def __init__(
        self,
        url: str,
        *,
        mode: RedisMode | None = None,
        client_name: str = "perseus-stream-hub",
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._url = url
        self._params, self._tls = url_params(url)  # TLS and ACL credentials as every other connection takes them
        self._mode = mode
        self._client_name = client_name
        self._queue_size = queue_size
        self._channels: dict[str, _Entry] = {}
        self._subscribers: set[Subscriber] = set()
        self._reader_task: asyncio.Task[None] | None = None
        self._closed = False
        # one server: one shard holding every channel
        self._server = _Shard(None, self._params)
        # a cluster: the slot table, a shard per master that owns a held channel, the channels not placed
        # yet (new, or lost to a failover or a slot migration), and the wake-up of the task that places them
        self._slots: SlotMap | None = None
        self._shards: dict[Node, _Shard] = {}
        self._placed: dict[str, _Shard] = {}
        self._unplaced: set[str] = set()
        self._dirty = asyncio.Event()
        self._placing = False  # run() is placing channels (the cluster's shard tasks are its children)
        self._crash: BaseException | None = None

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def channel_names(self) -> list[str]:
        """The internal channels some subscriber holds."""
        return list(self._channels)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def connection_count(self) -> int:
        """Live pub/sub connections: one on one server, one per master owning a held channel on a cluster."""
        if self._mode == "cluster":
            return sum(shard.writer is not None for shard in self._shards.values())
        return int(self._server.writer is not None)

    def node_of(self, name: str) -> str | None:
        """Where channel ``name`` is subscribed (``host:port``; ``Redis`` on one server), None if nowhere yet."""
        if self._mode == "cluster":
            shard = self._placed.get(name)
        else:
            shard = self._server if name in self._server.channels else None
        return str(shard) if shard is not None else None

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
        await self._stop_shards()
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
        self._subscribe(new)
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
        self._unsubscribe(gone)

    def release_all(self, subscriber: Subscriber) -> None:
        self.release(subscriber, tuple(subscriber.channels))
        self._subscribers.discard(subscriber)
        subscriber.close()

    # ---- placing channels on connections

    def _subscribe(self, names: list[str]) -> None:
        if not names:
            return
        if self._mode == "standalone":
            self._server.channels.update(names)
            self._server.send("SSUBSCRIBE", names)
        else:  # a cluster, or not known yet: placed once the slot table is
            self._unplaced.update(names)
            self._place()

    def _unsubscribe(self, names: list[str]) -> None:
        if not names:
            return
        if self._mode == "standalone":
            self._server.channels.difference_update(names)
            self._server.send("SUNSUBSCRIBE", names)
            return
        by_shard: dict[_Shard, list[str]] = {}
        for name in names:
            self._unplaced.discard(name)
            shard = self._placed.pop(name, None)
            if shard is not None:
                shard.channels.discard(name)
                by_shard.setdefault(shard, []).append(name)
        for shard, gone in by_shard.items():
            shard.send("SUNSUBSCRIBE", gone)
        self._close_idle()

    def _place(self) -> None:
        """Subscribe every unplaced channel on the shard of its slot's master (a cluster; run() is placing)."""
        slots = self._slots
        if not self._placing or slots is None or not slots.ready or not self._unplaced:
            return
        by_shard: dict[_Shard, list[str]] = {}
        for name in self._unplaced:
            if name not in self._channels:
                continue
            node = slots.owner_of(name)
            shard = self._shards.get(node)
            if shard is None:
                shard = self._shards[node] = _Shard(node, slots.params(node))
                shard.task = asyncio.create_task(self._run_shard(shard), name=f"stream-hub:{node}")
                shard.task.add_done_callback(self._shard_ended)
            shard.channels.add(name)
            self._placed[name] = shard
            by_shard.setdefault(shard, []).append(name)
        self._unplaced.clear()
        for shard, names in by_shard.items():
            shard.send("SSUBSCRIBE", names)

    def _replace(self) -> None:
        """After a refresh of the slot table: channels whose slot has another master now move there."""
        assert self._slots is not None
        owner_of = self._slots.owner_of
        for name, shard in list(self._placed.items()):
            if owner_of(name) != shard.node:
                # No SUNSUBSCRIBE on the old node: it is dead, or it dropped the channel with its slot.
                self._lose(shard, name)
        self._place()
        self._close_idle()

    def _lose(self, shard: _Shard, name: str) -> None:
        """``name`` is no longer subscribed on ``shard``: place it again (after a refresh of the slot table)."""
        shard.channels.discard(name)
        if self._placed.get(name) is shard:
            del self._placed[name]
        if name in self._channels:
            self._unplaced.add(name)
        self._dirty.set()

    def _close_idle(self) -> None:
        """Close the connections to masters that own no held channel any more."""
        for node, shard in list(self._shards.items()):
            if not shard.channels:
                del self._shards[node]
                if shard.task is not None:
                    shard.task.cancel()

    def _shard_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._crash = task.exception()  # run() raises it: the supervisor restarts the hub
            self._dirty.set()

    async def _stop_shards(self) -> None:
        tasks = [shard.task for shard in self._shards.values() if shard.task is not None]
        for shard in self._shards.values():
            self._unplaced.update(shard.channels)
        self._shards.clear()
        self._placed.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the supervised task

    async def run(self) -> None:
        """Read until cancelled, reconnecting as needed: the core runs this under its supervisor (restarted
        after a crash: the channels are kept, subscribed again and resynced).

        On one server this is the reading loop of the one connection. On a cluster it keeps the slot table
        and places channels on the masters' connections (each read by a task of its own, ended with this
        one): at start, and whenever a connection fails, a node answers ``MOVED`` or Redis drops a
        channel whose slot moved, it refreshes the table (backing off while the cluster fails over) and
        moves every channel whose slot has a new master.
        """
        if self._mode is None:
            self._mode = await self._detect()
            if self._mode == "standalone":
                self._server.channels.update(self._channels)
                self._unplaced.clear()
        if self._mode == "standalone":
            await self._run_shard(self._server)
            return
        if self._slots is None:
            self._slots = SlotMap(self._params, tls=self._tls, client_name=self._client_name)
        self._crash = None
        self._unplaced.update(self._channels)
        self._placing = True
        self._dirty.set()
        refreshes = 0
        try:
            while True:
                if not self._dirty.is_set():
                    refreshes = 0
                    await self._dirty.wait()
                self._dirty.clear()
                if self._crash is not None:
                    raise self._crash
                try:
                    await self._slots.refresh()
                except (OSError, TimeoutError, hiredis.HiredisError) as exc:  # ClusterUnavailable included
                    logger.warning("stream hub: no Redis Cluster slot table (%s); retrying", exc)
                    self._dirty.set()
                else:
                    self._replace()
                # at most one refresh a delay, longer while each brings another (a failover in progress)
                await asyncio.sleep(REFRESH_DELAYS_S[min(refreshes, len(REFRESH_DELAYS_S) - 1)])
                refreshes += 1
        finally:
            self._placing = False
            await self._stop_shards()

    async def _detect(self) -> RedisMode:
        """The mode, asked until the server answers. redis-py can swallow a cancellation that arrives while
        it closes its connection, so a cancel requested meanwhile is honoured here (else ``aclose`` waits
        on a hub that went on to read)."""
        failures = 0
        task = asyncio.current_task()
        while True:
            try:
                mode = await detect(self._url)
            except (OSError, TimeoutError, RedisError) as exc:
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError() from exc
                delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                logger.warning("stream hub: Redis does not answer INFO cluster (%s); retrying in %s s", exc, delay)
                failures += 1
                await asyncio.sleep(delay)
                continue
            if task is not None and task.cancelling():
                raise asyncio.CancelledError()
            return mode

    def _trouble(self, shard: _Shard) -> None:
        """A connection failed: on a cluster the slot may have a new master (a failover), so ask."""
        if shard.node is not None:
            self._dirty.set()

    async def _run_shard(self, shard: _Shard) -> None:
        failures = 0
        while True:
            try:
                reader, writer = await resp.open_connection(shard.params, tls=self._tls, client_name=self._client_name)
            except (OSError, TimeoutError, hiredis.HiredisError, ConnectionError) as exc:
                delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                logger.warning("stream hub: cannot connect to %s (%s); retrying in %s s", shard, exc, delay)
                failures += 1
                self._trouble(shard)
                await asyncio.sleep(delay)
                continue
            opened = time.monotonic()
            try:
                shard.writer = writer
                shard.unsubscribing.clear()
                shard.send("SSUBSCRIBE", list(shard.channels))
                await self._read(shard, reader, writer)
            except (OSError, TimeoutError, hiredis.HiredisError, ConnectionError) as exc:
                logger.warning("stream hub: connection to %s lost (%s); reconnecting", shard, exc)
                self._trouble(shard)
            finally:
                shard.writer = None
                writer.close()
            # A connection that ends at once (a cluster node answering CLUSTERDOWN) backs off like a refused one.
            failures = failures + 1 if time.monotonic() - opened < STABLE_S else 0
            await asyncio.sleep(RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)])

    async def _read(self, shard: _Shard, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
                    self._refused(shard, message)
                elif isinstance(message, list):
                    dispatch(shard, message)

    def _refused(self, shard: _Shard, error: hiredis.ReplyError) -> None:
        """An error answer to SSUBSCRIBE: ``MOVED`` names its slot, whose channels go to the new master;
        anything else on a cluster (``CLUSTERDOWN``, ``TRYAGAIN``...) cannot be matched to the command it
        answers, so the connection starts again and subscribes all its channels. One server: logged."""
        words = str(error).split()
        if shard.node is not None and self._slots is not None and len(words) == 3 and words[0] == "MOVED":
            slot = int(words[1])
            host, _, port = words[2].rpartition(":")
            logger.info("stream hub: slot %d moved from %s to %s; subscribing there", slot, shard, words[2])
            self._slots.moved(slot, Node(host or str(shard.params.get("host")), int(port)))
            for name in [name for name in shard.channels if slot_of(name) == slot]:
                self._lose(shard, name)
            return
        if shard.node is None:
            logger.warning("stream hub: Redis error %s", error)
            return
        raise ConnectionError(f"Redis refused a subscription: {error}")

    def _dispatch(self, shard: _Shard, message: list[Any]) -> None:
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
            name = message[1].decode()
            entry = self._channels.get(name)
            if entry is None or name not in shard.channels:  # released, or moved to another master meanwhile
                return
            if entry.confirmed.is_set():  # confirmed again: a reconnect, messages may be missing
                for subscriber in entry.subscribers:
                    subscriber.offer((name, RESYNC, b""))
            entry.confirmed.set()
        elif kind == b"sunsubscribe":
            name = message[1].decode() if message[1] is not None else ""
            if shard.unsubscribing[name] > 0:  # the answer to the hub's own SUNSUBSCRIBE
                shard.unsubscribing[name] -= 1
                if not shard.unsubscribing[name]:
                    del shard.unsubscribing[name]
                return
            if name not in shard.channels:
                return
            # Redis dropped the channel by itself: its slot moved to another master (Redis 7 tells every
            # subscriber so). Subscribing again, where the slot lives now, is confirmed with a RESYNC.
            logger.info("stream hub: %s dropped channel %s (its slot moved); subscribing again", shard, name)
            if shard.node is None:
                shard.send("SSUBSCRIBE", [name])
            else:
                self._lose(shard, name)
