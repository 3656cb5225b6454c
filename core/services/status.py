"""Health of the core: its dependencies, probed concurrently with a bound on each probe, and its own tasks.

A probe's bound must hold even when the probe cannot be stopped. Cancelling a
query on a stalled PostgreSQL (SIGSTOP'd, or its host gone) does not end it:
asyncpg then waits, shielded, for the server to acknowledge the cancellation
before the pool takes the connection back, so ``asyncio.timeout`` around
``pool.fetchval`` returned only when the server woke up, and ``GetStatus``
missed the gateway's deadline: ``/health`` blamed the core for PostgreSQL's
stall. So each probe runs in a task of its own and the answer is given when the
bound passes, whether or not that task has finished; a probe still hanging from
an earlier check is not started again (the dependency is reported down at once),
so a long stall costs one stuck probe per dependency, not one per check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from common.settings import redact_text
from common.supervise import TaskSupervisor
from core.domain.models import DependencyHealth, VenueHealth
from core.services.ingest_meter import IngestReading

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0

Probe = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class HubCounts:
    """The stream hub's subscribers (open streams, the candle cache) and the channels it holds in Redis."""

    sessions: int
    channels: int


@dataclass(frozen=True, slots=True)
class WriterHealth:
    """Who holds an exchange's writer lease (an instance id; "" when nobody) and its newest term."""

    exchange: str
    leader: str
    term: int


@dataclass(frozen=True, slots=True)
class OperatorReadings:
    """What the operator view reads besides health (``GetStatus``'s ``streams``, ``ingest`` and ``writers``);
    each is optional, so a core built without one (a test's) answers without it."""

    hub: Callable[[], HubCounts] | None = None
    ingest: Callable[[], IngestReading] | None = None
    pending_price_updates: Callable[[], int] | None = None
    writers: Callable[[], Awaitable[list[WriterHealth]]] | None = None


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    """One of the core's long-lived tasks: running (``up``) or degraded, with why (internal) and its restarts."""

    name: str
    up: bool
    detail: str = ""
    restarts: int = 0


def supervised_components(tasks: TaskSupervisor) -> Callable[[], list[ComponentHealth]]:
    """The components of a supervisor: each supervised task, degraded while it is not running."""

    def components() -> list[ComponentHealth]:
        degraded, alive = tasks.degraded(), tasks.alive()
        out = []
        for name, restarts in sorted(tasks.restarts().items()):
            problem = degraded.get(name) or (None if alive.get(name) else "its supervisor ended")
            out.append(ComponentHealth(name, problem is None, redact_text(problem or ""), restarts))
        return out

    return components


class StatusService:
    """Answers "is each dependency up, and is each task running?" without ever hanging the caller."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        *,
        components: Callable[[], list[ComponentHealth]] | None = None,
        venues: Callable[[], list[VenueHealth]] | None = None,
        readings: OperatorReadings | None = None,
        timeout_s: float = PROBE_TIMEOUT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = dict(probes)
        self._components = components
        self._venues = venues
        self.readings = readings or OperatorReadings()
        self._monotonic = monotonic
        self._started = monotonic()
        self._timeout_s = timeout_s
        self._running: dict[str, asyncio.Task[object]] = {}  # a probe that has not finished yet, by dependency

    async def check(self) -> list[DependencyHealth]:
        return list(await asyncio.gather(*(self._check_one(n, p) for n, p in self._probes.items())))

    def components(self) -> list[ComponentHealth]:
        return self._components() if self._components is not None else []

    def venues(self) -> list[VenueHealth]:
        """Each exchange's venue feed (exchange mode; none in pw-host mode)."""
        return self._venues() if self._venues is not None else []

    async def writers(self) -> list[WriterHealth]:
        """The writer lease of each known exchange, read within the probe bound; none when Redis does not answer
        (its dependency status says why)."""
        if self.readings.writers is None:
            return []
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self.readings.writers()
        except (TimeoutError, OSError, ConnectionError) as exc:
            logger.debug("writer leases not read (%s)", type(exc).__name__)
            return []
        except Exception:  # a reading must never fail the status call
            logger.warning("writer leases not read", exc_info=True)
            return []

    def uptime_s(self) -> float:
        """Seconds since the service was made (the core makes it as it starts)."""
        return round(self._monotonic() - self._started, 3)

    async def _check_one(self, name: str, probe: Probe) -> DependencyHealth:
        started = time.perf_counter()
        running = self._running.get(name)
        if running is not None and not running.done():
            return DependencyHealth(name, False, 0.0, "an earlier probe has not finished")
        task = self._running[name] = asyncio.create_task(_call(probe), name=f"probe:{name}")
        task.add_done_callback(_retrieve)
        try:
            done, _ = await asyncio.wait({task}, timeout=self._timeout_s)
        except asyncio.CancelledError:  # the caller gave up (its deadline): the probe must not outlive the check
            task.cancel()
            raise
        if not done:
            task.cancel()  # it ends when it can; until then it stays in _running and is not started again
            return DependencyHealth(name, False, _ms_since(started), f"no answer within {self._timeout_s:g} s")
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is None:
            return DependencyHealth(name, True, _ms_since(started))
        if not isinstance(exc, OSError | ConnectionError):  # a probe must report, never raise
            logger.warning("health probe %s failed", name, exc_info=exc)
        return DependencyHealth(name, False, _ms_since(started), redact_text(f"{type(exc).__name__}: {exc}"))


async def _call(probe: Probe) -> object:
    return await probe()


def _retrieve(task: asyncio.Task[object]) -> None:
    """Mark the outcome of a probe retrieved (one given up on may end in an error nobody awaits)."""
    if not task.cancelled():
        task.exception()


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
