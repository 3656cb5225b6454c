"""`perseus core` as a user runs it: a real process against real Redis and PostgreSQL."""

from __future__ import annotations

import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import perseus_sdk
from perseus.marketdata.v1 import (
    common_pb2,
    ingest_service_pb2,
    ingest_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
    market_pb2,
    prices_pb2,
)
from tests.support.databases import scratch_database
from tests.support.processes import Process, free_port, run_cli, running_core

pytestmark = pytest.mark.integration


def test_health_is_serving_for_the_server_and_each_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in (
        "",
        *(f"perseus.marketdata.v1.{name}" for name in ("MarketDataService", "IngestService", "KeyService")),
    ):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_is_off_unless_asked_for(channel: grpc.Channel, migrated_env: dict[str, str]) -> None:
    """PERSEUS_CORE_REFLECTION=1 serves it (issue 16; with a service token: tests/integration/test_core_auth.py)."""
    request = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    with pytest.raises(grpc.RpcError) as caught:
        list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(request, timeout=2))
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    with running_core(migrated_env, PERSEUS_CORE_REFLECTION="1") as process, grpc.insecure_channel(process.addr) as on:
        stub = reflection_pb2_grpc.ServerReflectionStub(on)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=2)
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"perseus.marketdata.v1.MarketDataService", "grpc.health.v1.Health"} <= names


def test_list_exchanges_through_a_grpcio_stub(channel: grpc.Channel) -> None:
    reply = md_grpc.MarketDataServiceStub(channel).ListExchanges(md_pb2.ListExchangesRequest(), timeout=2)
    by_name = {e.name: e for e in reply.exchanges}
    assert {"sim", "coinbase", "binance", "kraken"} <= set(by_name)
    assert by_name["sim"].simulated and not by_name["coinbase"].simulated
    assert by_name["coinbase"].status == market_pb2.EXCHANGE_STATUS_OFFLINE  # no heartbeat yet


async def test_list_exchanges_and_status_through_the_betterproto_sdk(core: Process) -> None:
    async with perseus_sdk.connect(core.addr) as sdk_channel:
        market = perseus_sdk.MarketDataServiceStub(sdk_channel)
        exchanges = await market.list_exchanges(perseus_sdk.ListExchangesRequest(), timeout=2)
        status = await market.get_status(perseus_sdk.GetStatusRequest(), timeout=2)
    assert "sim" in {e.name for e in exchanges.exchanges}
    assert status.mode == perseus_sdk.RuntimeMode.EXCHANGE
    assert {d.name: d.state for d in status.dependencies} == {
        "redis": perseus_sdk.DependencyState.UP,
        "postgres": perseus_sdk.DependencyState.UP,
    }


def test_the_request_id_comes_back_in_trailing_metadata(channel: grpc.Channel) -> None:
    _, call = md_grpc.MarketDataServiceStub(channel).GetStatus.with_call(
        md_pb2.GetStatusRequest(), metadata=(("x-request-id", "abc-123"),), timeout=2
    )
    assert ("x-request-id", "abc-123") in tuple(call.trailing_metadata())


def test_pw_host_reports_its_mode_and_refuses_ingest(migrated_env: dict[str, str]) -> None:
    with running_core(migrated_env, PERSEUS_MODE="pw-host") as process, grpc.insecure_channel(process.addr) as channel:
        status = md_grpc.MarketDataServiceStub(channel).GetStatus(md_pb2.GetStatusRequest(), timeout=2)
        assert status.mode == common_pb2.RUNTIME_MODE_PW_HOST
        assert list(status.exchanges) == []
        feed = prices_pb2.PriceFeed(symbol="BTC-USD", price="1", volume="1", source="x")
        with pytest.raises(grpc.RpcError) as caught:
            ingest_service_pb2_grpc.IngestServiceStub(channel).IngestPrices(
                ingest_service_pb2.IngestPricesRequest(feeds=[feed]), timeout=2
            )
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "pw-host" in caught.value.details()


