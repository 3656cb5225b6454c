"""The /health answer, built from what the probes saw; the probes never raise and never hang.

No server: the core and Redis are stand-ins.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import grpc
import pytest
from grpc import aio

from common.supervise import TaskSupervisor
from gateways.common import health as health_module
from gateways.common.errors import ServiceUnavailable
from gateways.common.health import build_health, check_health
from perseus.marketdata.v1 import common_pb2, market_data_service_pb2 as md_pb2

NOW = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
UP = md_pb2.DEPENDENCY_STATE_UP
DOWN = md_pb2.DEPENDENCY_STATE_DOWN


def status(
    mode: int = common_pb2.RUNTIME_MODE_EXCHANGE, redis: int = UP, postgres: int | None = UP
) -> md_pb2.GetStatusResponse:
    deps = [md_pb2.DependencyStatus(name="redis", state=redis, latency_ms=0.3, detail="ipv4:10.1.2.3:6379")]
    if postgres is not None:
        deps.append(md_pb2.DependencyStatus(name="postgres", state=postgres, detail="secret detail"))
    return md_pb2.GetStatusResponse(mode=mode, dependencies=deps, version="9.9.9")


def build(core_status: md_pb2.GetStatusResponse | None, redis_up: bool = True) -> tuple[int, dict[str, object]]:
    result = build_health(process="rest", version="1.2.3", core_status=core_status, gateway_redis_up=redis_up, now=NOW)
    return result.http_status, result.body


def test_all_up_is_200_ok() -> None:
    code, body = build(status())
    assert code == 200
    assert body == {
        "status": "ok",
        "mode": "exchange",
        "process": "rest",
        "version": "1.2.3",
        "uptime_seconds": 0.0,
        "core_uptime_seconds": 0.0,
        "services": {"core": "up", "redis": "up", "postgres": "up"},
        "components": {},
        "exchanges": {},
        "timestamp": "2025-01-02T03:04:05.678Z",
    }


def test_pw_host_mode() -> None:
    assert build(status(mode=common_pb2.RUNTIME_MODE_PW_HOST))[1]["mode"] == "pw-host"


def test_exchange_mode_shows_each_venue_and_a_reconnecting_one_keeps_200() -> None:
    core = status()
    core.uptime_seconds = 12.34567
    core.venues.add(exchange="sim", state=md_pb2.VENUE_STATE_CONNECTED).last_message_time.FromMilliseconds(
        1_735_787_045_678
    )
    core.venues.add(exchange="coinbase", state=md_pb2.VENUE_STATE_RECONNECTING)
    result = build_health(
        process="rest", version="1.2.3", core_status=core, gateway_redis_up=True, now=NOW, uptime_s=3.21
    )
    assert result.http_status == 200
    assert result.body["uptime_seconds"] == 3.21
    assert result.body["core_uptime_seconds"] == 12.346
    assert result.body["exchanges"] == {
        "sim": {"state": "connected", "connected": True, "last_message_at": "2025-01-02T03:04:05.678Z"},
        "coinbase": {"state": "reconnecting", "connected": False, "last_message_at": None},
    }


def test_pw_host_mode_has_no_exchanges_and_a_silent_core_no_core_uptime() -> None:
    body = build(status(mode=common_pb2.RUNTIME_MODE_PW_HOST))[1]
    assert "exchanges" not in body
    assert body["services"] == {"core": "up", "redis": "up", "postgres": "up"}
    assert build(None)[1]["core_uptime_seconds"] is None


def test_an_unspecified_mode_is_null() -> None:
    assert build(status(mode=common_pb2.RUNTIME_MODE_UNSPECIFIED))[1]["mode"] is None


def test_core_down_is_503_with_postgres_unknown_and_no_mode() -> None:
    code, body = build(None)
    assert code == 503
    assert body["status"] == "degraded"
    assert body["mode"] is None
    assert body["services"] == {"core": "down", "redis": "up", "postgres": "unknown"}


@pytest.mark.parametrize(
    ("core_status", "gateway_redis_up", "services"),
    [
        (status(postgres=DOWN), True, {"core": "up", "redis": "up", "postgres": "down"}),
        (status(postgres=None), True, {"core": "up", "redis": "up", "postgres": "unknown"}),
        (status(redis=DOWN), True, {"core": "up", "redis": "down", "postgres": "up"}),
        (status(), False, {"core": "up", "redis": "down", "postgres": "up"}),
    ],
)
def test_any_dependency_not_up_is_503(
    core_status: md_pb2.GetStatusResponse, gateway_redis_up: bool, services: dict[str, str]
) -> None:
    code, body = build(core_status, gateway_redis_up)
    assert (code, body["status"], body["services"]) == (503, "degraded", services)


def test_internal_details_never_reach_the_body() -> None:
    _, body = build(status(redis=DOWN, postgres=DOWN))
    text = str(body)
    assert "10.1.2.3" not in text and "secret" not in text and "latency" not in text


def with_components(**states: int) -> md_pb2.GetStatusResponse:
    reply = status()
    for name, state in states.items():
        reply.components.add(name=name.replace("_", "-"), state=state, detail="OSError: 10.1.2.3 refused", restarts=2)
    return reply


def test_every_core_component_is_named_and_a_degraded_one_is_503_without_its_detail() -> None:
    code, body = build(with_components(stream_hub=md_pb2.COMPONENT_STATE_UP))
    assert (code, body["components"]) == (200, {"core:stream-hub": "up"})
    code, body = build(
        with_components(stream_hub=md_pb2.COMPONENT_STATE_UP, price_updates=md_pb2.COMPONENT_STATE_DEGRADED)
    )
    assert (code, body["status"]) == (503, "degraded")
    assert body["services"] == {"core": "up", "redis": "up", "postgres": "up"}  # the stores are fine
    assert body["components"] == {"core:stream-hub": "up", "core:price-updates": "degraded"}
    assert "10.1.2.3" not in str(body) and "OSError" not in str(body) and "restarts" not in str(body)


async def test_a_degraded_gateway_task_is_503_named_after_the_gateway(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSupervisor(min_backoff_s=30.0, max_backoff_s=30.0)  # it stays degraded while we look

    async def refresher() -> None:
        raise OSError("slot refresh failed at 10.1.2.3")

    async def steady() -> None:
        await asyncio.Event().wait()

    tasks.spawn("slot-refresher", refresher)
    tasks.spawn("key-recheck", steady)
    try:
        async with asyncio.timeout(2.0):
            while not tasks.degraded():  # noqa: ASYNC110 - waiting for the supervisor's public state
                await asyncio.sleep(0.005)
        with caplog.at_level(logging.WARNING, logger="gateways.common.health"):
            result = await check_health(FakeCore(), ping_ok, process="ws", version="1", clock=lambda: NOW, tasks=tasks)
    finally:
        await tasks.aclose(1.0)
    assert (result.http_status, result.body["status"]) == (503, "degraded")
    assert result.body["components"] == {"ws:key-recheck": "up", "ws:slot-refresher": "degraded"}
    assert "10.1.2.3" not in str(result.body)
    assert "slot-refresher" in caplog.text and "10.1.2.3" in caplog.text  # the cause is in the log


class FakeCore:
    def __init__(self, answer: md_pb2.GetStatusResponse | BaseException | None = None, delay_s: float = 0.0) -> None:
        self.answer, self.delay_s = answer, delay_s
        self.calls: list[tuple[str | None, float | None]] = []

    async def get_status(
        self, *, request_id: str | None = None, timeout_s: float | None = None
    ) -> md_pb2.GetStatusResponse:
        self.calls.append((request_id, timeout_s))
        await asyncio.sleep(self.delay_s)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer or status()


async def ping_ok() -> bool:
    return True


async def ping_refused() -> bool:
    raise ConnectionRefusedError(111, "refused")


async def test_check_health_asks_the_core_with_a_short_deadline_and_the_request_id() -> None:
    core = FakeCore()
    result = await check_health(core, ping_ok, process="ws", version="1", request_id="r-1", clock=lambda: NOW)
    assert result.http_status == 200
    assert result.body["process"] == "ws"
    assert core.calls == [("r-1", health_module.CORE_STATUS_TIMEOUT_S)]
    assert health_module.CORE_STATUS_TIMEOUT_S < 2.0


@pytest.mark.parametrize(
    "failure",
    [
        ServiceUnavailable(),
        aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata()),
        OSError("boom"),
        ValueError("a bug in the client"),
    ],
)
async def test_a_failing_core_reads_as_down(failure: BaseException) -> None:
    result = await check_health(FakeCore(failure), ping_ok, process="rest", version="1", clock=lambda: NOW)
    assert result.http_status == 503
    assert result.body["services"] == {"core": "down", "redis": "up", "postgres": "unknown"}


async def test_a_refused_redis_reads_as_down() -> None:
    result = await check_health(FakeCore(), ping_refused, process="rest", version="1", clock=lambda: NOW)
    assert result.body["services"] == {"core": "up", "redis": "down", "postgres": "up"}


async def test_missing_clients_read_as_down() -> None:
    result = await check_health(None, None, process="rest", version="1", clock=lambda: NOW)
    assert result.body["services"] == {"core": "down", "redis": "down", "postgres": "unknown"}


async def test_hanging_probes_are_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_module, "CORE_PROBE_BOUND_S", 0.05)
    monkeypatch.setattr(health_module, "REDIS_PING_TIMEOUT_S", 0.05)

    async def ping_hangs() -> None:
        await asyncio.sleep(3600)

    async with asyncio.timeout(1.0):
        result = await check_health(FakeCore(delay_s=3600), ping_hangs, process="rest", version="1")
    assert result.body["services"] == {"core": "down", "redis": "down", "postgres": "unknown"}
