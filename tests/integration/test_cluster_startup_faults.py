"""Redis Cluster nodes down when Perseus starts (issue 15, "Bad input and faults").

The node ``PERSEUS_REDIS_URL`` names must answer (that is how a process learns the cluster); any *other* node
may be down. Every process then starts anyway, says once what is wrong, reports Redis down in ``/health``
while a slot is not served, and recovers by itself, with no restart, once the node is back.

A private 3-master / 3-replica :class:`LocalRedisCluster` (2 s node timeout, ``cluster-require-full-coverage``
left at its default ``yes``): a master killed together with its replica leaves its slots uncovered, and then
every node answers ``CLUSTERDOWN`` to every keyed command (``PING`` and ``CLUSTER INFO`` still answer, which
is why a plain ``PING`` is not a health probe on a cluster).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from grpc import aio

from common import redis_clients
from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.domain.channels import Channel, ChannelFamily
from perseus.marketdata.v1 import (
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
    prices_pb2,
    stream_service_pb2 as pb,
    stream_service_pb2_grpc as stream_grpc,
)
from perseus_cli.devstack.redis_cluster import ClusterNode, LocalRedisCluster
from tests.support.processes import Process, running_core, running_gateway
from tests.support.ws import make_key

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cluster-startup-faults"), pytest.mark.timeout(150)]

WAIT_S = 30.0  # node timeout 2 s, then the clients' retries: a few seconds in practice


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    """A cluster of this module's own: its nodes are killed and restarted."""
    with LocalRedisCluster() as local:
        yield local


def node_id(node: ClusterNode) -> str:
    client = node.client()
    try:
        raw = client.execute_command("CLUSTER", "MYID")
    finally:
        client.close()
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def replicas_of(cluster: LocalRedisCluster, master: ClusterNode) -> list[ClusterNode]:
    found = []
    for node in cluster.nodes:
        if not node.alive or node is master:
            continue
        client = node.client()
        try:
            role = client.execute_command("ROLE")
        finally:
            client.close()
        if role[0] in (b"slave", "slave") and int(role[2]) == master.port:
            found.append(node)
    return found


def slots_of(node: ClusterNode) -> str:
    """``a-b`` for the one range a master of the local cluster owns."""
    client = node.client()
    try:
        ranges = [r[:2] for r in client.execute_command("CLUSTER", "SLOTS") if int(r[2][1]) == node.port]
    finally:
        client.close()
    [(start, end)] = ranges
    return f"{start}-{end}"


def wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def health(gateway: Process) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://{gateway.addr}/health", timeout=10.0)
    return response.status_code, response.json()


def redis_health(gateway: Process) -> str:
    return str(health(gateway)[1]["services"]["redis"])


async def core_redis_state(core: Process) -> tuple[int, str]:
    async with aio.insecure_channel(core.addr) as channel:
        status = await md_grpc.MarketDataServiceStub(channel).GetStatus(md_pb2.GetStatusRequest(), timeout=5.0)
    [redis] = [d for d in status.dependencies if d.name == "redis"]
    return redis.state, redis.detail


def rest_latest(rest: Process, key: str) -> int:
    response = httpx.get(
        f"http://{rest.addr}/public/v1/prices/latest",
        params={"symbols": "BTC-USD"},
        headers={"X-API-Key": key},
        timeout=10.0,
    )
    return response.status_code


def limiter_keys(cluster: LocalRedisCluster, prefix: str) -> list[bytes]:
    found: list[bytes] = []
    for master in cluster.masters():
        client = master.client()
        try:
            found.extend(client.keys(f"{prefix}ratelimit:*"))
        finally:
            client.close()
    return found


async def exchange_names(core: Process) -> list[str]:
    async with aio.insecure_channel(core.addr) as channel:
        reply = await md_grpc.MarketDataServiceStub(channel).ListExchanges(md_pb2.ListExchangesRequest(), timeout=5.0)
    return [exchange.name for exchange in reply.exchanges]


