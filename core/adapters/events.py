"""Publishing stream events: one sequence number, one history entry and one sharded publish per event.

Every event of a public stream (``candles:…``, ``signals:…``, ``indicators:…``, ``prices:…``)
goes through :class:`EventPublisher`, which runs one Lua script per (exchange, symbol) on
the pair's shard: the three keys of each stream share the pair's hash tag, so every stream of
one pair (its six timeframes' ``indicators:…``, say) is served by one node and one script call
publishes them all, stream after stream. For each stream:

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
(``EVALSHA``) per pair: on a Redis Cluster each goes to the master owning the
pair's slot, so the pairs of one call need not share one. (One call per stream
cost Redis about 12 µs of script overhead each: a close wave's 6,000
``indicator_update`` events were most of Redis's CPU; ``docs/design/indicators.md``.)

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
from itertools import accumulate
from typing import Any, NamedTuple

from common import resp
from core.adapters.redis_client import call_or_unavailable
from core.adapters.redis_keys import RedisKeys
from core.codec.events import (
    IndicatorEvents,
    candle_channel,
    candle_event,
    indicator_channel,
    signal_channel,
    signal_event,
)
from core.domain.candles import Candle
from core.domain.channels import Channel
from core.domain.timeframes import Timeframe
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


# KEYS: sequence, history, channel of each stream in turn (every key of one slot: the streams of one pair).
# ARGV: history maxlen, then for each stream its jump flag (0/1), its event count and its payloads in order.
# Returns the last seq of each stream. Each stream gets the seqs publish_lua would give it, with one call
# fewer: INCRBY first, and a counter it found missing (INCRBY started it at 0; a counter starts at the time
# floor, so never counts from 0) or a jump is then raised to the floor.
_PUBLISH_STREAMS = """
local out = {}
local a = 2
for k = 1, #KEYS, 3 do
  local seq_key, history, channel = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local jump, count = ARGV[a], tonumber(ARGV[a + 1])
  local first = a + 2
  a = first + count
  local seq = redis.call('INCRBY', seq_key, count)
  if seq == count or jump == '1' then
    local now = redis.call('TIME')
    local floor = (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) * 1000
    if seq - count < floor then
      seq = floor + count
      redis.call('SET', seq_key, string.format('%.0f', seq))
    end
  end
  seq = seq - count
  for i = first, a - 1 do
    seq = seq + 1
    local id = string.format('%.0f', seq)  -- seqs pass 2^31: never let Lua print one as 1.7e+15
    redis.call('XADD', history, 'MAXLEN', '~', ARGV[1], id .. '-0', 'p', ARGV[i])
    redis.call('SPUBLISH', channel, id .. ':' .. ARGV[i])
  end
  out[#out + 1] = seq
end
return out
"""


class StreamKeys(NamedTuple):
    """A stream's sequence, history and channel keys (the publish script's order) and its pair's hash tag."""

    sequence: str
    history: str
    channel: str
    tag: str


