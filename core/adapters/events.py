"""Publishing stream events: one sequence number, one history entry and one sharded publish per event.

Every event of a public stream (``candles:…``, ``signals:…``, ``prices:…``)
goes through :class:`EventPublisher`, which runs one Lua script per event on
the stream's shard (all three keys share the pair's hash tag):

1. ``INCR`` the stream's sequence counter: ``seq`` grows by one per stream,
   across every core instance, because it is assigned in Redis;
2. ``XADD`` the event to the stream's capped history (``MAXLEN ~``) under the
   id ``<seq>-0``, so a resume reads exactly the events after a given seq;
3. ``SPUBLISH`` ``<seq>:<payload>`` on the stream's sharded channel.

The payload is the serialized ``StreamEvent`` protobuf without its seq; the
subscriber side adds the seq it received. Events of one call are sent in one
pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from core.adapters.redis_keys import RedisKeys
from core.domain.channels import Channel

HISTORY_MAXLEN = 10_000

_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'p', ARGV[1])
redis.call('SPUBLISH', KEYS[3], seq .. ':' .. ARGV[1])
return seq
"""


@dataclass(frozen=True, slots=True)
class Event:
    channel: Channel  # resolved: its exchange is set
    payload: bytes


class EventPublisher:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, *, history_maxlen: int = HISTORY_MAXLEN) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = history_maxlen
        self._script = redis.register_script(_PUBLISH)

    async def publish(self, events: Sequence[Event]) -> list[int]:
        """Publish ``events`` in order; returns the seq each one got."""
        if not events:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for event in events:
                keys = [
                    self._keys.stream_sequence(event.channel),
                    self._keys.stream_history(event.channel),
                    self._keys.stream_channel(event.channel),
                ]
                await self._script(keys=keys, args=[event.payload, self._maxlen], client=pipe)
            return [int(seq) for seq in await pipe.execute()]