def restore(cluster: LocalRedisCluster, nodes: list[ClusterNode]) -> None:
    for node in nodes:
        cluster.restart_node(node)
    wait_for(lambda: all(cluster.cluster_info(n)["cluster_state"] == "ok" for n in cluster.nodes), "cluster ok")


async def test_uncovered_slots_at_startup_start_anyway_say_so_once_and_recover(
    migrated_env: dict[str, str], cluster: LocalRedisCluster
) -> None:
    url_node, victim = cluster.masters()[0], cluster.masters()[1]
    victims = [*replicas_of(cluster, victim), victim]
    slots = slots_of(victim)
    prefix = f"perseus-startup-faults-{secrets.token_hex(3)}:"
    env = {**migrated_env, "PERSEUS_REDIS_URL": url_node.url, "PERSEUS_REDIS_PREFIX": prefix}
    key = make_key(env, "free")
    for node in victims:
        cluster.kill(node)
    try:
        wait_for(lambda: cluster.cluster_info(url_node)["cluster_state"] == "fail", "the cluster says fail")
        line = f"Redis Cluster: slots {slots} are not covered (node 127.0.0.1:{victim.port} down?)"
        with (
            running_core(env) as core,
            running_core({**env, "PERSEUS_MODE": "pw-host"}) as pw_host,
            running_gateway("rest", env, core.addr) as rest,
            running_gateway("ws", env, core.addr) as ws,
        ):
            # started anyway: each says what is wrong, once, and reports Redis down
            for process in (core, pw_host, rest, ws):
                wait_for(lambda p=process: line in p.output(), f"the uncovered slots line of {process.addr}")
            for gateway in (rest, ws):
                status, body = health(gateway)
                assert (status, body["services"]["redis"], body["services"]["postgres"]) == (503, "down", "up"), body
            for a_core in (core, pw_host):
                state, detail = await core_redis_state(a_core)
                assert state != md_pb2.DEPENDENCY_STATE_UP and line in detail, detail
            assert "sim" in await exchange_names(core)  # what PostgreSQL holds is served meanwhile
            # answered from PostgreSQL (limited per instance), at once once the outage has lasted a few seconds
            wait_for(lambda: rest_latest(rest, key) < 500, "a REST read answered during the outage", timeout=15.0)
            assert max(rest_latest(rest, key) for _ in range(5)) < 500
            assert limiter_keys(cluster, prefix) == []

            await asyncio.sleep(3.0)  # the watch asks every second: still one line per outage
            for process in (core, pw_host, rest, ws):
                assert process.output().count(f"common.cluster_watch: {line}") == 1, process.output()

            # the node is back: everything recovers by itself
            restore(cluster, victims)
            for gateway in (rest, ws):
                wait_for(lambda g=gateway: redis_health(g) == "up", f"/health of {gateway.addr} says Redis up")
            for process in (core, pw_host, rest, ws):
                wait_for(
                    lambda p=process: "every slot is served again" in p.output(),
                    f"the recovery line of {process.addr}",
                )
            for a_core in (core, pw_host):
                assert (await core_redis_state(a_core))[0] == md_pb2.DEPENDENCY_STATE_UP
            wait_for(lambda: "this instance is the writer" in core.output(), "the sim writer takes its lease")
            await stream_flows(core, url_node.url, prefix)
            # the REST limiter counts in Redis again (shared by every gateway)
            wait_for(lambda: rest_latest(rest, key) < 500 and limiter_keys(cluster, prefix) != [], "a Redis counter")
            await stream_flows(pw_host, url_node.url, prefix)
    finally:
        restore(cluster, [n for n in victims if not n.alive])


