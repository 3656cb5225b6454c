"""One keepalive setting read by the core and the gateways; the core permits what the clients send."""

from __future__ import annotations

import pytest

import perseus_sdk
from core.rpc.server import keepalive_options
from core.settings import Settings, SettingsError
from gateways.common.core_client import channel_options
from gateways.common.settings import GatewaySettings, GatewaySettingsError

CORE_ENV = {"PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0", "PERSEUS_DATABASE_URL": "postgresql://h/db"}
GATEWAY_ENV = {"PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0"}


@pytest.mark.parametrize(("raw", "expected"), [(None, 30.0), ("1", 1.0), ("0.5", 0.5)])
def test_core_and_gateways_read_the_same_variable(raw: str | None, expected: float) -> None:
    extra = {} if raw is None else {"PERSEUS_GRPC_KEEPALIVE_S": raw}
    assert Settings.from_env({**CORE_ENV, **extra}).grpc_keepalive_s == expected
    for process in ("rest", "ws"):
        assert GatewaySettings.from_env({**GATEWAY_ENV, **extra}, process=process).grpc_keepalive_s == expected


@pytest.mark.parametrize("raw", ["0", "-1", "nope", "0.01", "7200"])
def test_a_bad_keepalive_is_refused_by_name(raw: str) -> None:
    with pytest.raises(SettingsError, match="PERSEUS_GRPC_KEEPALIVE_S"):
        Settings.from_env({**CORE_ENV, "PERSEUS_GRPC_KEEPALIVE_S": raw})
    with pytest.raises(GatewaySettingsError, match="PERSEUS_GRPC_KEEPALIVE_S"):
        GatewaySettings.from_env({**GATEWAY_ENV, "PERSEUS_GRPC_KEEPALIVE_S": raw}, process="ws")


@pytest.mark.parametrize("keepalive_s", [0.5, 1.0, 30.0, 600.0])
def test_the_server_permits_every_interval_its_clients_ping_at(keepalive_s: float) -> None:
    server = dict(keepalive_options(keepalive_s))
    gateway = dict(channel_options(keepalive_s))
    sdk = perseus_sdk.channel_config(keepalive_s)
    permitted_ms = server["grpc.http2.min_ping_interval_without_data_ms"]
    assert server["grpc.keepalive_permit_without_calls"] == 1
    assert permitted_ms <= gateway["grpc.keepalive_time_ms"] / 2  # room for timer jitter
    assert gateway["grpc.keepalive_permit_without_calls"] == 1 and gateway["grpc.http2.max_pings_without_data"] == 0
    assert permitted_ms <= sdk._keepalive_time * 1000 / 2
    assert permitted_ms <= sdk._http2_min_sent_ping_interval_without_data * 1000


def test_metrics_address_unset_is_searched_and_set_is_explicit() -> None:
    unset = Settings.from_env(CORE_ENV)
    assert (unset.metrics_addr, unset.metrics_addr_explicit) == ("127.0.0.1:9464", False)
    given = Settings.from_env({**CORE_ENV, "PERSEUS_CORE_METRICS_ADDR": "127.0.0.1:9500"})
    assert (given.metrics_addr, given.metrics_addr_explicit) == ("127.0.0.1:9500", True)
    assert Settings.from_env({**CORE_ENV, "PERSEUS_CORE_METRICS_ADDR": ""}).metrics_addr == ""
