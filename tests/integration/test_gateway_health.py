"""`perseus rest` and `perseus ws` as users run them: real processes, the real core, real Redis and PostgreSQL.

Covers the shared gateway skeleton: /health (mode, per-service status, 200 or
503), X-Request-ID, the contract error body for unknown routes, /metrics,
startup failures (bad address, port in use) and that the WebSocket route is served.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from gateways.common.health import HEALTH_CACHE_TTL_S
from tests.support.processes import (
    ADDR_VARIABLE,
    Kind,
    Process,
    free_port,
    run_cli,
    running_core,
    running_gateway,
)

pytestmark = pytest.mark.integration

# /health must answer within about 2 s whatever the core does; a hang fails the request.
HEALTH_TIMEOUT_S = 3.0
CLOSE_INVALID_KEY = 4001


def get(process: Process, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"http://{process.addr}{path}", headers=headers, timeout=HEALTH_TIMEOUT_S)


def nothing_listening_addr() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def ws(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    with running_gateway("ws", migrated_env, core.addr) as process:
        yield process


@pytest.fixture(scope="module")
def coreless_rest(base_env: dict[str, str]) -> Iterator[Process]:
    """A REST gateway whose core address has nothing listening."""
    with running_gateway("rest", base_env, nothing_listening_addr()) as process:
        yield process


# --- with the core up --------------------------------------------------------------------------


def test_health_is_200_with_exchange_mode_and_every_service_up(rest: Process) -> None:
    response = get(rest, "/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["mode"] == "exchange"
    assert body["process"] == "rest"
    assert body["services"] == {"core": "up", "redis": "up", "postgres": "up"}
    assert isinstance(body["version"], str) and body["version"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["timestamp"])
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]


def test_health_echoes_the_clients_request_id(rest: Process) -> None:
    assert get(rest, "/health", **{"X-Request-ID": "it-health-1"}).headers["x-request-id"] == "it-health-1"


def test_an_insane_request_id_is_replaced(rest: Process) -> None:
    request_id = get(rest, "/health", **{"X-Request-ID": "has spaces;and=stuff"}).headers["x-request-id"]
    assert request_id and request_id != "has spaces;and=stuff"


def test_health_reports_pw_host_mode_then_degrades_when_that_core_stops(migrated_env: dict[str, str]) -> None:
    with running_core(migrated_env, PERSEUS_MODE="pw-host") as pw_core:
        with running_gateway("rest", migrated_env, pw_core.addr) as gateway:
            body = get(gateway, "/health").json()
            assert body["mode"] == "pw-host"
            assert body["services"] == {"core": "up", "redis": "up", "postgres": "up"}

            pw_core.stop()
            time.sleep(HEALTH_CACHE_TTL_S)  # the answer is cached for that long
            response = get(gateway, "/health")
            assert response.status_code == 503
            assert response.json()["services"] == {"core": "down", "redis": "up", "postgres": "unknown"}
            assert gateway.proc.poll() is None, "the gateway must keep running without its core"


@pytest.mark.parametrize("kind", ["rest", "ws"])
def test_orchestrator_probes_with_the_core_up_are_both_200(kind: Kind, request: pytest.FixtureRequest) -> None:
    gateway: Process = request.getfixturevalue(kind)
    assert get(gateway, "/livez").status_code == 200
    ready = get(gateway, "/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    assert ready.headers["cache-control"] == "no-store"


def test_ws_gateway_health(ws: Process) -> None:
    response = get(ws, "/health", **{"X-Request-ID": "it-ws-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["process"], body["mode"]) == ("ws", "exchange")
    assert body["services"] == {"core": "up", "redis": "up", "postgres": "up"}
    assert response.headers["x-request-id"] == "it-ws-1"


def test_ws_stream_without_a_key_closes_with_4001(ws: Process) -> None:
    """The stream itself is covered by test_ws_stream.py; here only that the route is served."""
    with ws_connect(f"ws://{ws.addr}/public/v1/stream", open_timeout=5) as connection:
        with pytest.raises(ConnectionClosed) as closed:
            connection.recv(timeout=15)  # a keyless connection has 5 s to send {"action":"auth"}
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CLOSE_INVALID_KEY


# --- without a core ------------------------------------------------------------------------------


def test_health_is_503_when_nothing_listens_at_the_core_address(coreless_rest: Process) -> None:
    response = get(coreless_rest, "/health", **{"X-Request-ID": "it-nocore"})
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["mode"] is None
    assert body["services"] == {"core": "down", "redis": "up", "postgres": "unknown"}
    assert response.headers["x-request-id"] == "it-nocore"
    assert "127.0.0.1" not in response.text and "Traceback" not in response.text
    # Still alive, and still answering.
    assert coreless_rest.proc.poll() is None
    assert get(coreless_rest, "/health").status_code == 503


def test_orchestrator_probes_without_a_core_live_but_not_ready(coreless_rest: Process) -> None:
    """A Kubernetes liveness probe must not restart a gateway because its core is away: /livez is 200 while
    /readyz takes it out of the Service with /health's 503 and body."""
    live = get(coreless_rest, "/livez", **{"X-Request-ID": "it-livez"})
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert live.headers["x-request-id"] == "it-livez"
    ready = get(coreless_rest, "/readyz")
    assert ready.status_code == 503
    assert ready.json()["services"] == {"core": "down", "redis": "up", "postgres": "unknown"}


