"""A gateway's services are built once when its server starts; before that, nothing pretends they exist."""

from __future__ import annotations

import asyncio

import pytest
from sanic import Sanic

from gateways.common.services import GatewayServices, RedisUnreachable
from gateways.common.settings import GatewaySettings
from gateways.rest.app import create_app as create_rest_app
from gateways.ws.app import create_app as create_ws_app
from gateways.ws.upstream import MAX_PENDING_REQUESTS, Outbox
from perseus.marketdata.v1 import stream_service_pb2 as pb
from perseus_cli.devstack.processes import free_port

ENV = {"PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0"}


@pytest.fixture(autouse=True)
def apps_may_share_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sanic refuses a second app of one name in a process unless in test mode (each test builds its own)."""
    monkeypatch.setattr(Sanic, "test_mode", True)


@pytest.mark.parametrize(("create", "process"), [(create_rest_app, "rest"), (create_ws_app, "ws")])
def test_services_exist_only_once_the_server_starts(create: object, process: str) -> None:
    app = create(GatewaySettings.from_env(ENV, process=process))  # type: ignore[operator]
    assert not app.ctx.serving
    with pytest.raises(RuntimeError, match="when its server starts"):
        app.ctx.services  # noqa: B018


def test_ws_metrics_read_zero_before_the_server_starts() -> None:
    app = create_ws_app(GatewaySettings.from_env(ENV, process="ws"))
    text = app.ctx.metrics.render().decode()
    assert "perseus_ws_connections 0.0" in text and "perseus_ws_channels 0.0" in text


def test_a_full_outbox_starts_over_empty() -> None:
    outbox = Outbox()
    for _ in range(MAX_PENDING_REQUESTS):
        outbox.put(pb.MultiplexRequest())
    outbox.put(pb.MultiplexRequest())  # the core reads nothing: a new, empty queue takes the next requests
    assert outbox.queue.qsize() == 0
    fresh = outbox.renew()
    assert fresh is outbox.queue and isinstance(fresh, asyncio.Queue)


async def test_services_do_not_open_without_knowing_whether_redis_is_a_cluster() -> None:
    """The runner checked Redis a moment before; gone since, the start fails with the runner's own line."""
    env = {"PERSEUS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with pytest.raises(RedisUnreachable, match=r"^PERSEUS_REDIS_URL: cannot reach Redis \(ConnectionError\)$"):
        await GatewayServices.open(GatewaySettings.from_env(env, process="rest"))