class _Batch:
    """A call's streams and their payloads: the payloads of stream ``i`` are ``counts[i]`` consecutive ones in
    ``payloads``, in the order they are published. Flat lists, not a list per stream: a close wave sends 6,000
    streams, and every object alive during the wave counts towards a garbage collection."""

    __slots__ = ("counts", "keys", "payloads")

    def __init__(self) -> None:
        self.keys: list[StreamKeys] = []
        self.counts: list[int] = []
        self.payloads: list[bytes] = []

    def starts(self) -> list[int]:
        """Where each stream's payloads begin in ``payloads``."""
        return [0, *accumulate(self.counts[:-1])]

    def subset(self, streams: Sequence[int]) -> _Batch:
        starts, out = self.starts(), _Batch()
        for i in streams:
            out.keys.append(self.keys[i])
            out.counts.append(self.counts[i])
            out.payloads += self.payloads[starts[i] : starts[i] + self.counts[i]]
        return out


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
        self._sha = pipeline.register_script(_PUBLISH_STREAMS)
        self._guard = SeqGuard(pipeline)
        # Key names per stream, and per indicator series, built once (as big as the set of streams published,
        # like the guard's dict): a wave's 6,000 indicator events no longer format 18,000 names each time.
        self._stream_keys: dict[Channel, StreamKeys] = {}
        self._indicator_streams: dict[tuple[str, str, Timeframe], StreamKeys] = {}
        self._indicator_events = IndicatorEvents()

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
        payloads = self._indicator_events.encode(readings, now_ms=self._clock_ms())
        batch = _Batch()
        streams = self._indicator_streams
        current: StreamKeys | None = None
        for reading in readings:  # the service sends a series' readings together: one entry per run of them
            keys = streams.get((reading.exchange, reading.symbol, reading.timeframe))
            if keys is None:
                keys = streams[reading.exchange, reading.symbol, reading.timeframe] = self._keys_of(
                    indicator_channel(reading)
                )
            if keys is current:
                batch.counts[-1] += 1
            else:  # (a stream met again after others gets another entry: the script takes them in turn)
                batch.keys.append(keys)
                batch.counts.append(1)
                current = keys
        batch.payloads = payloads
        await self._publish_streams(batch)

    async def publish(self, events: Sequence[Event]) -> dict[Channel, int]:
        """Publish ``events`` (in order within each stream, one script call per pair);
        returns the last seq each stream got."""
        by_channel: dict[Channel, list[bytes]] = {}
        for event in events:
            payloads = by_channel.get(event.channel)
            if payloads is None:
                by_channel[event.channel] = [event.payload]
            else:
                payloads.append(event.payload)
        if not by_channel:
            return {}
        batch = _Batch()
        for channel, payloads in by_channel.items():
            batch.keys.append(self._keys_of(channel))
            batch.counts.append(len(payloads))
            batch.payloads += payloads
        last = await self._publish_streams(batch)
        return dict(zip(by_channel, last, strict=True))

    def _keys_of(self, channel: Channel) -> StreamKeys:
        keys = self._stream_keys.get(channel)
        if keys is None:
            assert channel.exchange is not None  # stream_keys refuses an unresolved channel first
            sequence, history, name = self._keys.stream_keys(channel)
            keys = StreamKeys(sequence, history, name, self._keys.pair_tag(channel.exchange, channel.symbol))
            self._stream_keys[channel] = keys
        return keys

    async def _publish_streams(self, batch: _Batch) -> list[int]:
        """Publish each stream's payloads (one script call per pair); the last seq of each stream, in order."""
        if not batch.keys:
            return []
        seq_keys = [keys.sequence for keys in batch.keys]
        where, flags = self._guard.before(seq_keys)
        last = await self._send(batch, flags, seq_keys)
        if again := self._guard.rerouted(seq_keys, where, flags):
            # Publish again, with the jump, the streams whose slot moved while their call was answered.
            resent = await self._send(batch.subset(again), [1] * len(again), [seq_keys[i] for i in again])
            for i, seq in zip(again, resent, strict=True):
                last[i] = seq
        return last

    async def _send(self, batch: _Batch, flags: Sequence[int], seq_keys: list[str]) -> list[int]:
        by_tag: dict[str, list[int]] = {}
        for i, keys in enumerate(batch.keys):
            members = by_tag.get(keys.tag)
            if members is None:
                by_tag[keys.tag] = [i]
            else:
                members.append(i)
        starts = batch.starts()
        commands: list[resp.Command] = []
        for members in by_tag.values():
            names: list[str] = []
            args: list[Any] = [self._maxlen]
            for i in members:
                names += batch.keys[i][:3]
                args += (flags[i], batch.counts[i], *batch.payloads[starts[i] : starts[i] + batch.counts[i]])
            commands.append(("EVALSHA", self._sha, len(names), *names, *args))
        try:
            replies = await call_or_unavailable(self._pipeline, commands, "events not published")
        except BaseException:
            self._guard.failed(seq_keys)
            raise
        last = [0] * len(batch.keys)
        for members, seqs in zip(by_tag.values(), replies, strict=True):
            for i, seq in zip(members, seqs, strict=True):
                last[i] = int(seq)
        return last
