"""In-memory implementations of the core's stream ports (``core.services.ports.Hub``, the streams' ``History``):
test doubles of our own ports, for the unit tests of ``core.services.streams`` and ``core.services.hot_candles``.
The real hub and history (Redis) keep their integration tests (tests/integration/test_streams.py, test_hot_candles.py).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from core.domain.channels import Channel, explicit_name
from core.domain.errors import HubClosed, StreamFellBehind, Unavailable
from core.services.ports import RESYNC


class MemorySubscription:
    """A bounded queue like the hub's: overflowing it ends the subscription with StreamFellBehind."""

    def __init__(self, queue_size: int) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._size = queue_size
        self._wake = asyncio.Event()
        self.overflowed = self.closed = False

    @property
    def ended(self) -> bool:
        return self.overflowed or self.closed

    def offer(self, item: tuple[str, int, bytes]) -> None:
        if self.ended:
            return
        if len(self._items) >= self._size:
            self.overflowed = True
            self._items.clear()
        else:
            self._items.append(item)
        self._wake.set()

    def put_control(self, item: Any) -> None:
        self._items.append(item)
        self._wake.set()

    def get_nowait(self) -> Any:
        if self.overflowed:
            raise StreamFellBehind()
        return self._items.popleft() if self._items else None

    async def get(self) -> Any:
        while True:
            if self.overflowed:
                raise StreamFellBehind()
            if self._items:
                return self._items.popleft()
            if self.closed:
                raise HubClosed()
            self._wake.clear()
            await self._wake.wait()


class MemoryHub:
    """Reference-counted channels per subscription; ``down`` makes ``acquire`` raise Unavailable."""

    def __init__(self, queue_size: int = 1_000) -> None:
        self.holders: dict[str, set[MemorySubscription]] = collections.defaultdict(set)
        self.subscriptions: list[MemorySubscription] = []
        self.down = False
        self._queue_size = queue_size

    def subscriber(self, queue_size: int | None = None) -> MemorySubscription:
        subscription = MemorySubscription(queue_size or self._queue_size)
        self.subscriptions.append(subscription)
        return subscription

    async def acquire(self, subscriber: MemorySubscription, names: Iterable[str]) -> None:
        if self.down:
            raise Unavailable("Redis did not confirm the subscription; retry")
        for name in names:
            self.holders[name].add(subscriber)

    def release(self, subscriber: MemorySubscription, names: Iterable[str]) -> None:
        for name in names:
            self.holders[name].discard(subscriber)

    def release_all(self, subscriber: MemorySubscription) -> None:
        for holders in self.holders.values():
            holders.discard(subscriber)

    def held(self, name: str) -> int:
        return len(self.holders[name])

    def deliver(self, name: str, seq: int, payload: bytes = b"") -> None:
        """A message of channel ``name`` as Redis would push it (``seq == RESYNC``: a resubscription)."""
        for subscriber in list(self.holders[name]):
            subscriber.offer((name, seq, payload))

    def resync(self) -> None:
        for name in self.holders:
            self.deliver(name, RESYNC)


def internal_name(channel: Channel) -> str:
    return f"internal:{explicit_name(channel)}"


class MemoryHistory:
    """Each channel's sequence counter and history, as the publisher leaves them; ``down``: Unavailable."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[int, bytes]]] = collections.defaultdict(list)
        self.listened: set[str] = set()
        self.down = False

    def channel_name(self, channel: Channel) -> str:
        return internal_name(channel)

    def publish(self, channel: Channel, seq: int, payload: bytes) -> None:
        self.events[internal_name(channel)].append((seq, payload))

    async def current_seqs(self, channels: Sequence[Channel]) -> list[int | None]:
        if self.down:
            raise Unavailable("cannot read stream sequences; retry")
        return [max((s for s, _ in self.events[internal_name(c)]), default=None) for c in channels]

    async def listening(self, internal_channels: Collection[str]) -> None:
        if self.down:
            raise Unavailable("cannot mark on-demand streams listened; retry")
        self.listened.update(internal_channels)

    async def after(self, channel: Channel, seq: int, count: int) -> list[tuple[int, bytes]]:
        if self.down:
            raise Unavailable("cannot read stream history; retry")
        return [(s, p) for s, p in self.events[internal_name(channel)] if s > seq][:count]
