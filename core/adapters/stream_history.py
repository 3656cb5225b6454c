"""Reads of a stream's sequence counter and capped history (written by ``core.adapters.events``).

History entries have the id ``<seq>-0`` and the field ``p`` (the ``StreamEvent``
bytes without seq), so "the events after seq N" is ``XRANGE (N-0 + COUNT …``.
Redis errors become :class:`~core.domain.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis

from core.adapters.redis_client import reply_entries
from core.adapters.redis_keys import RedisKeys
from core.domain.channels import Channel
from core.domain.errors import Unavailable
from core.services.streams import REPLAY_BATCH

T = TypeVar("T")


class StreamHistory:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    def channel_name(self, channel: Channel) -> str:
        """The internal sharded channel of a resolved public channel."""
        return self._keys.stream_channel(channel)

    async def current_seqs(self, channels: Sequence[Channel]) -> list[int | None]:
        """The last seq published on each channel (None when Redis has no counter for it)."""

        async def read() -> list[bytes | None]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    pipe.get(self._keys.stream_sequence(channel))
                return await pipe.execute()

        values = await _retried(read, "cannot read stream sequences")
        return [int(v) if v is not None else None for v in values]

    async def after(self, channel: Channel, seq: int, count: int = REPLAY_BATCH) -> list[tuple[int, bytes]]:
        """Up to ``count`` history entries with a seq greater than ``seq``, oldest first."""
        key = self._keys.stream_history(channel)
        entries = await _retried(
            lambda: self._redis.xrange(key, f"({seq}-0", "+", count=count), "cannot read stream history"
        )
        return [(int(entry_id.split(b"-", 1)[0]), fields[b"p"]) for entry_id, fields in reply_entries(entries)]


async def _retried(read: Callable[[], Awaitable[T]], what: str) -> T:
    """``read()``, once more on a connection error: after a Redis restart the pool's first connection is
    a dead one, and a stream catching up right then should not end for it."""
    for attempt in range(2):
        try:
            return await read()
        except (aioredis.ConnectionError, OSError) as exc:
            if attempt:
                raise Unavailable(f"{what} ({exc}); retry") from None
        except aioredis.RedisError as exc:
            raise Unavailable(f"{what} ({exc}); retry") from None
    raise AssertionError("unreachable")