def test_sigterm_drains_and_exits_cleanly(migrated_env: dict[str, str]) -> None:
    with running_core(migrated_env) as process:
        assert process.stop() == 0
        assert "core stopped" in process.output()


def _fails_with_one_line(args: list[str], env: dict[str, str], expected: str) -> None:
    result = run_cli(args, env, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("perseus core: ")]
    assert len(errors) == 1, result.stderr  # the log may precede it, but the error is one line
    assert expected in errors[0]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"PERSEUS_MODE": "turbo"}, "PERSEUS_MODE"),
        ({"PERSEUS_REDIS_URL": "redis://:6379:1"}, "PERSEUS_REDIS_URL"),
        ({"PERSEUS_REDIS_URL": "redis://127.0.0.1:1/0"}, "PERSEUS_REDIS_URL: cannot reach Redis"),
        ({"PERSEUS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}, "PERSEUS_DATABASE_URL"),
    ],
)
def test_bad_configuration_stops_startup_with_one_line(
    migrated_env: dict[str, str], override: dict[str, str], expected: str
) -> None:
    _fails_with_one_line(
        ["core"], {**migrated_env, "PERSEUS_CORE_ADDR": f"127.0.0.1:{free_port()}", **override}, expected
    )


def test_a_port_in_use_stops_startup_with_one_line(migrated_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        _fails_with_one_line(["core"], {**migrated_env, "PERSEUS_CORE_ADDR": addr}, "PERSEUS_CORE_ADDR")


def test_core_metrics_cover_grpc_calls(migrated_env: dict[str, str]) -> None:
    import httpx

    metrics_addr = f"127.0.0.1:{free_port()}"
    with running_core(migrated_env, PERSEUS_CORE_METRICS_ADDR=metrics_addr) as process:
        with grpc.insecure_channel(process.addr) as channel:
            md_grpc.MarketDataServiceStub(channel).ListExchanges(md_pb2.ListExchangesRequest(), timeout=2)
        body = httpx.get(f"http://{metrics_addr}/metrics", timeout=2).text
    assert (
        'perseus_grpc_requests_total{code="OK",method="/perseus.marketdata.v1.MarketDataService/ListExchanges"} 1.0'
        in body
    )


def test_key_service_authenticates_created_keys_and_refuses_revoked_ones(
    migrated_env: dict[str, str], channel: grpc.Channel
) -> None:
    created = run_cli(["keys", "create", "--tier", "pro", "--name", "test"], migrated_env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    stub = key_service_pb2_grpc.KeyServiceStub(channel)

    reply = stub.AuthenticateKey(key_service_pb2.AuthenticateKeyRequest(key=key), timeout=2)
    assert reply.api_key.tier == key_service_pb2.KEY_TIER_PRO
    assert reply.api_key.rate_limit_per_minute == 10_000
    assert key not in str(reply)

    for bad in (key[:-1] + ("A" if key[-1] != "A" else "B"), "", "x" * 10_000):
        with pytest.raises(grpc.RpcError) as caught:
            stub.AuthenticateKey(key_service_pb2.AuthenticateKeyRequest(key=bad), timeout=2)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED

    assert run_cli(["keys", "revoke", reply.api_key.prefix], migrated_env).returncode == 0
    with pytest.raises(grpc.RpcError) as caught:
        stub.AuthenticateKey(key_service_pb2.AuthenticateKeyRequest(key=key), timeout=2)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_an_unmigrated_database_stops_startup_with_one_line(
    admin_database_url: str, test_run_id: str, redis_url: str
) -> None:
    async with scratch_database(admin_database_url, f"perseus_test_{test_run_id}_empty") as url:
        _fails_with_one_line(
            ["core"],
            {"PERSEUS_DATABASE_URL": url, "PERSEUS_REDIS_URL": redis_url, "PERSEUS_CORE_METRICS_ADDR": ""},
            "run `perseus migrate`",
        )