def test_an_unknown_route_is_a_contract_404(coreless_rest: Process) -> None:
    response = get(coreless_rest, "/public/v1/no-such-thing", **{"X-Request-ID": "it-404"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"] == "it-404"
    body = response.json()
    assert body["status"] == 404
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["code"] == "NOT_FOUND"
    assert body["error"]["request_id"] == "it-404"


def test_an_unknown_route_gets_a_generated_request_id(coreless_rest: Process) -> None:
    response = get(coreless_rest, "/nope")
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"] != ""


def test_metrics_count_health_requests_per_route_and_status(coreless_rest: Process) -> None:
    get(coreless_rest, "/health")
    response = get(coreless_rest, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    counter = re.search(
        r'^perseus_http_requests_total\{(?=[^}]*route="/health")(?=[^}]*status="503")[^}]*\} (\d+(\.\d+)?)$',
        response.text,
        re.MULTILINE,
    )
    assert counter is not None, response.text
    assert float(counter.group(1)) >= 1
    assert "perseus_http_request_duration_seconds_bucket" in response.text


# --- startup failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rest", "ws"])
def test_a_bad_listen_address_exits_2_with_one_line_naming_the_variable(base_env: dict[str, str], kind: Kind) -> None:
    result = run_cli([kind], {**base_env, ADDR_VARIABLE[kind]: "x"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"perseus {kind}: {ADDR_VARIABLE[kind]}: must be host:port with a port from 1 to 65535 (got 'x')"]


def test_a_missing_redis_url_exits_2_naming_the_variable(base_env: dict[str, str]) -> None:
    result = run_cli(["rest"], {**base_env, "PERSEUS_REDIS_URL": ""})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["perseus rest: PERSEUS_REDIS_URL: is required and not set"]


def test_a_port_in_use_exits_non_zero_with_one_clear_line(base_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_cli(
            ["rest"], {**base_env, "PERSEUS_REST_ADDR": addr, "PERSEUS_CORE_ADDR": nothing_listening_addr()}
        )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"perseus rest: PERSEUS_REST_ADDR: cannot listen on {addr}")
    assert "in use" in lines[0]


@pytest.mark.parametrize("kind", ["rest", "ws"])
def test_an_unreachable_redis_stops_startup_with_one_line(base_env: dict[str, str], kind: Kind) -> None:
    result = run_cli([kind], {**base_env, "PERSEUS_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"perseus {kind}: PERSEUS_REDIS_URL: cannot reach Redis "
        "(ConnectionError: Error 111 connecting to 127.0.0.1:1. Connection refused)"
    ]
