"""Ports that more than one service needs; each service declares the rest of what it needs beside itself.

The services import no driver and no adapter: they name what they use as
``Protocol``\\ s here or in their own module, the adapters (``core.adapters``)
implement them, and ``core.app`` / ``core.exchange_mode`` wire one to the
other. An adapter raises domain errors (``core.domain.errors``) in place of
driver errors, so a service catches those only; unit tests drive a service
with small in-memory implementations of its ports (``tests/unit``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

# A write that joins a transaction (a writer-fenced one): opaque to the services, which only hand it from
# ``Fenced`` to the store that writes (``conn=``). None: no fence, the store commits on its own.
Connection = Any
Fenced = Callable[[], AbstractAsyncContextManager[Connection]]

# The seq of a hub item that is no event: messages of its channel may have been missed (a reconnect), so a
# reader fills in from the history. Never a published seq (those start far above it).
RESYNC = 0
HubItem = tuple[str, int, bytes]  # internal channel, seq, StreamEvent bytes without seq


class Subscription(Protocol):
    """One reader of the hub: a bounded queue of :data:`HubItem`\\ s of the channels it holds, and its own
    control items (:meth:`put_control`) in the same order. ``get`` raises ``StreamFellBehind`` once the queue
    overflowed and ``HubClosed`` when the hub stops (both domain errors)."""

    @property
    def ended(self) -> bool: ...

    async def get(self) -> Any: ...

    def get_nowait(self) -> Any: ...

    def put_control(self, item: Any) -> None: ...


class Hub(Protocol):
    """The process's one pub/sub fan-out of internal channels (``core.adapters.stream_hub``)."""

    def subscriber(self, queue_size: int | None = None) -> Subscription: ...

    async def acquire(self, subscriber: Any, names: Iterable[str]) -> None:
        """Hold ``names`` for ``subscriber`` once the subscription is confirmed; raises ``Unavailable``."""
        ...

    def release(self, subscriber: Any, names: Iterable[str]) -> None: ...

    def release_all(self, subscriber: Any) -> None: ...
