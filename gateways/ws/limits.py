"""Per-connection limits as arithmetic: the inbound message rate and the slow-client rule. Pure code.

Both take the time as an argument (``now``, monotonic seconds), so the tests
drive them without a clock or an event loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Inbound messages: a burst of BURST, then RATE per second. A message over the limit is answered
# with RATE_LIMITED and dropped; STRIKES of those in a row close the connection with 4029.
MESSAGE_RATE_PER_S = 10.0
MESSAGE_BURST = 20
MESSAGE_STRIKES = 5

# Outbound: a client whose transport holds more than SKIP_BYTES unsent has events skipped (a seq
# gap it can see); more than CLOSE_BYTES, or skipping for longer than the grace, closes it (4009).
SKIP_BYTES = 64 * 1024
CLOSE_BYTES = 256 * 1024
SLOW_CLIENT_GRACE_S = 5.0


class Verdict(enum.Enum):
    ALLOW = "allow"
    REJECT = "reject"
    CLOSE = "close"


@dataclass(slots=True)
class MessageRateLimit:
    """A token bucket per connection, with strikes for messages sent while it is empty."""

    rate_per_s: float = MESSAGE_RATE_PER_S
    burst: int = MESSAGE_BURST
    max_strikes: int = MESSAGE_STRIKES
    tokens: float = -1.0
    updated: float = 0.0
    strikes: int = 0

    def check(self, now: float) -> Verdict:
        if self.tokens < 0:  # the first message
            self.tokens, self.updated = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.strikes = 0
            return Verdict.ALLOW
        self.strikes += 1
        return Verdict.CLOSE if self.strikes >= self.max_strikes else Verdict.REJECT


class Send(enum.Enum):
    WRITE = "write"
    SKIP = "skip"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class SlowClientRule:
    skip_bytes: int = SKIP_BYTES
    close_bytes: int = CLOSE_BYTES
    grace_s: float = SLOW_CLIENT_GRACE_S

    def decide(self, buffered: int, lagging_since: float | None, now: float) -> Send:
        """What to do with the next event for a client whose transport holds ``buffered`` bytes,
        skipping since ``lagging_since`` (None when it is keeping up)."""
        if buffered <= self.skip_bytes:
            return Send.WRITE
        if buffered > self.close_bytes or (lagging_since is not None and now - lagging_since > self.grace_s):
            return Send.CLOSE
        return Send.SKIP


def within_subscription_limit(current: int, adding: int, limit: int) -> bool:
    return current + adding <= limit
