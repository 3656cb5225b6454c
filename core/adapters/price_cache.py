"""The latest price per (symbol, source) in Redis, and the ``prices:`` streams, written together.

For one (source, symbol) pair, the latest-price hash and the pair's stream
(sequence, history, sharded channel) share the hash tag ``{source:SYMBOL}``,
so one script per pair and write does both: the hash is replaced only by a
tick at least as new (60 s TTL), then each tick is published as a
``price_update`` event in time order (encoded by :mod:`core.codec.events`,
stamped with this cache's clock). A write Redis cannot take raises
``StorageUnavailable("redis")``.

Each tick is then published again on seed 004's streams (issue 17):
``prices:all:{SYMBOL}`` (every source of the symbol) and ``prices:all:*``
(every update), with seqs and history of their own, by the
:class:`~core.adapters.events.EventPublisher`, but only while someone listens
to them: these on-demand streams would triple Redis's work per tick for
everyone (issue 16's benchmark line). A stream is listened while its marker
exists (set by a subscription, renewed by the core holding it, lingering a
minute after the last listener: :mod:`core.adapters.stream_history`); a marker
seen is trusted for ``LISTENED_CACHE_S``, an absent one is looked up on every
write, so a new subscriber's first ticks are published. Their publish failing
after the pairs' scripts succeeded is logged, not raised: raising would have
the whole write retried and the pairs' events published twice.

Writes and reads go through the core's shared :class:`~common.resp.Pipeline`
(one script call per pair and the sources index of each symbol in one call;
on a Redis Cluster each command goes to the master owning its key), with the
wait bounded by ``COMMAND_TIMEOUT_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from common import resp, telemetry
from core.adapters.events import HISTORY_MAXLEN, Event, EventPublisher, SeqGuard, publish_lua, wall_clock_ms
from core.adapters.redis_client import call_or_unavailable
from core.adapters.redis_keys import RedisKeys
from core.codec.events import price_channel, price_event, rechannel
from core.domain.channels import ALL_SYMBOLS, Channel, all_prices_channel
from core.domain.errors import Unavailable
from core.domain.prices import Tick, decimal_str

logger = logging.getLogger(__name__)
EVERY_PRICE = all_prices_channel(ALL_SYMBOLS)

LATEST_TTL_MS = 60_000
LISTENED_CACHE_S = 1.0  # how long a listened marker seen is trusted (it lives a minute past the last listener)
MAX_LISTENED_SEEN = 100_000
SOURCES_TTL_MS = 24 * 3600 * 1000

# KEYS: latest hash, then the stream's sequence, history, channel.
# ARGV: ts, ttl, price, volume, history maxlen, jump (0/1, see events.SeqGuard), then the event payloads.
_WRITE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'ts') or '-1')
if tonumber(ARGV[1]) >= current then
  redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'price', ARGV[3], 'volume', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
""" + publish_lua(first_key=2, maxlen_arg=5, jump_arg=6, first_payload_arg=7)
_JUMP = 12  # the jump flag's place in the EVALSHA command


@dataclass(frozen=True, slots=True)
class LatestPrice:
    symbol: str
    source: str
    price: Decimal
    volume: Decimal
    ts_ms: int


