"""Publishing stream events: one sequence number, one history entry and one sharded publish per event.

Every event of a public stream (``candles:…``, ``signals:…``, ``prices:…``)
goes through :class:`EventPublisher`, which runs one Lua script per event on
the stream's shard (all three keys share the pair's hash tag):

1. ``INCR`` the stream's sequence counter: ``seq`` grows by one per stream,
   across every core instance, because it is assigned in Redis (``INCRBY`` for the
   events of one stream in one call). A missing counter (a new stream, or a Redis
   that lost its data) starts at the current time in milliseconds times 1000, so seqs
   never go back after a Redis restart and a resume across one is reported as a
   gap instead of being refused as "from the future";
2. ``XADD`` the event to the stream's capped history (``MAXLEN ~``) under the
   id ``<seq>-0``, so a resume reads exactly the events after a given seq;
3. ``SPUBLISH`` ``<seq>:<payload>`` on the stream's sharded channel.

The payload is the serialized ``StreamEvent`` protobuf without its seq; the
subscriber side adds the seq it received. Events of one call are sent in one
call of the core's shared :class:`~common.resp.Pipeline`, with one script call
(``EVALSHA``) per stream: on a Redis Cluster each goes to the master owning its
stream's slot, so the streams of one call need not share one.

The services hand over domain records (:meth:`EventPublisher.publish_candles`,
:meth:`EventPublisher.publish_signals`) and never see an event's bytes: the
encoding is :mod:`core.codec.events`, stamped with this publisher's clock.
Redis errors (down, frozen past ``COMMAND_TIMEOUT_S``, an error reply) leave as
``StorageUnavailable("redis")``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common import resp
from core.adapters.redis_client import call_or_unavailable
from core.adapters.redis_keys import RedisKeys
from core.codec.events import candle_channel, candle_event, signal_channel, signal_event
from core.domain.candles import Candle
from core.domain.channels import Channel
from core.services.indicators import AlertRecord

HISTORY_MAXLEN = 10_000


def publish_lua(first_key: int, maxlen_arg: int, first_payload_arg: int) -> str:
    """Lua that publishes ARGV[first_payload_arg..] on the stream whose sequence, history and channel
    are KEYS[first_key], KEYS[first_key + 1], KEYS[first_key + 2]; it returns the last seq."""
    seq, history, channel = (f"KEYS[{first_key + i}]" for i in range(3))
    return f"""
local count = #ARGV - {first_payload_arg - 1}
if redis.call('EXISTS', {seq}) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', {seq}, (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) * 1000)
end
local seq = redis.call('INCRBY', {seq}, count) - count
for i = {first_payload_arg}, #ARGV do
  seq = seq + 1
  local id = string.format('%.0f', seq)  -- seqs pass 2^31: never let Lua print one as 1.7e+15
  redis.call('XADD', {history}, 'MAXLEN', '~', ARGV[{maxlen_arg}], id .. '-0', 'p', ARGV[i])
  redis.call('SPUBLISH', {channel}, id .. ':' .. ARGV[i])
end
return seq
"""


# KEYS: sequence, history, channel of one stream. ARGV: history maxlen, then the payloads in order.
_PUBLISH = publish_lua(first_key=1, maxlen_arg=1, first_payload_arg=2)


@dataclass(frozen=True, slots=True)
class Event:
    channel: Channel  # resolved: its exchange is set
    payload: bytes


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class EventPublisher:
    def __init__(
        self,
        pipeline: resp.Pipeline,
        keys: RedisKeys,
        *,
        history_maxlen: int = HISTORY_MAXLEN,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._pipeline = pipeline
        self._keys = keys
        self._maxlen = history_maxlen
        self._clock_ms = clock_ms  # an event's publish_time
        self._sha = pipeline.register_script(_PUBLISH)

    async def publish_candles(self, exchange_id: int, candles: Sequence[Candle]) -> None:
        """``candle_close`` events of closed candles on their ``candles:{exchange}:{SYMBOL}:{TF}`` streams."""
        now = self._clock_ms()
        await self.publish(
            [Event(candle_channel(c), candle_event(c, exchange_id=exchange_id, now_ms=now)) for c in candles]
        )

    async def publish_signals(self, records: Sequence[AlertRecord]) -> None:
        """``trade_signal`` events of stored alerts on their ``signals:{exchange}:{SYMBOL}:{TF}`` streams."""
        now = self._clock_ms()
        await self.publish([Event(signal_channel(r), signal_event(r, now_ms=now)) for r in records])

    async def publish(self, events: Sequence[Event]) -> dict[Channel, int]:
        """Publish ``events`` (in order within each stream, one script call per stream);
        returns the last seq each stream got."""
        by_channel: dict[Channel, list[bytes]] = {}
        for event in events:
            by_channel.setdefault(event.channel, []).append(event.payload)
        if not by_channel:
            return {}
        commands = [
            ("EVALSHA", self._sha, 3, *self._keys.stream_keys(channel), self._maxlen, *payloads)
            for channel, payloads in by_channel.items()
        ]
        last = await call_or_unavailable(self._pipeline, commands, "events not published")
        return {channel: int(seq) for channel, seq in zip(by_channel, last, strict=True)}
