"""The ``/health`` answer of a gateway: the core's mode and status, and the gateway's own Redis.

:func:`build_health` is pure: it turns what the probes saw into the body and
the HTTP status. :func:`check_health` runs the probes concurrently, each with
its own short bound, so the answer never takes much more than
:data:`CORE_STATUS_TIMEOUT_S`, and never raises: a probe that fails, for any
reason, reports its service down. The body never carries exception text or
addresses; the causes go to the log.

Status is 200 ("ok") only when the core answered, every dependency is up and
no component is degraded; otherwise 503 ("degraded"). ``services.redis`` is
down when either the gateway or the core cannot reach Redis.
``services.postgres`` comes from the core, so it is "unknown" while the core
does not answer, and ``mode`` is then null.

``uptime_seconds`` is how long this gateway process has run, ``core_uptime_seconds`` the core's (null while
it does not answer). In ``exchange`` mode, ``exchanges`` gives each venue feed of the core that answered:
its ``state`` (``connecting``, ``connected``, ``reconnecting``, ``stopped``: a standby core that does not hold
the exchange's writer lease shows ``stopped``), ``connected`` and ``last_message_at`` (ISO-8601 UTC, null
before the first message). A ``pw-host`` core runs no venue, so its answer has no ``exchanges``: only its
stores (seed 002's mode-specific view). Venue states inform; they do not change the HTTP status (a venue that
reconnects does not make the gateway unable to serve what is stored).

``components`` names every long-lived task, ``"up"`` or ``"degraded"`` (it
ended unexpectedly and waits for its restart): the core's, from ``GetStatus``,
as ``core:<name>``, and the gateway's own (its :class:`TaskSupervisor`) as
``<process>:<name>``. Only names and states: why a task is degraded goes to the
log, never into the body.

:class:`HealthCache` keeps one answer for :data:`HEALTH_CACHE_TTL_S` and lets
concurrent requests share the probe in flight, so a flood of ``/health``
requests costs at most about one core call and one Redis ping per second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

import grpc
from redis.exceptions import RedisClusterException, RedisError

from common.supervise import TaskSupervisor
from gateways.common.errors import ApiError
from perseus.marketdata.v1 import common_pb2, market_data_service_pb2

logger = logging.getLogger(__name__)

CORE_STATUS_TIMEOUT_S = 1.5
REDIS_PING_TIMEOUT_S = 1.0
# A little slack over the gRPC deadline, in case the channel itself stalls.
CORE_PROBE_BOUND_S = CORE_STATUS_TIMEOUT_S + 0.2

# How long one answer is served again: short enough for orchestrators to see a change at once.
HEALTH_CACHE_TTL_S = 1.0

HTTP_OK = 200
HTTP_UNAVAILABLE = 503
UP: Final = "up"
DOWN: Final = "down"
UNKNOWN: Final = "unknown"
DEGRADED: Final = "degraded"

ServiceState = Literal["up", "down", "unknown"]
ComponentState = Literal["up", "degraded"]
MODE_NAMES: dict[int, str] = {
    common_pb2.RUNTIME_MODE_EXCHANGE: "exchange",
    common_pb2.RUNTIME_MODE_PW_HOST: "pw-host",
}
CORE_DEPENDENCIES = ("redis", "postgres")
VENUE_STATE_NAMES: dict[int, str] = {
    market_data_service_pb2.VENUE_STATE_CONNECTING: "connecting",
    market_data_service_pb2.VENUE_STATE_CONNECTED: "connected",
    market_data_service_pb2.VENUE_STATE_RECONNECTING: "reconnecting",
    market_data_service_pb2.VENUE_STATE_STOPPED: "stopped",
}


class StatusSource(Protocol):
    """What health needs from the core client."""

    async def get_status(
        self, *, request_id: str | None = None, timeout_s: float | None = None
    ) -> market_data_service_pb2.GetStatusResponse: ...


RedisPing = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Health:
    http_status: int
    body: dict[str, object]


def build_health(
    *,
    process: str,
    version: str,
    core_status: market_data_service_pb2.GetStatusResponse | None,
    gateway_redis_up: bool,
    now: datetime,
    gateway_degraded: Iterable[str] = (),
    gateway_tasks: Iterable[str] = (),
    uptime_s: float = 0.0,
) -> Health:
    """The health body and status from what the probes saw (``core_status`` None: the core did not answer)."""
    core_deps: dict[str, ServiceState] = {}
    if core_status is not None:
        for dependency in core_status.dependencies:
            if dependency.name in CORE_DEPENDENCIES:
                up = dependency.state == market_data_service_pb2.DEPENDENCY_STATE_UP
                core_deps[dependency.name] = UP if up else DOWN
    redis_up = gateway_redis_up and core_deps.get("redis", UP) == UP
    services: dict[str, ServiceState] = {
        "core": UP if core_status is not None else DOWN,
        "redis": UP if redis_up else DOWN,
        "postgres": core_deps.get("postgres", UNKNOWN),
    }
    components: dict[str, ComponentState] = {}
    if core_status is not None:
        for component in core_status.components:
            up = component.state == market_data_service_pb2.COMPONENT_STATE_UP
            components[f"core:{component.name}"] = UP if up else DEGRADED
    degraded = set(gateway_degraded)
    for name in sorted({*gateway_tasks, *degraded}):
        components[f"{process}:{name}"] = DEGRADED if name in degraded else UP
    healthy = all(state == UP for state in services.values()) and all(s == UP for s in components.values())
    mode = MODE_NAMES.get(core_status.mode) if core_status is not None else None
    body: dict[str, object] = {
        "status": "ok" if healthy else "degraded",
        "mode": mode,
        "process": process,
        "version": version,
        "uptime_seconds": round(uptime_s, 3),
        "core_uptime_seconds": round(core_status.uptime_seconds, 3) if core_status is not None else None,
        "services": services,
        "components": components,
    }
    if core_status is not None and core_status.mode == common_pb2.RUNTIME_MODE_EXCHANGE:
        body["exchanges"] = {venue.exchange: _venue(venue) for venue in core_status.venues}
    body["timestamp"] = _iso_utc(now)
    return Health(HTTP_OK if healthy else HTTP_UNAVAILABLE, body)


def _venue(venue: market_data_service_pb2.VenueStatus) -> dict[str, object]:
    state = VENUE_STATE_NAMES.get(venue.state, UNKNOWN)
    last = None
    if venue.HasField("last_message_time"):
        last = _iso_utc(venue.last_message_time.ToDatetime(tzinfo=UTC))
    return {"state": state, "connected": state == "connected", "last_message_at": last}


async def check_health(
    core: StatusSource | None,
    redis_ping: RedisPing | None,
    *,
    process: str,
    version: str,
    request_id: str | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    tasks: TaskSupervisor | None = None,
    started: float | None = None,
) -> Health:
    """Probe the core and Redis concurrently and build the answer; never raises, never hangs.

    ``tasks``: the gateway's own supervised tasks, shown as components; ``started``: when the gateway started
    (``time.monotonic()``), for ``uptime_seconds``."""
    core_status, redis_up = await asyncio.gather(_probe_core(core, request_id), _probe_redis(redis_ping))
    degraded = tasks.degraded() if tasks is not None else {}
    for name, problem in sorted(degraded.items()):
        logger.warning("health: task %s is degraded (%s)", name, problem)
    if core_status is not None:
        for component in core_status.components:
            if component.state != market_data_service_pb2.COMPONENT_STATE_UP:
                logger.warning("health: core task %s is degraded (%s)", component.name, component.detail)
    return build_health(
        process=process,
        version=version,
        core_status=core_status,
        gateway_redis_up=redis_up,
        now=clock(),
        gateway_degraded=degraded,
        gateway_tasks=tasks.restarts() if tasks is not None else (),
        uptime_s=time.monotonic() - started if started is not None else 0.0,
    )


class HealthCache:
    """The last :class:`Health` for ``ttl_s`` seconds, and one shared probe while none is fresh.

    Every caller that finds no fresh answer awaits the same task (shielded, so a
    caller that goes away does not cancel it for the others); the task stores its
    answer when it ends. ``check_health`` never raises, so a failed probe is cached
    like any other answer: a flood during an outage does not hammer the
    dependencies either.
    """

    def __init__(self, ttl_s: float = HEALTH_CACHE_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._answer: Health | None = None
        self._expires = 0.0
        self._probe: asyncio.Task[Health] | None = None
        self.hits = self.misses = 0  # answers served again / requests that waited for a probe (/metrics)

    def counts(self) -> tuple[int, int]:
        return self.hits, self.misses

    async def get(self, probe: Callable[[], Awaitable[Health]]) -> Health:
        if self._answer is not None and self._clock() < self._expires:
            self.hits += 1
            return self._answer
        self.misses += 1
        if self._probe is None:
            self._probe = asyncio.ensure_future(self._refresh(probe))
        return await asyncio.shield(self._probe)

    async def _refresh(self, probe: Callable[[], Awaitable[Health]]) -> Health:
        try:
            answer = await probe()
            self._answer, self._expires = answer, self._clock() + self._ttl_s
            return answer
        finally:
            self._probe = None


async def _probe_core(
    core: StatusSource | None, request_id: str | None
) -> market_data_service_pb2.GetStatusResponse | None:
    if core is None:
        return None
    try:
        async with asyncio.timeout(CORE_PROBE_BOUND_S):
            return await core.get_status(request_id=request_id, timeout_s=CORE_STATUS_TIMEOUT_S)
    except (ApiError, TimeoutError, grpc.RpcError, OSError) as exc:
        logger.warning("health: core status failed (%s)", _cause(exc))
    except Exception:  # health must report, never raise: any other failure means "down"
        logger.exception("health: core status probe crashed")
    return None


async def _probe_redis(ping: RedisPing | None) -> bool:
    if ping is None:
        return False
    try:
        async with asyncio.timeout(REDIS_PING_TIMEOUT_S):
            await ping()
    except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:  # the last: a cluster none answers
        logger.warning("health: Redis ping failed (%s)", type(exc).__name__)
        return False
    except Exception:  # health must report, never raise: any other failure means "down"
        logger.exception("health: Redis probe crashed")
        return False
    return True


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    code = getattr(cause, "code", None)
    status = code() if callable(code) else None
    return status.name if isinstance(status, grpc.StatusCode) else type(cause).__name__


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
