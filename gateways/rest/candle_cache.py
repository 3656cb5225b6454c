"""Ready public JSON of hot candle reads, valid exactly as long as the candle window it came from.

A candle read costs a gRPC call and the projection of up to 1000 candles;
the same few (exchange, symbol, timeframe, limit) are read over and over.
The gateway therefore keeps the finished response body, and before serving it
reads the *newest member* of the core's Redis candle window (one ``ZRANGE
-1 -1``): the core adds each closed candle there (a rewrite of a candle
replaces its member), so the body is served only while that newest member
is unchanged. The probe is taken *before* the core is called, so a candle
that closes during the call makes the stored probe old and the next request
fetches again: a body is never kept under a newer probe than it saw.
An answer to "the newest ``limit``" is kept only when its newest candle *is*
the probe's member: the core may itself answer from a cache that a candle
close reaches a moment after the window (it drops answers on the
``candle_close`` event), and such an answer is passed on but never kept.
Entries also expire after :data:`MAX_AGE_S`. Closed candles are final (the
core never rewrites one, and a rewrite of the newest would change the probe),
so the expiry is only a bound for the unexpected. When Redis does not answer
the probe, nothing is cached or served from the cache.

**Bounded (issue 16).** The cache has a byte budget (``PERSEUS_CANDLE_CACHE_BYTES``:
bodies, probes and a fixed :data:`ENTRY_OVERHEAD` per entry) besides
:data:`MAX_ENTRIES`; entries are kept in the order they were stored, so
expired ones sit at the front and each store first drops them, then the
oldest until the new one fits (a body larger than the budget is not kept).
``start`` and ``end`` are aligned by the route to candle boundaries before
they key an entry (:func:`align_up`: the same candles, since open times are
boundaries), so arbitrary milliseconds cannot multiply entries. The gauge
``perseus_rest_candle_cache_size{measure="bytes"|"entries"}`` shows the size.

Requests for the same window that arrive while its probe is in flight share
that probe (one ``ZRANGE`` for all of them), so under load the probe costs a
fraction of a round trip per request; what they are served is then at most
one Redis round trip older than their arrival. Likewise, requests that miss
with the same probe share one core call (:meth:`CandleCache.answer`), so an
expiry or a close does not send every waiting request to the core; so do
requests for the same key that bypass the cache together because Redis did not
answer (what they are served is then at most one core call older than their
arrival).

The window's key is the core's (``P candles:{exchange:SYMBOL}:tf``);
``tests/unit/test_candle_cache.py`` checks it against
``core.adapters.redis_keys`` so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from common.resp import Pipeline
from gateways.rest.params import TIMEFRAMES

# A fetch gives the body and whether it may be kept (it saw the window the probe saw).
Fetch = Callable[[], Awaitable[tuple[bytes, bool]]]

MAX_AGE_S = 5.0
MAX_ENTRIES = 2_048
DEFAULT_MAX_BYTES = 64 << 20
ENTRY_OVERHEAD = 256  # the key tuple, the entry tuple and the dictionary slot, roughly
PROBE_TIMEOUT_S = 0.25


def cache_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "perseus_rest_candle_cache",
        "Candle reads by how they were answered: hit, miss (one core call), shared (joined a miss), bypass",
        ["result"],
        registry=registry,
    )


def size_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "perseus_rest_candle_cache_size",
        "What the candle response cache holds: bytes (bodies, probes, overhead) and entries",
        ["measure"],
        registry=registry,
    )


_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
# Length of each timeframe in milliseconds, by name ("1h": 3600000); candles open on multiples of it.
TIMEFRAME_MS: Mapping[str, int] = {name: int(name[:-1]) * _UNIT_MS[name[-1]] for name in TIMEFRAMES}


def align_up(ms: int | None, timeframe_ms: int, *, cap: int) -> int | None:
    """``ms`` rounded up to the next candle boundary (itself when on one), at most ``cap``: for open times,
    which are boundaries, ``open >= ms`` and ``open < ms`` mean the same before and after."""
    if ms is None:
        return None
    return min(-(-ms // timeframe_ms) * timeframe_ms, cap)


def probe_of(reply: Any) -> bytes | None:
    """A probe from the reply of :func:`probe_command`: ``b"<score>:<member>"``, b"" for an empty window,
    None for anything but a list (an error reply)."""
    if not isinstance(reply, list):
        return None
    if not reply:
        return b""
    member, score = reply
    return b"%b:%b" % (score, member)


def window_key(prefix: str, exchange: str, symbol: str, timeframe: str) -> str:
    return f"{prefix}candles:{{{exchange}:{symbol}}}:{timeframe}"


class CandleCache:
    def __init__(
        self,
        pipeline: Pipeline,
        prefix: str,
        counter: Counter,
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        size: Gauge | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pipeline = pipeline
        self._prefix = prefix
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, bytes, bytes]] = OrderedDict()  # oldest stored first
        self._bytes = 0
        self._size = (size.labels("bytes"), size.labels("entries")) if size is not None else None
        self._in_flight: dict[str, asyncio.Future[bytes | None]] = {}
        self._fetching: dict[tuple[Hashable, bytes | None], asyncio.Task[tuple[bytes, bool]]] = {}
        self._results = {result: counter.labels(result) for result in ("hit", "miss", "shared", "bypass")}

    async def answer(self, key: Hashable, probe: bytes | None, fetch: Fetch) -> bytes:
        """The body for ``key``: kept under ``probe``, or fetched once for every request missing with it.

        Without a probe (Redis did not answer) nothing is kept or served from here, but the requests for one
        ``key`` that bypass the cache at the same time still share one core call: when the gateway's loop is
        so busy that its Redis deadlines pass (c=256, issue 18.4), a core call per request made it busier
        still, and the tail collapsed."""
        if probe is None:
            self._results["bypass"].inc()
        else:
            body = self.get(key, probe)
            if body is not None:
                self._results["hit"].inc()
                return body
        slot = (key, probe)
        task = self._fetching.get(slot)
        if task is not None:
            if probe is not None:
                self._results["shared"].inc()
            return (await asyncio.shield(task))[0]
        if probe is not None:
            self._results["miss"].inc()
        task = asyncio.ensure_future(fetch())  # not cancelled with the request that started it
        self._fetching[slot] = task
        task.add_done_callback(lambda done: self._fetched(key, probe, slot, done))
        return (await asyncio.shield(task))[0]

    def _fetched(
        self,
        key: Hashable,
        probe: bytes | None,
        slot: tuple[Hashable, bytes | None],
        task: asyncio.Task[tuple[bytes, bool]],
    ) -> None:
        del self._fetching[slot]
        if task.cancelled() or task.exception() is not None:
            return  # the error went to the requests waiting for it
        body, keep = task.result()
        if keep and probe is not None:
            self.put(key, probe, body)

    async def probe(self, exchange: str, symbol: str, timeframe: str) -> bytes | None:
        """The newest member of the window with its score; None when Redis does not answer."""
        command = self.probe_command(exchange, symbol, timeframe)
        key = command[1]
        shared = self._in_flight.get(key)
        if shared is not None:
            return await asyncio.shield(shared)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        result: bytes | None = None
        try:
            result = await self._read(command)
        finally:
            del self._in_flight[key]
            future.set_result(result)  # a cancelled probe leaves its followers uncached, not stuck
        return result

    async def _read(self, command: tuple[Any, ...]) -> bytes | None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                (reply,) = await self._pipeline.call(command)
        except (OSError, TimeoutError):  # ConnectionError included
            return None
        return probe_of(reply)

    def probe_command(self, exchange: str, symbol: str, timeframe: str) -> tuple[Any, ...]:
        """``ZRANGE window -1 -1 WITHSCORES``, also for someone else's call (the limiter's); read its reply
        with :func:`probe_of`."""
        return ("ZRANGE", window_key(self._prefix, exchange, symbol, timeframe), -1, -1, "WITHSCORES")

    @staticmethod
    def newest_member(probe: bytes) -> bytes:
        """The window's newest member as a probe saw it (empty for an empty window)."""
        return probe.partition(b":")[2]

    def get(self, key: Hashable, probe: bytes) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, stored_probe, body = entry
        if stored_probe != probe or self._clock() - stored_at >= MAX_AGE_S:
            return None
        return body

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: Hashable, probe: bytes, body: bytes) -> None:
        now = self._clock()
        self._drop(key)
        while self._entries:  # expired ones first: stored in order, so they are at the front
            oldest = next(iter(self._entries))
            if now - self._entries[oldest][0] < MAX_AGE_S:
                break
            self._drop(oldest)
        cost = _cost(probe, body)
        if cost <= self._max_bytes:
            while self._entries and (self._bytes + cost > self._max_bytes or len(self._entries) >= self._max_entries):
                self._drop(next(iter(self._entries)))
            self._entries[key] = (now, probe, body)
            self._bytes += cost
        if self._size is not None:
            self._size[0].set(self._bytes)
            self._size[1].set(len(self._entries))

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= _cost(entry[1], entry[2])


def _cost(probe: bytes, body: bytes) -> int:
    return len(body) + len(probe) + ENTRY_OVERHEAD
