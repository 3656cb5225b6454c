"""The REST rate limiter: one Lua call per request in Redis, shared by every gateway instance.

A request's call carries the script and at most one read the route needs
anyway (the candle route's window probe), so a limited request still costs a
single round trip; it goes through the gateway's :class:`~common.resp.Pipeline`
(:class:`~common.resp.AutoPipeline` on one server), so the calls of concurrent
requests share one write and their replies are parsed in C. The counter of a key's
current window is ``P ratelimit:{apikey:<id>}:<window>``: one key per call,
with the key's hash tag, so on a Redis Cluster the script goes to the master
owning it (and the probe sent with it to its own). The script is registered
with the pipeline, which loads it again wherever Redis lost it (a restart, a
failover to a replica, ``SCRIPT FLUSH``). The script
(:data:`~gateways.rest.ratelimit.WINDOW_SCRIPT`) reads, checks and
increments atomically, so two gateways can never both spend the last units.

**When Redis does not answer** (error or timeout after
:data:`REDIS_LIMIT_TIMEOUT_S`) the limiter *fails open to a local limit*: it
counts in this process's memory with the same windows and limits, logs a
warning once per outage and counts the fallbacks in ``/metrics``. Requests
keep being served (the core reads candles from PostgreSQL when Redis is
gone, so refusing everything would turn a cache outage into a full one),
and one client still cannot exceed its limit on one instance. Across N
instances a client may then get up to N times its limit until Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from common.resp import Pipeline, ReplyError
from gateways.common.errors import RateLimitExceeded
from gateways.rest.ratelimit import NOT_LIMITED, UNLIMITED, WINDOW_S, WINDOW_SCRIPT, Decision, decide, window_of

logger = logging.getLogger(__name__)

REDIS_LIMIT_TIMEOUT_S = 0.25
DAY_S = 86_400  # the export row budget's window: a UTC day
MAX_LOCAL_COUNTERS = 100_000
NOT_READ = object()  # the reply of an ``also`` command that was not sent or failed

Command = tuple[Any, ...]


def fallback_counter(registry: CollectorRegistry) -> Counter:
    """The ``/metrics`` counter of requests limited locally (made once per app, with its registry)."""
    return Counter(
        "perseus_rest_ratelimit_local_fallbacks",
        "Requests limited in process memory because Redis did not answer",
        registry=registry,
    )


class RateLimiter:
    def __init__(
        self,
        pipeline: Pipeline,
        prefix: str,
        fallbacks: Counter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pipeline = pipeline
        self._window_sha = pipeline.register_script(WINDOW_SCRIPT)
        self._prefix = prefix
        self._clock = clock
        self._local: dict[tuple[int, int], int] = {}
        self._local_rows: dict[tuple[int, int], int] = {}  # (key id, UTC day): export rows counted locally
        self._degraded = False
        self._fallbacks = fallbacks
        self.usage = KeyUsage()

    def counter_key(self, key_id: int, window: int) -> str:
        return f"{self._prefix}ratelimit:{{apikey:{key_id}}}:{window}"

    async def spend(self, key_id: int, limit: int, cost: int, *, also: Command | None = None) -> tuple[Decision, Any]:
        """Spend ``cost`` units of key ``key_id`` (``limit`` per minute, 0 = unlimited).

        ``also`` is one more command sent with the script (one round trip for both); its reply comes
        back second, or :data:`NOT_READ` when it was not sent (an unlimited key) or Redis failed.
        """
        if limit == UNLIMITED:
            return NOT_LIMITED, NOT_READ
        window = window_of(self._clock())
        commands = [
            ("EVALSHA", self._window_sha, 1, self.counter_key(key_id, window), cost, limit, (WINDOW_S + 5) * 1000)
        ]
        if also is not None:
            commands.append(also)
        try:
            async with asyncio.timeout(REDIS_LIMIT_TIMEOUT_S):
                replies = await self._pipeline.call(*commands)
        except (OSError, TimeoutError) as exc:  # ConnectionError included
            return self._spend_locally(key_id, limit, cost, window, exc), NOT_READ
        spent, read = replies[0], replies[1] if also is not None else NOT_READ
        if isinstance(read, ReplyError):
            read = NOT_READ
        if isinstance(spent, ReplyError):
            return self._spend_locally(key_id, limit, cost, window, spent), read
        if self._degraded:
            self._degraded = False
            logger.warning("rate limits are shared through Redis again")
        allowed, used = spent
        return Decision(bool(allowed), limit, int(used), (window + 1) * WINDOW_S), read

    def rows_key(self, key_id: int, day: int) -> str:
        return f"{self._prefix}ratelimit:{{apikey:{key_id}}}:rows:{day}"

    async def spend_rows(self, key_id: int, budget: int, rows: int) -> tuple[Decision, int]:
        """Reserve ``rows`` of key ``key_id``'s daily export budget (``budget`` rows per UTC day, 0 = unlimited)
        with the same script as the minute windows; returns the decision and the day it was counted in (for
        :meth:`settle_rows`). Redis not answering: counted in this process, like the minute limits."""
        day = int(self._clock() // DAY_S)
        if budget == UNLIMITED:
            return NOT_LIMITED, day
        key = self.rows_key(key_id, day)
        command = ("EVALSHA", self._window_sha, 1, key, rows, budget, (DAY_S + WINDOW_S) * 1000)
        try:
            async with asyncio.timeout(REDIS_LIMIT_TIMEOUT_S):
                (spent,) = await self._pipeline.call(command)
            if isinstance(spent, ReplyError):
                raise OSError(str(spent))
        except (OSError, TimeoutError) as exc:
            if not self._degraded:
                self._degraded = True
                logger.warning("Redis did not answer the rate limiter (%s); limiting per instance", type(exc).__name__)
            self._fallbacks.inc()
            used_before = self._local_rows.get((key_id, day), 0)
            if used_before + rows > budget:
                return Decision(False, budget, used_before, (day + 1) * DAY_S), day
            self._local_rows[(key_id, day)] = used_before + rows
            return Decision(True, budget, used_before + rows, (day + 1) * DAY_S), day
        allowed, used = spent
        return Decision(bool(allowed), budget, int(used), (day + 1) * DAY_S), day

    async def settle_rows(self, key_id: int, day: int, delta: int) -> None:
        """Correct a reservation by ``delta`` rows (negative: rows reserved and not sent); best effort."""
        if not delta:
            return
        slot = (key_id, day)
        if slot in self._local_rows:
            self._local_rows[slot] = max(self._local_rows[slot] + delta, 0)
            return
        try:
            async with asyncio.timeout(REDIS_LIMIT_TIMEOUT_S):
                await self._pipeline.call(("INCRBY", self.rows_key(key_id, day), delta))
        except (OSError, TimeoutError) as exc:
            logger.warning("export row budget not settled (%s)", type(exc).__name__)

    def _spend_locally(self, key_id: int, limit: int, cost: int, window: int, exc: BaseException) -> Decision:
        if not self._degraded:
            self._degraded = True
            logger.warning("Redis did not answer the rate limiter (%s); limiting per instance", type(exc).__name__)
        self._fallbacks.inc()
        if len(self._local) > MAX_LOCAL_COUNTERS:
            self._local = {k: v for k, v in self._local.items() if k[1] >= window}
        slot = (key_id, window)
        decision = decide(self._local.get(slot, 0), cost, limit, window)
        if decision.allowed:
            self._local[slot] = decision.used
        return decision


MAX_TRACKED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class KeySpend:
    """What one API key has spent of its limit in the current window, as this gateway last saw it."""

    key_id: int
    name: str
    tier: str
    used: int
    limit: int


class KeyUsage:
    """The keys that spent units of their limit on this gateway in the current window, with the shared
    counter's value at their latest request (the script's answer): what the operator view's top keys come from
    (``gateways/common/ops_stats.py``). Unlimited keys are not counted; a new window starts empty; at most
    :data:`MAX_TRACKED_KEYS` keys (more are not added until the window turns)."""

    def __init__(self, max_keys: int = MAX_TRACKED_KEYS) -> None:
        self._max_keys = max_keys
        self.window = -1
        self._spent: dict[int, KeySpend] = {}

    def record(self, key_id: int, name: str, tier: str, decision: Decision) -> None:
        if decision.limit == UNLIMITED:
            return
        window = decision.reset_s // WINDOW_S - 1
        if window < self.window:
            return
        if window > self.window:
            self.window, self._spent = window, {}
        if key_id not in self._spent and len(self._spent) >= self._max_keys:
            return
        self._spent[key_id] = KeySpend(key_id, name, tier, decision.used, decision.limit)

    def top(self, count: int, now_s: float) -> list[KeySpend]:
        """The ``count`` keys that spent the most in the window ``now_s`` falls in (none from an older one)."""
        if self.window != window_of(now_s):
            return []
        return sorted(self._spent.values(), key=lambda k: (-k.used, k.key_id))[:count]


HEAVY_RETRY_AFTER_S = 1


class InFlight:
    """Heavy reads (price ranges) one key has running on this gateway, at most ``per_key`` (0: no cap).

    Counted in the process: it guards this gateway's share of the core's heavy-read pool, so one key
    cannot hold every connection of it while the others wait. Beyond the cap, 429 with ``Retry-After``."""

    def __init__(self, per_key: int) -> None:
        self._per_key = per_key
        self._running: dict[int, int] = {}

    @contextmanager
    def hold(self, key_id: int, what: str = "price range reads") -> Iterator[None]:
        running = self._running.get(key_id, 0)
        if self._per_key and running >= self._per_key:
            raise RateLimitExceeded(HEAVY_RETRY_AFTER_S, f"at most {self._per_key} {what} at once per API key; retry")
        self._running[key_id] = running + 1
        try:
            yield
        finally:
            left = self._running[key_id] - 1
            if left:
                self._running[key_id] = left
            else:
                del self._running[key_id]
