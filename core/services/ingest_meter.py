"""How many ticks this core stores, how fast and how late: ``GetStatus``'s ``ingest`` (the operator view).

:class:`IngestMeter` is a ticks listener placed in front of the price updates, where both ways ticks are
stored meet (an ingest call's fresh ticks and an exchange writer's venue trades): it counts the newly
stored ticks, remembers when the latest batch was stored and its lag (from the newest tick's own time to
its storage), then hands the ticks on. The rate is read from the count at status time: the meter keeps a
few (time, count) readings and divides by the span since the reading about :data:`RATE_WINDOW_S` old, so
no task ticks in the background and a core nobody asks costs nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from core.domain.prices import Tick

RATE_WINDOW_S = 10.0
MAX_READINGS = 64

TicksListener = Callable[[Sequence[Tick]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class IngestReading:
    ticks_total: int
    ticks_per_second: float
    lag_ms: float
    last_stored_ms: int | None  # epoch ms of the latest stored batch; None when none yet


class IngestMeter:
    """Counts fresh ticks on their way to ``inner`` (the price updates) and answers :meth:`reading`."""

    def __init__(
        self,
        inner: TicksListener,
        *,
        clock_ms: Callable[[], int],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self.ticks_total = 0
        self.lag_ms = 0.0
        self.last_stored_ms: int | None = None
        self._readings: deque[tuple[float, int]] = deque(maxlen=MAX_READINGS)

    async def __call__(self, ticks: Sequence[Tick]) -> None:
        if ticks:
            now_ms = self._clock_ms()
            self.ticks_total += len(ticks)
            self.last_stored_ms = now_ms
            self.lag_ms = float(max(now_ms - max(tick.ts_ms for tick in ticks), 0))
        await self._inner(ticks)

    def reading(self) -> IngestReading:
        """The count, the rate over about the last :data:`RATE_WINDOW_S` (0 on the first reading) and the lag."""
        now = self._monotonic()
        readings = self._readings
        readings.append((now, self.ticks_total))
        # the base: the newest reading at least the window old (or the oldest one kept)
        while len(readings) > 2 and now - readings[1][0] >= RATE_WINDOW_S:
            readings.popleft()
        since, count = readings[0]
        span = now - since
        rate = (self.ticks_total - count) / span if span > 0 else 0.0
        return IngestReading(self.ticks_total, round(rate, 3), self.lag_ms, self.last_stored_ms)
