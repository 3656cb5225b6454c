"""When ``perseus up`` restarts a dead child, and when it gives up: backoff with jitter, a failure budget.

Pure bookkeeping (no processes, no sleeping), so the rules are tested with a fake clock:

- **Backoff.** The n-th consecutive failure waits ``first_delay_s * 2**(n-1)``, at most
  ``max_delay_s`` (0.5 s, 1 s, 2 s, 4 s, 8 s, 10 s, 10 s…), times a random factor in
  ``[1 - jitter, 1]`` so children that died together do not all come back in the same instant.
- **Reset.** A child that has run for ``healthy_after_s`` since its last start counts as healthy:
  its next failure waits ``first_delay_s`` again. A crash after an hour is not the sixth of a
  series.
- **Giving up.** ``max_failures`` failures (exits, or restarts that did not come up) within
  ``window_s`` mean the child cannot run here (a port taken for good, a broken build, a dead
  disk); retrying forever would only bury the reason under repeats, so the stack stops and says
  which child and why.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RestartBudget", "RestartPolicy"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """The numbers behind restarts; the defaults are what ``perseus up`` uses (docs/design/perseus-up-heals.md)."""

    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    jitter: float = 0.25
    healthy_after_s: float = 30.0
    max_failures: int = 5
    window_s: float = 60.0

    def delay(self, consecutive: int) -> float:
        """The un-jittered wait before the restart that follows the ``consecutive``-th failure in a row."""
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** max(0, consecutive - 1))


class RestartBudget:
    """One child's failures: the wait before its next restart, or None when it has failed too often."""

    def __init__(self, policy: RestartPolicy, *, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.restarts = 0  # restarts asked for over the stack's life, for the log
        self._rand = rand
        self._consecutive = 0
        self._failures: deque[float] = deque()
        self._started_at: float | None = None

    def started(self, now: float) -> None:
        """The child (re)started at ``now``."""
        self._started_at = now

    def check_healthy(self, now: float) -> bool:
        """Called while it runs: True once, when it has run long enough to reset the backoff."""
        if self._consecutive and self._started_at is not None and now - self._started_at >= self.policy.healthy_after_s:
            self._consecutive = 0
            return True
        return False

    def failed(self, now: float) -> float | None:
        """Record a failure at ``now``; the (jittered) wait before the next start, or None: give up."""
        self.check_healthy(now)
        self._started_at = None
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.policy.window_s:
            self._failures.popleft()
        if len(self._failures) >= self.policy.max_failures:
            return None
        self._consecutive += 1
        self.restarts += 1
        return self.policy.delay(self._consecutive) * (1 - self.policy.jitter * self._rand())
