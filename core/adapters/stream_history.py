"""Reads of a stream's sequence counter and capped history (written by ``core.adapters.events``).

History entries have the id ``<seq>-0`` and the field ``p`` (the ``StreamEvent``
bytes without seq), so "the events after seq N" is ``XRANGE (N-0 + COUNT …``.
The reads go through the core's shared :class:`~common.resp.Pipeline` (the
sequences of many channels in one call, each ``GET`` to the master owning its
channel on a Redis Cluster), bounded by ``COMMAND_TIMEOUT_S``.
Redis errors become :class:`~core.domain.errors.Unavailable`.

On-demand streams (``prices:all:{SYMBOL}``, ``prices:all:*``) are published
only while someone listens (:mod:`core.adapters.price_cache`): a subscription
sets the stream's *listened* marker before it reads the stream's seq, and the
core holding it renews the marker every ``LISTENED_RENEW_S`` while any stream
holds the channel. The marker outlives the last listener by up to
``LISTENED_TTL_MS``, so a client that reconnects within it resumes with no
loss. A marker set anew (nobody listened: the events meanwhile were never
published) first raises the stream's seq counter to its time floor, as a
failover does: a resume from before then is told the gap, and a new
subscriber starts after it with none (docs/design/streams.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

from common import resp
from core.adapters.redis_client import REDIS_DOWN_ERRORS, call, first_error
from core.adapters.redis_keys import RedisKeys
from core.domain.channels import Channel
from core.domain.errors import Unavailable
from core.services.streams import REPLAY_BATCH

logger = logging.getLogger(__name__)

LISTENED_TTL_MS = 60_000
LISTENED_RENEW_S = 15.0

# KEYS: the listened marker and the seq counter of one on-demand stream. ARGV: the marker's TTL (ms).
# A marker set anew first raises the counter to the time floor publish_lua uses (events went unpublished).
_LISTEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local current = redis.call('GET', KEYS[2])
  if current then
    local now = redis.call('TIME')
    local floor = (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) * 1000
    if tonumber(current) < floor then
      redis.call('SET', KEYS[2], string.format('%.0f', floor))
    end
  end
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 0
"""


class StreamHistory:
    def __init__(self, pipeline: resp.Pipeline, keys: RedisKeys) -> None:
        self._pipeline = pipeline
        self._keys = keys
        self._listen_sha = pipeline.register_script(_LISTEN)

    def channel_name(self, channel: Channel) -> str:
        """The internal sharded channel of a resolved public channel."""
        return self._keys.stream_channel(channel)

    async def current_seqs(self, channels: Sequence[Channel]) -> list[int | None]:
        """The last seq published on each channel (None when Redis has no counter for it)."""
        if not channels:
            return []
        commands = [("GET", self._keys.stream_sequence(channel)) for channel in channels]
        values = await _retried(commands, self._pipeline, "cannot read stream sequences")
        return [int(v) if v is not None else None for v in values]

    async def listening(self, internal_channels: Collection[str]) -> None:
        """Set (or renew) the listened marker of each on-demand stream among ``internal_channels``."""
        commands: list[resp.Command] = [
            ("EVALSHA", self._listen_sha, 2, *keys, LISTENED_TTL_MS)
            for keys in map(self._keys.listened_keys, internal_channels)
            if keys is not None
        ]
        if commands:
            await _retried(commands, self._pipeline, "cannot mark on-demand streams listened")

    async def keep_listening(self, held: Callable[[], Collection[str]]) -> None:
        """Until cancelled: renew the markers of the on-demand streams among the channels ``held()`` names."""
        while True:
            await asyncio.sleep(LISTENED_RENEW_S)
            try:
                await self.listening(held())
            except Unavailable as exc:
                logger.warning("on-demand stream markers not renewed: %s", exc)

    async def after(self, channel: Channel, seq: int, count: int = REPLAY_BATCH) -> list[tuple[int, bytes]]:
        """Up to ``count`` history entries with a seq greater than ``seq``, oldest first."""
        command = ("XRANGE", self._keys.stream_history(channel), f"({seq}-0", "+", "COUNT", count)
        (entries,) = await _retried([command], self._pipeline, "cannot read stream history")
        return [(int(entry_id.split(b"-", 1)[0]), _field(fields, b"p")) for entry_id, fields in entries]


def _field(fields: list[bytes], name: bytes) -> bytes:
    """One field of an entry's ``[field, value, …]``."""
    return fields[fields.index(name) + 1]


async def _retried(commands: list[resp.Command], pipeline: resp.Pipeline, what: str) -> list[Any]:
    """The replies, once more on a connection error: after a Redis restart (or a failover) the first call may
    meet the old connection, and a stream catching up right then should not end for it. A timeout is not
    tried again (the caller has waited long enough), nor is an error reply."""
    for attempt in range(2):
        try:
            replies = await call(pipeline, *commands)
        except TimeoutError:
            raise Unavailable(f"{what} (Redis did not answer); retry") from None
        except REDIS_DOWN_ERRORS as exc:
            if attempt:
                raise Unavailable(f"{what} ({exc}); retry") from None
            continue
        error = first_error(replies)
        if error is not None:
            raise Unavailable(f"{what} ({error}); retry")
        return replies
    raise AssertionError("unreachable")
