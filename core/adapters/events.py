"""Publishing stream events: one sequence number, one history entry and one sharded publish per event.

Every event of a public stream (``candles:…``, ``signals:…``, ``indicators:…``, ``prices:…``)
goes through :class:`EventPublisher`, which runs one Lua script per event on
the stream's shard (all three keys share the pair's hash tag):

1. ``INCR`` the stream's sequence counter: ``seq`` grows by one per stream,
   across every core instance, because it is assigned in Redis (``INCRBY`` for the
   events of one stream in one call). A missing counter (a new stream, or a Redis
   that lost its data) starts at the current time in milliseconds times 1000, so seqs
   never go back after a Redis restart and a resume across one is reported as a
   gap instead of being refused as "from the future". A publish flagged *jump*
   raises the counter to that floor first (see :class:`SeqGuard`);
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
from typing import Any

from common import resp
from core.adapters.redis_client import call_or_unavailable
from core.adapters.redis_keys import RedisKeys
from core.codec.events import (
    candle_channel,
    candle_event,
    indicator_channel,
    indicator_event,
    signal_channel,
    signal_event,
)
from core.domain.candles import Candle
from core.domain.channels import Channel
from core.services.indicators import AlertRecord, IndicatorReading

HISTORY_MAXLEN = 10_000


def publish_lua(first_key: int, maxlen_arg: int, jump_arg: int, first_payload_arg: int) -> str:
    """Lua that publishes ARGV[first_payload_arg..] on the stream whose sequence, history and channel
    are KEYS[first_key], KEYS[first_key + 1], KEYS[first_key + 2]; it returns the last seq.

    ARGV[jump_arg] ``1`` raises the counter to the time-based floor (now in ms times 1000, where a missing
    counter starts) before counting, so the seqs continue above any this stream was given before, on
    whichever node: valid while a stream averages fewer than 1,000 events per millisecond."""
    seq, history, channel = (f"KEYS[{first_key + i}]" for i in range(3))
    return f"""
local count = #ARGV - {first_payload_arg - 1}
local current = redis.call('GET', {seq})
if not current or ARGV[{jump_arg}] == '1' then
  local now = redis.call('TIME')
  local floor = (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) * 1000
  if not current or tonumber(current) < floor then
    redis.call('SET', {seq}, string.format('%.0f', floor))
  end
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


# KEYS: sequence, history, channel of one stream. ARGV: history maxlen, jump (0/1), then the payloads in order.
_PUBLISH = publish_lua(first_key=1, maxlen_arg=1, jump_arg=2, first_payload_arg=3)
_UNKNOWN = object()  # placement of a stream whose last publish failed: it may have run on a master now gone


class SeqGuard:
    """Which streams' next publish must jump their seq counter, so a failover never reuses a seq.

    Seq counters replicate asynchronously: a replica promoted after its master died may lack the last
    increments, and the next events would get seqs subscribers already had, dropped as duplicates (a silent
    loss). A stream's publish jumps (see :func:`publish_lua`) when

    - the node serving its slot (:meth:`~common.resp.Pipeline.placement`) is not the one of its last
      successful publish, or its last publish failed (it may have run on the old master): the first publish
      after a failover or a resharding, and after Redis was unreachable (whose events subscribers may have
      missed: now they are told, with ``resume_gap``);
    - its slot moved *during* the call, which the pipeline followed (a failover within the pipeline's
      retries): the call is sent again with the jump (:meth:`rerouted`), its events published twice, the
      second time above every earlier seq.

    A stream this publisher has not published before does not jump (a core's restart is no reason). On one
    server the placement is a constant, so only a failed publish jumps. One entry per stream this core
    publishes, so the dict stays as big as the set of streams.
    """

    __slots__ = ("_placed", "_placement")

    def __init__(self, pipeline: resp.Pipeline) -> None:
        self._placement = pipeline.placement
        self._placed: dict[str, object] = {}

    def before(self, seq_keys: Sequence[str]) -> tuple[list[object], list[int]]:
        """The placement of each stream now and its jump flag (``1`` or ``0``)."""
        placement, placed = self._placement, self._placed
        where = [placement(key) for key in seq_keys]
        flags = []
        for key, node in zip(seq_keys, where, strict=True):
            last = placed.get(key, node)
            flags.append(0 if last is node else 1)
        return where, flags

    def failed(self, seq_keys: Sequence[str]) -> None:
        for key in seq_keys:
            self._placed[key] = _UNKNOWN

    def rerouted(self, seq_keys: Sequence[str], where: Sequence[object], flags: Sequence[int]) -> list[int]:
        """After a successful call: record where each stream is now; the indices of the streams that were sent
        without the jump and are served elsewhere than when the call began (resend them with it)."""
        placement, placed = self._placement, self._placed
        again = []
        for i, key in enumerate(seq_keys):
            node = placement(key)
            placed[key] = node
            if node is not where[i] and not flags[i] and where[i] is not None:
                again.append(i)
        return again


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
        self._guard = SeqGuard(pipeline)

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

    async def publish_indicators(self, readings: Sequence[IndicatorReading]) -> None:
        """``indicator_update`` events of ready MACD-V readings on their ``indicators:{exchange}:{SYMBOL}:{TF}``
        streams."""
        now = self._clock_ms()
        events = []
        for reading in readings:
            channel = indicator_channel(reading)
            events.append(Event(channel, indicator_event(reading, now_ms=now, channel=channel)))
        await self.publish(events)

    async def publish(self, events: Sequence[Event]) -> dict[Channel, int]:
        """Publish ``events`` (in order within each stream, one script call per stream);
        returns the last seq each stream got."""
        by_channel: dict[Channel, list[bytes]] = {}
        for event in events:
            by_channel.setdefault(event.channel, []).append(event.payload)
        if not by_channel:
            return {}
        stream_keys = [self._keys.stream_keys(channel) for channel in by_channel]
        seq_keys = [keys[0] for keys in stream_keys]
        where, flags = self._guard.before(seq_keys)
        commands = [
            ("EVALSHA", self._sha, 3, *keys, self._maxlen, jump, *payloads)
            for keys, jump, payloads in zip(stream_keys, flags, by_channel.values(), strict=True)
        ]
        try:
            last = await call_or_unavailable(self._pipeline, commands, "events not published")
        except BaseException:
            self._guard.failed(seq_keys)
            raise
        if again := self._guard.rerouted(seq_keys, where, flags):
            await self._jump_again(commands, seq_keys, again, last)
        return {channel: int(seq) for channel, seq in zip(by_channel, last, strict=True)}

    async def _jump_again(
        self, commands: list[resp.Command], seq_keys: list[str], again: list[int], last: list[Any]
    ) -> None:
        """Publish again, with the jump, the streams whose slot moved while their call was answered."""
        resent = [(*commands[i][:7], 1, *commands[i][8:]) for i in again]
        try:
            replies = await call_or_unavailable(self._pipeline, resent, "events not published")
        except BaseException:
            self._guard.failed([seq_keys[i] for i in again])
            raise
        for i, seq in zip(again, replies, strict=True):
            last[i] = seq