async def stream_flows(core: Process, url: str, prefix: str) -> None:
    """A Subscribe stream on the core delivers what is published now (the hub follows the cluster again)."""
    channel = Channel(ChannelFamily.PRICES, "coinbase", f"F{secrets.token_hex(3).upper()}-USD", None)
    name = f"prices:coinbase:{channel.symbol}"
    bus = redis_clients.pipeline(url, "cluster", client_name="startup-faults-publisher")
    publisher = EventPublisher(bus, RedisKeys(prefix))
    try:
        async with aio.insecure_channel(core.addr) as grpc_channel:
            call = stream_grpc.StreamServiceStub(grpc_channel).Subscribe(pb.SubscribeRequest(channels=[name]))
            async with asyncio.timeout(WAIT_S):
                first = await call.read()
                assert first.WhichOneof("kind") == "subscribed"
                price = 0
                while True:
                    price += 1
                    feed = prices_pb2.PriceFeed(symbol=channel.symbol, price=str(price), source="coinbase")
                    event = pb.StreamEvent(channel=name, price_update=feed).SerializeToString()
                    await publisher.publish([Event(channel, event)])
                    try:
                        async with asyncio.timeout(0.5):
                            response = await call.read()
                    except TimeoutError:
                        continue
                    if response.WhichOneof("kind") in ("event", "events"):
                        break
            call.cancel()
    finally:
        await bus.aclose()


async def test_a_replica_down_at_startup_is_said_once_and_redis_stays_up(
    migrated_env: dict[str, str], cluster: LocalRedisCluster
) -> None:
    url_node = cluster.masters()[0]
    [replica] = replicas_of(cluster, cluster.masters()[2])
    env = {**migrated_env, "PERSEUS_REDIS_URL": url_node.url}
    cluster.kill(replica)
    try:
        line = f"Redis Cluster: cannot connect to node 127.0.0.1:{replica.port} (it serves no slots"
        wait_for(lambda: cluster.cluster_info(url_node)["cluster_nodes_fail"] != "0", "the replica is marked failed")
        with running_core(env) as core, running_gateway("rest", env, core.addr) as rest:
            for process in (core, rest):
                wait_for(lambda p=process: line in p.output(), f"the replica line of {process.addr}")
            _, body = health(rest)
            assert body["services"]["redis"] == "up", body
            assert (await core_redis_state(core))[0] == md_pb2.DEPENDENCY_STATE_UP
            restore(cluster, [replica])
            for process in (core, rest):
                wait_for(lambda p=process: "every node answers again" in p.output(), "the recovery line")
                assert process.output().count(f"common.cluster_watch: {line}") == 1, process.output()
    finally:
        restore(cluster, [replica] if not replica.alive else [])


async def test_a_master_down_at_startup_before_its_replica_takes_over(
    migrated_env: dict[str, str], cluster: LocalRedisCluster
) -> None:
    """The window between a master's death and its replica's promotion (a few seconds): the processes started
    in it serve, and say Redis is up once the replica has taken over."""
    url_node, victim = cluster.masters()[0], cluster.masters()[2]
    env = {**migrated_env, "PERSEUS_REDIS_URL": url_node.url}
    cluster.kill(victim)
    try:
        with running_core(env) as core, running_gateway("rest", env, core.addr) as rest:
            assert core.proc.poll() is None and rest.proc.poll() is None
            wait_for(lambda: redis_health(rest) == "up", "/health says Redis up after the failover")
            assert (await core_redis_state(core))[0] == md_pb2.DEPENDENCY_STATE_UP
            wait_for(lambda: "this instance is the writer" in core.output(), "the sim writer takes its lease")
            # said once or twice (the cluster may say fail for a moment before the promotion), never per command
            assert core.output().count("common.cluster_watch: Redis Cluster: slots") <= 2, core.output()
            wait_for(
                lambda: f"cannot connect to node 127.0.0.1:{victim.port} (it serves no slots" in core.output(),
                "the old master is said to be down",
            )
    finally:
        wait_for(lambda: len(cluster.masters()) == 3, "a replica took over")
        restore(cluster, [victim])
