"""The one WebSocket connection of a venue: connect, subscribe, read, hand events on, reconnect.

All venue knowledge lives in the :class:`VenueProtocol` (a fresh one per
connection, from the factory); this module only does I/O and lifecycle:

- **Reading.** Every frame goes to ``protocol.parse(frame, now_ms)``; its
  ``replies`` are sent back and its ``events`` handed to the injected
  :data:`EventSink`, in order, one frame at a time (the sink's speed is the
  read speed: WebSocket flow control then slows the venue down, and the
  websockets library's receive buffer is bounded).
- **Liveness.** No frame for ``protocol.idle_timeout_s`` means the connection
  is dead; protocol-level pings (``PING_INTERVAL_S``) catch a dead peer too.
- **Errors.** A fatal :class:`VenueError` closes the connection and reconnects;
  a non-fatal one skips the frame. Both are logged and counted in ``errors``.
  A failing sink is logged and counted in ``sink_errors``, and reading goes on,
  except for the exception types given in ``propagate``, which end :meth:`run`.
- **Reconnecting.** Every lost or failed connection is followed by a sleep of
  :func:`backoff_delay`: exponential from ``backoff_base_s`` to
  ``backoff_cap_s`` with equal jitter, restarting from the base after a
  connection that stayed up for ``healthy_after_s``. The clocks, the sleep and
  the random source are injected so tests run on fake time.
- **Stopping.** :meth:`run` runs until cancelled; :meth:`aclose` cancels it
  (then ``run`` returns normally) and waits until the connection is closed.
  Called from within the sink, :meth:`aclose` closes the connection, no
  further frame is handled, and ``run`` returns.
- **State.** ``state`` is what ``GetStatus`` and ``/health`` show:
  ``connecting`` until the first connection of a run opens, ``connected``
  while one is open, ``reconnecting`` from its loss (or a failed attempt after
  one) until the next one opens, ``stopped`` before and after :meth:`run`.
  ``last_frame_ms`` is when the last frame arrived (wall clock).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from common.settings import redact_url, scrub
from core.adapters.venues.base import EventSink, Parsed, VenueError, VenueProtocol
from core.domain.market_events import MarketEvent, SequenceGap
from core.domain.models import VenueState

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
HEALTHY_AFTER_S = 30.0  # a connection that lasted longer than this resets the backoff
JITTER_FRACTION = 0.5  # the delay is drawn from [1 - JITTER_FRACTION, 1] x the exponential step
MAX_FRAME_BYTES = 4 * 2**20
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0


def backoff_delay(
    failures: int,
    random_value: float,
    *,
    base_s: float = BACKOFF_BASE_S,
    cap_s: float = BACKOFF_CAP_S,
) -> float:
    """Seconds to wait before the next attempt after ``failures`` consecutive failures (0 for the first
    reconnect): ``min(cap, base x 2^failures)``, scaled by a jitter factor from ``random_value`` in [0, 1)."""
    step = min(cap_s, base_s * 2.0 ** min(failures, 64))
    return step * (1 - JITTER_FRACTION + JITTER_FRACTION * random_value)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class VenueRunner:
    def __init__(
        self,
        protocol_factory: Callable[[], VenueProtocol],
        sink: EventSink,
        *,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random_source: Callable[[], float] = random.random,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        healthy_after_s: float = HEALTHY_AFTER_S,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        ping_interval_s: float | None = PING_INTERVAL_S,
        propagate: tuple[type[Exception], ...] = (),
    ) -> None:
        self._factory = protocol_factory
        self._sink = sink
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._sleep = sleep
        self._random = random_source
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._healthy_after_s = healthy_after_s
        self._max_frame_bytes = max_frame_bytes
        self._ping_interval_s = ping_interval_s
        self._propagate = propagate
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._cancelled_by_aclose = False
        self._connection: ClientConnection | None = None
        self._opened_at: float | None = None
        self.name = "?"
        self.connected = False
        self.state: VenueState = "stopped"
        self.last_frame_ms: int | None = None
        self.connects = 0  # connections opened
        self.reconnects = 0  # reconnections scheduled, after a failed or a lost connection
        self.frames = 0  # frames received
        self.errors = 0  # frames the protocol could not accept (VenueError, fatal or not)
        self.sink_errors = 0  # deliveries the sink failed
        self.gaps = 0  # SequenceGap events seen

    async def run(self) -> None:
        """Keep a connection until cancelled or :meth:`aclose`d; never returns otherwise."""
        if self._task is not None:
            raise RuntimeError("VenueRunner.run() is already running")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("VenueRunner.run() needs a running task")
        self._task = task
        self.state = "connecting"
        try:
            await self._reconnect_forever()
        except asyncio.CancelledError:
            if self._cancelled_by_aclose and task.uncancel() == 0:
                return  # our own cancellation, from aclose(), and nobody else's
            raise
        finally:
            self._task = None
            self._cancelled_by_aclose = False
            self.connected = False
            self.state = "stopped"

    async def aclose(self) -> None:
        """Stop :meth:`run` and close the connection; returns once both are done."""
        self._closing = True
        task = self._task
        if task is None or task.done():
            return
        if task is asyncio.current_task():  # called from the sink: leave the connection, run() returns
            if self._connection is not None:
                await self._connection.close()
            return
        self._cancelled_by_aclose = True
        task.cancel()
        await asyncio.wait([task])

    # Two checks as methods: the connection just awaited may have changed both attributes, which a check
    # written inline would read (to mypy) as still narrowed by the loop's test and the reset above it.
    def _stopping(self) -> bool:
        return self._closing

    def _lasted(self) -> bool:
        """Whether the last connection opened and stayed up long enough to count as healthy."""
        return self._opened_at is not None and self._monotonic() - self._opened_at > self._healthy_after_s

    async def _reconnect_forever(self) -> None:
        failures = 0
        while not self._closing:
            protocol = self._factory()
            self.name = protocol.name
            self._opened_at = None
            try:
                await self._one_connection(protocol)
            except (OSError, TimeoutError, WebSocketException) as exc:
                state = "lost" if self._opened_at is not None else "failed"
                reason = scrub(str(exc), protocol.url()) or type(exc).__name__
                logger.warning("%s: connection %s: %s", self.name, state, reason)
            finally:
                self.connected = False
                self._connection = None
            if self._stopping():
                return
            self.state = "reconnecting"
            if self._lasted():
                failures = 0
            delay = backoff_delay(failures, self._random(), base_s=self._backoff_base_s, cap_s=self._backoff_cap_s)
            failures += 1
            self.reconnects += 1
            logger.info("%s: reconnecting in %.2f s", self.name, delay)
            await self._sleep(delay)

    async def _one_connection(self, protocol: VenueProtocol) -> None:
        """One connection, from opening to the moment the runner decides to leave it (or it is lost)."""
        async with connect(
            protocol.url(),
            max_size=self._max_frame_bytes,
            ping_interval=self._ping_interval_s,
            ping_timeout=PING_TIMEOUT_S,
            open_timeout=OPEN_TIMEOUT_S,
            close_timeout=CLOSE_TIMEOUT_S,
        ) as connection:
            self._opened_at = self._monotonic()
            self.connects += 1
            self.connected = True
            self.state = "connected"
            self._connection = connection
            # PERSEUS_<VENUE>_URL is a secret: a proxy's URL may carry a token
            logger.info("%s: connected to %s", self.name, redact_url(protocol.url()))
            for frame in protocol.subscribe_frames():
                await connection.send(frame)
            while not self._closing and await self._next_frame(protocol, connection):
                pass

    async def _next_frame(self, protocol: VenueProtocol, connection: ClientConnection) -> bool:
        """Read and handle one frame; False when the connection should be left."""
        try:
            async with asyncio.timeout(protocol.idle_timeout_s):
                frame = await connection.recv()
        except TimeoutError:
            logger.warning("%s: no frame for %.1f s; reconnecting", self.name, protocol.idle_timeout_s)
            return False
        self.frames += 1
        now_ms = self.last_frame_ms = self._clock_ms()
        try:
            parsed = protocol.parse(frame, now_ms)
        except VenueError as exc:
            self.errors += 1
            if exc.fatal:
                logger.warning("%s: %s; reconnecting", self.name, exc)
                return False
            logger.info("%s: frame skipped: %s", self.name, exc)
            return True
        await self._handle(parsed, connection)
        return True

    async def _handle(self, parsed: Parsed, connection: ClientConnection) -> None:
        for reply in parsed.replies:
            await connection.send(reply)
        if parsed.events:
            self.gaps += sum(isinstance(event, SequenceGap) for event in parsed.events)
            await self._deliver(parsed.events)

    async def _deliver(self, events: Sequence[MarketEvent]) -> None:
        try:
            await self._sink(events)
        except self._propagate:
            raise
        except Exception:  # the sink's failure must not end the feed; CancelledError is not an Exception
            self.sink_errors += 1
            logger.warning("%s: the sink failed on %d events", self.name, len(events), exc_info=True)
