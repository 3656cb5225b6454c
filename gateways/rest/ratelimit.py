"""Rate-limit arithmetic of the REST gateway: request costs, windows, decisions and headers. Pure code.

The limit of a key is its ``rate_limit_per_minute`` from the core (free 1000,
pro 10000; 0 means unlimited: internal and admin keys). A request spends
*cost units* from a fixed one-minute window; the cost depends on the route and
on how much it asks for (:func:`request_cost`):

=================================  ====================================
route                              cost
=================================  ====================================
exchanges, symbols, signals        1
candles                            ``ceil(limit / 100)``: 1 for 100 candles, 10 for 1000
alerts                             ``ceil(limit / 100)``
prices/latest, consensus           ``ceil(symbols / 10)`` (consensus: twice that)
prices/range                       1 + ``ceil(buckets / 1000)`` + ``ceil(days)``
=================================  ====================================

A price range's cost follows its work (issue 16): ``buckets`` is how many
``interval``s the range spans (at most ``limit``: what is aggregated and sent)
and ``days`` its length in days (the ticks PostgreSQL scans, whatever the
interval), so a 90-day range costs about 100 units and an hour of minutes 3.

The Redis side (:mod:`gateways.rest.limiter`) runs :data:`WINDOW_SCRIPT`, the
same rule as :func:`decide`, in one round trip. Both must agree; the unit
tests check :func:`decide` and the integration tests check the script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_S = 60
UNLIMITED = 0
LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
RESET_HEADER = "X-RateLimit-Reset"

BASE_COST = 1
CANDLES_PER_UNIT = 100
ALERTS_PER_UNIT = 100
SYMBOLS_PER_UNIT = 10
BUCKETS_PER_UNIT = 1000


def per_unit(count: int, per: int) -> int:
    """``ceil(count / per)``, at least 1."""
    return max(BASE_COST, math.ceil(max(count, 0) / per))


def candles_cost(limit: int) -> int:
    return per_unit(limit, CANDLES_PER_UNIT)


def alerts_cost(limit: int) -> int:
    return per_unit(limit, ALERTS_PER_UNIT)


def symbols_cost(count: int) -> int:
    return per_unit(count, SYMBOLS_PER_UNIT)


def consensus_cost(count: int) -> int:
    return 2 * per_unit(count, SYMBOLS_PER_UNIT)


DAY_MS = 86_400_000


def range_buckets(span_ms: int, interval_ms: int) -> int:
    """How many ``interval_ms`` buckets a range of ``span_ms`` covers (``ceil``, at least 1)."""
    return max(1, -(-max(span_ms, 0) // interval_ms))


def range_cost(span_ms: int, interval_ms: int, limit: int) -> int:
    """1 + ``ceil(buckets / 1000)`` (buckets at most ``limit``) + ``ceil(days)``: what a range costs the core."""
    buckets = min(range_buckets(span_ms, interval_ms), limit)
    return BASE_COST + per_unit(buckets, BUCKETS_PER_UNIT) + per_unit(span_ms, DAY_MS)


def window_of(now_s: float) -> int:
    """The number of the fixed window ``now_s`` falls in."""
    return int(now_s // WINDOW_S)


def window_reset_s(window: int) -> int:
    """Epoch second at which ``window`` ends (the ``X-RateLimit-Reset`` value)."""
    return (window + 1) * WINDOW_S


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int  # UNLIMITED (0) for keys that are not limited
    used: int  # units spent in the window after this request (unchanged when refused)
    reset_s: int  # epoch second of the window's end; 0 when unlimited

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def retry_after_s(self, now_s: float) -> int:
        """Whole seconds until the window ends, at least 1."""
        return max(1, math.ceil(self.reset_s - now_s))

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-*``: for an unlimited key all three are 0 (as ``rate_limit_per_minute`` 0 means)."""
        return {LIMIT_HEADER: str(self.limit), REMAINING_HEADER: str(self.remaining), RESET_HEADER: str(self.reset_s)}


NOT_LIMITED = Decision(allowed=True, limit=UNLIMITED, used=0, reset_s=0)


def decide(used_before: int, cost: int, limit: int, window: int) -> Decision:
    """Spend ``cost`` of ``limit`` when it fits in what is left; a refused request spends nothing."""
    if limit == UNLIMITED:
        return NOT_LIMITED
    if used_before + cost > limit:
        return Decision(False, limit, used_before, window_reset_s(window))
    return Decision(True, limit, used_before + cost, window_reset_s(window))


# KEYS[1]: the window's counter; ARGV: cost, limit, ttl in ms. Returns {allowed (0/1), used}.
WINDOW_SCRIPT = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if used + cost > limit then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], cost)
if used == cost then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, used}
"""
