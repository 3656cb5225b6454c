"""Health as seeds 002 and 004 describe it (issue 17), against real cores and gateways.

- ``GetStatus`` (gRPC) and a gateway's ``/health``: ``uptime_seconds``; each dependency's state; in exchange
  mode every venue feed's connection state (``connecting``, ``connected``, ``reconnecting``, ``stopped``) and
  the time of its last message; in pw-host mode no venue at all (seed 002's mode-specific view).
- A pw-host core given exchange settings refuses to start with one line naming the variable (seed 000).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import httpx
import jsonschema
import pytest

from gateways.common.health import HEALTH_CACHE_TTL_S
from perseus.marketdata.v1 import (
    common_pb2,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
)
from tests.support.processes import Process, free_port, run_cli, running_core, running_gateway

pytestmark = pytest.mark.integration

WAIT_S = 20.0


def get_status(core: Process) -> md_pb2.GetStatusResponse:
    with grpc.insecure_channel(core.addr) as channel:
        reply: md_pb2.GetStatusResponse = md_grpc.MarketDataServiceStub(channel).GetStatus(
            md_pb2.GetStatusRequest(), timeout=5
        )
    return reply


def status_until(core: Process, check: object, what: str) -> md_pb2.GetStatusResponse:
    deadline = time.monotonic() + WAIT_S
    while True:
        reply = get_status(core)
        if check(reply):  # type: ignore[operator]
            return reply
        assert time.monotonic() < deadline, f"{what}: {reply}"
        time.sleep(0.2)


def health(gateway: Process) -> httpx.Response:
    return httpx.get(f"http://{gateway.addr}/health", timeout=5)


def venue_states(reply: md_pb2.GetStatusResponse) -> dict[str, int]:
    return {venue.exchange: venue.state for venue in reply.venues}


@pytest.fixture(scope="module")
def sim_core(migrated_env: dict[str, str]) -> Iterator[Process]:
    """An exchange core running the simulated exchange (it writes: it holds the sim writer lease)."""
    with running_core(migrated_env, PERSEUS_EXCHANGES="sim", PERSEUS_SIM_TRADES_PER_S="20") as process:
        yield process


def test_get_status_gives_uptime_and_each_venue_with_its_last_message(sim_core: Process) -> None:
    before_ms = int(time.time() * 1000)
    reply = status_until(
        sim_core,
        lambda r: (
            venue_states(r).get("sim") == md_pb2.VENUE_STATE_CONNECTED
            and r.venues[0].last_message_time.ToMilliseconds() >= before_ms
        ),
        "the sim venue connected, with a message since the test began",
    )
    assert reply.mode == common_pb2.RUNTIME_MODE_EXCHANGE
    assert [v.exchange for v in reply.venues] == list(reply.exchanges) == ["sim"]
    assert reply.venues[0].last_message_time.ToMilliseconds() <= int(time.time() * 1000)
    assert reply.uptime_seconds > 0
    later = get_status(sim_core)
    assert later.uptime_seconds > reply.uptime_seconds
    assert {d.name: d.state for d in reply.dependencies} == {
        "redis": md_pb2.DEPENDENCY_STATE_UP,
        "postgres": md_pb2.DEPENDENCY_STATE_UP,
    }


@pytest.mark.parametrize("kind", ["rest", "ws"])
def test_health_in_exchange_mode_shows_uptime_dependencies_and_venues(
    migrated_env: dict[str, str], sim_core: Process, kind: str
) -> None:
    status_until(sim_core, lambda r: venue_states(r).get("sim") == md_pb2.VENUE_STATE_CONNECTED, "sim connected")
    with running_gateway(kind, migrated_env, sim_core.addr) as gateway:  # type: ignore[arg-type]
        response = health(gateway)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["mode"] == "exchange"
        assert body["services"] == {"core": "up", "redis": "up", "postgres": "up"}
        assert isinstance(body["uptime_seconds"], float) and body["uptime_seconds"] >= 0
        assert body["core_uptime_seconds"] > 0
        sim = body["exchanges"]["sim"]
        assert (sim["state"], sim["connected"]) == ("connected", True)
        last = datetime.fromisoformat(sim["last_message_at"].replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - last).total_seconds()) < 30
        time.sleep(HEALTH_CACHE_TTL_S + 0.1)  # past the cached answer: the uptimes have grown
        again = health(gateway).json()
        assert again["uptime_seconds"] > body["uptime_seconds"]
        assert again["core_uptime_seconds"] > body["core_uptime_seconds"]


def test_a_standby_core_shows_its_venue_stopped(migrated_env: dict[str, str], sim_core: Process) -> None:
    """A second exchange core for the same exchange does not hold the writer lease: its feed is not running."""
    status_until(sim_core, lambda r: venue_states(r).get("sim") == md_pb2.VENUE_STATE_CONNECTED, "sim connected")
    with running_core(migrated_env, PERSEUS_EXCHANGES="sim", PERSEUS_INSTANCE_ID="standby") as standby:
        reply = get_status(standby)
        assert venue_states(reply) == {"sim": md_pb2.VENUE_STATE_STOPPED}
        assert not reply.venues[0].HasField("last_message_time")
        with running_gateway("rest", migrated_env, standby.addr) as gateway:
            body = health(gateway).json()
            assert body["exchanges"] == {"sim": {"state": "stopped", "connected": False, "last_message_at": None}}
            assert body["status"] == "ok"  # a standby is healthy


def test_a_venue_that_cannot_connect_is_reconnecting(migrated_env: dict[str, str]) -> None:
    nowhere = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    with running_core(
        migrated_env,
        PERSEUS_EXCHANGES="coinbase",
        PERSEUS_COINBASE_URL=nowhere,
        PERSEUS_REDIS_PREFIX=f"{migrated_env['PERSEUS_REDIS_PREFIX']}hv:",
    ) as core:
        reply = status_until(
            core,
            lambda r: venue_states(r).get("coinbase") == md_pb2.VENUE_STATE_RECONNECTING,
            "coinbase reconnecting",
        )
        assert not reply.venues[0].HasField("last_message_time")
        with running_gateway("rest", migrated_env, core.addr) as gateway:
            response = health(gateway)
            body = response.json()
            assert body["exchanges"]["coinbase"] == {
                "state": "reconnecting",
                "connected": False,
                "last_message_at": None,
            }
            assert response.status_code == 200  # the stores serve: a venue's state informs, it does not fail


def test_pw_host_has_no_venues_only_its_stores(migrated_env: dict[str, str]) -> None:
    with running_core(migrated_env, PERSEUS_MODE="pw-host") as core:
        reply = get_status(core)
        assert reply.mode == common_pb2.RUNTIME_MODE_PW_HOST
        assert (list(reply.venues), list(reply.exchanges)) == ([], [])
        assert reply.uptime_seconds > 0
        with running_gateway("rest", migrated_env, core.addr) as gateway:
            response = health(gateway)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["mode"] == "pw-host"
            assert "exchanges" not in body
            assert body["services"] == {"core": "up", "redis": "up", "postgres": "up"}
            assert body["core_uptime_seconds"] > 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PERSEUS_EXCHANGES", "sim"), ("PERSEUS_COINBASE_URL", "wss://proxy.example.invalid/?token=abc")],
)
def test_a_pw_host_core_with_exchange_settings_refuses_to_start(
    migrated_env: dict[str, str], variable: str, value: str
) -> None:
    env = {**migrated_env, "PERSEUS_MODE": "pw-host", "PERSEUS_CORE_ADDR": f"127.0.0.1:{free_port()}", variable: value}
    result = run_cli(["core"], env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0] and "pw-host" in lines[0]
    assert "token=abc" not in result.stderr + result.stdout


def test_a_pw_host_core_tolerates_shared_symbol_settings(migrated_env: dict[str, str]) -> None:
    """Symbols and simulated-exchange tuning start nothing alone: a settings file shared by every process may
    carry them."""
    with running_core(migrated_env, PERSEUS_MODE="pw-host", PERSEUS_SIM_SYMBOLS="BTC-USD") as core:
        assert get_status(core).mode == common_pb2.RUNTIME_MODE_PW_HOST


def test_the_served_openapi_documents_health_and_real_answers_match_it(
    migrated_env: dict[str, str], sim_core: Process
) -> None:
    """/health is in the REST gateway's OpenAPI document (open: no security), and the bodies a real gateway
    gives, in exchange mode (with exchanges) and without a core (503, mode null), validate against it."""
    status_until(sim_core, lambda r: venue_states(r).get("sim") == md_pb2.VENUE_STATE_CONNECTED, "sim connected")
    with running_gateway("rest", migrated_env, sim_core.addr) as gateway:
        document = httpx.get(f"http://{gateway.addr}/public/v1/openapi.json", timeout=5).json()
        operation = document["paths"]["/health"]["get"]
        assert operation["security"] == [] and set(operation["responses"]) == {"200", "503"}
        schema = {**document["components"]["schemas"]["Health"], "components": document["components"]}
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        body = health(gateway).json()
        assert "exchanges" in body
        validator.validate(body)
    with running_gateway("rest", migrated_env, f"127.0.0.1:{free_port()}") as coreless:
        response = health(coreless)
        assert response.status_code == 503
        assert response.json()["mode"] is None
        validator.validate(response.json())