class PriceCache:
    def __init__(
        self,
        pipeline: resp.Pipeline,
        keys: RedisKeys,
        *,
        ttl_ms: int = LATEST_TTL_MS,
        history_maxlen: int = HISTORY_MAXLEN,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._pipeline = pipeline
        self._keys = keys
        self._ttl_ms = ttl_ms
        self._maxlen = history_maxlen
        self._clock_ms = clock_ms  # an event's publish_time
        self._write_sha = pipeline.register_script(_WRITE)
        self._guard = SeqGuard(pipeline)
        self._aggregates = EventPublisher(pipeline, keys, history_maxlen=history_maxlen, clock_ms=clock_ms)
        self._listened_until: dict[Channel, float] = {}  # on-demand streams seen listened, until (monotonic s)

    async def write(self, ticks: Sequence[Tick]) -> None:
        """Latest prices and one ``price_update`` event per tick, one script per pair."""
        now = self._clock_ms()
        trace = telemetry.current_traceparent() if telemetry.enabled else ""  # the publish span (PriceUpdates)
        by_pair: dict[tuple[str, str], list[tuple[Tick, bytes]]] = {}
        updates: list[tuple[Tick, bytes]] = []  # time order, for the prices:all streams
        for tick in sorted(ticks, key=lambda t: t.ts_ms):
            update = (tick, price_event(tick, now_ms=now, traceparent=trace))
            by_pair.setdefault((tick.source, tick.symbol), []).append(update)
            updates.append(update)
        if not by_pair:
            return
        stream_keys = [self._keys.stream_keys(price_channel(updates[-1][0])) for updates in by_pair.values()]
        seq_keys = [keys[0] for keys in stream_keys]
        where, flags = self._guard.before(seq_keys)
        commands = self._write_commands(by_pair, stream_keys, flags)
        await self._send(commands, seq_keys)
        if again := self._guard.rerouted(seq_keys, where, flags):  # the pair scripts lead the commands
            resent = [(*commands[i][:_JUMP], 1, *commands[i][_JUMP + 1 :]) for i in again]
            await self._send(resent, [seq_keys[i] for i in again])
        await self._publish_aggregates(updates)

    async def _publish_aggregates(self, updates: Sequence[tuple[Tick, bytes]]) -> None:
        """The events of ``updates`` (time order) again on those of ``prices:all:{SYMBOL}`` and ``prices:all:*``
        someone listens to."""
        try:
            of_symbol = {symbol: all_prices_channel(symbol) for symbol in {tick.symbol for tick, _ in updates}}
            listened = await self._listened([*of_symbol.values(), EVERY_PRICE])
            if not listened:
                return
            every = EVERY_PRICE in listened
            events = []
            for tick, payload in updates:
                channel = of_symbol[tick.symbol]
                if channel in listened:
                    events.append(Event(channel, rechannel(payload, channel)))
                if every:
                    events.append(Event(EVERY_PRICE, rechannel(payload, EVERY_PRICE)))
            await self._aggregates.publish(events)
        except Unavailable as exc:
            logger.warning("%d price updates not published on the prices:all streams (%s)", len(updates), exc)

    async def _listened(self, channels: Sequence[Channel]) -> set[Channel]:
        """Those of ``channels`` whose listened marker exists (seen within ``LISTENED_CACHE_S``, or now)."""
        now = time.monotonic()
        until = self._listened_until
        listened = {channel for channel in channels if until.get(channel, 0.0) > now}
        unknown = [channel for channel in channels if channel not in listened]
        if unknown:
            replies = await call_or_unavailable(
                self._pipeline,
                [("EXISTS", self._keys.stream_listened(channel)) for channel in unknown],
                "on-demand streams not looked up",
            )
            if len(until) > MAX_LISTENED_SEEN:
                until.clear()
            for channel, exists in zip(unknown, replies, strict=True):
                if exists:
                    listened.add(channel)
                    until[channel] = now + LISTENED_CACHE_S
        return listened

    async def _send(self, commands: list[resp.Command], seq_keys: list[str]) -> None:
        try:
            await call_or_unavailable(self._pipeline, commands, "latest prices not written")
        except BaseException:
            self._guard.failed(seq_keys)
            raise

    def _write_commands(
        self,
        by_pair: dict[tuple[str, str], list[tuple[Tick, bytes]]],
        stream_keys: list[list[str]],
        flags: list[int],
    ) -> list[resp.Command]:
        commands: list[resp.Command] = []
        sources: dict[str, dict[str, int]] = {}
        for ((source, symbol), pair_updates), keys, jump in zip(by_pair.items(), stream_keys, flags, strict=True):
            newest = pair_updates[-1][0]
            commands.append(
                (
                    "EVALSHA",
                    self._write_sha,
                    4,
                    self._keys.latest_price(source, symbol),
                    *keys,
                    newest.ts_ms,
                    self._ttl_ms,
                    decimal_str(newest.price),
                    decimal_str(newest.volume),
                    self._maxlen,
                    jump,
                    *(payload for _, payload in pair_updates),
                )
            )
            sources.setdefault(symbol, {})[source] = newest.ts_ms
        for symbol, seen in sources.items():
            key = self._keys.price_sources(symbol)
            commands.append(("ZADD", key, "GT", *(x for source, ts in seen.items() for x in (ts, source))))
            commands.append(("PEXPIRE", key, SOURCES_TTL_MS))
        return commands

    async def latest(self, symbol: str) -> list[LatestPrice]:
        """The live latest price of every source of ``symbol``, newest first (expired ones are skipped)."""
        (members,) = await call_or_unavailable(
            self._pipeline, [("ZREVRANGE", self._keys.price_sources(symbol), 0, -1)], "latest prices not read"
        )
        sources = [s.decode() for s in members]
        if not sources:
            return []
        rows = await call_or_unavailable(
            self._pipeline,
            [("HGETALL", self._keys.latest_price(source, symbol)) for source in sources],
            "latest prices not read",
        )
        found = []
        for source, flat in zip(sources, rows, strict=True):
            if not flat:
                continue
            row = dict(zip(flat[::2], flat[1::2], strict=True))
            found.append(
                LatestPrice(
                    symbol, source, Decimal(row[b"price"].decode()), Decimal(row[b"volume"].decode()), int(row[b"ts"])
                )
            )
        return sorted(found, key=lambda p: p.ts_ms, reverse=True)
