"""``perseus up --cluster`` end to end: a fresh data dir, no Redis or PostgreSQL URL, the whole topology.

One real stack serves the module, as a developer would start it: ``perseus up --cluster`` with only the
first address of each kind given (free ports), the rest chosen and printed by it. The tests read the
printed summary and check, in order:

- every address is printed, each gateway on a port of its own, and every process answers: gRPC health
  SERVING on both cores, ``/livez`` on each gateway; the Redis Cluster it printed has 6 nodes and every
  slot covered; the printed PostgreSQL replica is a standby in recovery; the cores were given it;
- a real REST read (latest ``BTC-USD`` price, from the ``sim`` writer through the cluster) through each
  REST gateway with the printed dev key;
- a WS subscribe to ``prices:BTC-USD`` on each WS gateway, and a ``price_update`` on it;
- a master of the cluster, SIGKILLed, is restarted in place and the cluster is whole again;
- Ctrl-C (SIGINT) ends ``perseus up`` with 0 and leaves none of its processes running.

Last, on a stack of its own: with ``PERSEUS_REDIS_URL`` and ``PERSEUS_DATABASE_URL`` set, ``--cluster`` uses
them, starts no store, and says so.

Every wait is bounded; the fixture kills whatever is left whatever happens.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil
import pytest
import redis
from websockets.sync.client import connect

from perseus_cli.devstack.processes import port_free
from perseus_cli.devstack.redis_cluster import LocalRedisCluster
from tests.support.databases import scratch_database
from tests.support.processes import Process, grpc_serving, run_cli, spawn, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("perseus_up"),  # one real stack at a time
    pytest.mark.timeout(300),
]

UP_TIMEOUT_S = 240.0  # a 6-node cluster, initdb, pg_basebackup, migrations, six servers
ANSWER_S = 60.0
NAMES = ("core-1", "core-2", "rest-1", "rest-2", "ws-1", "ws-2")
UNSET = ("PERSEUS_REDIS_URL", "PERSEUS_DATABASE_URL", "PERSEUS_DATABASE_READ_URL", "PERSEUS_REDIS_PREFIX")


@dataclass
class Stack:
    up: Process
    data_dir: Path
    rows: dict[str, str]  # summary name -> value
    pids: list[int]  # every descendant of `perseus up` once it was up

    def addr(self, name: str) -> str:
        """The host:port of a child, from its summary row."""
        match = re.search(r"(?:gRPC |//)([\d.]+:\d+)", self.rows[name])
        assert match, self.rows[name]
        return match.group(1)

    @property
    def key(self) -> str:
        return self.rows["dev API key"]


def summary_rows(output: str) -> dict[str, str]:
    """The rows of the "Perseus is up." block: two-space indent, a name, two or more spaces, the value."""
    block = output[output.index("Perseus is up.") :].split("Ctrl-C")[0]
    rows = {}
    for line in block.splitlines()[1:]:
        if match := re.match(r"  (\S.*?)  +(\S.*)$", line):
            rows[match.group(1).strip()] = match.group(2).strip()
    return rows


def base_port() -> int:
    """A first port for one kind of process, below the ephemeral range (32768-60999 on Linux) and with its
    next neighbours free: ``perseus up --cluster`` gives the second process of a kind the next free port,
    and a port in the ephemeral range can be taken by any outgoing connection between that check and the
    child's bind (it happened under the parallel suite: "cannot listen on … Address already in use")."""
    while True:
        port = random.randrange(20_000, 32_000, 10)
        if all(port_free(p) for p in range(port, port + 4)):
            return port


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A data dir directly under the system temp dir: as root, PostgreSQL runs as ``nobody``, which must be able
    to traverse every parent (pytest's own tmp_path parents are private)."""
    data_dir = Path(tempfile.mkdtemp(prefix="perseus-up-cluster-"))
    env = {
        "PERSEUS_CORE_ADDR": f"127.0.0.1:{base_port()}",
        "PERSEUS_REST_ADDR": f"127.0.0.1:{base_port()}",
        "PERSEUS_WS_ADDR": f"127.0.0.1:{base_port()}",
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_SIM_BACKFILL_MINUTES": "0",  # no simulated history to compute: a quicker start
        "PERSEUS_SIM_SYMBOLS": "BTC-USD",
    }
    up = spawn(["up", "--cluster", "--data-dir", str(data_dir)], env, env["PERSEUS_REST_ADDR"], unset=UNSET)
    pids: list[int] = []
    try:
        wait_until(lambda: "Ctrl-C to stop" in up.output(), up, "perseus up --cluster summary", timeout=UP_TIMEOUT_S)
        pids = [p.pid for p in psutil.Process(up.pid).children(recursive=True)]
        yield Stack(up, data_dir, summary_rows(up.output()), pids)
    finally:
        if up.proc.poll() is None:
            up.proc.send_signal(signal.SIGINT)
            try:
                up.proc.wait(60)
            except Exception:
                up.proc.kill()
                up.proc.wait()
        up.close()
        for pid in [*pids, *[p.pid for p in _descendants_of_dead(pids)]]:
            if psutil.pid_exists(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(data_dir, ignore_errors=True)


def _descendants_of_dead(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found += psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_every_address_is_printed_and_every_process_answers(stack: Stack) -> None:
    rows = stack.rows
    assert set(NAMES) <= set(rows), stack.up.output()[-3000:]
    assert {"Redis Cluster", "PostgreSQL", "PostgreSQL replica", "dev API key", "gateways' cores"} <= set(rows)
    addrs = {name: stack.addr(name) for name in NAMES}
    assert len(set(addrs.values())) == len(NAMES), f"two processes share an address: {addrs}"
    assert "exchange" in rows["core-1"] and "pw-host" in rows["core-2"]
    assert rows["gateways' cores"].startswith(f"{addrs['core-1']},{addrs['core-2']}")

    for core in ("core-1", "core-2"):
        assert grpc_serving(addrs[core]), f"{core} at {addrs[core]} does not answer SERVING"
    for gateway in ("rest-1", "rest-2", "ws-1", "ws-2"):
        assert httpx.get(f"http://{addrs[gateway]}/livez", timeout=3).status_code == 200, gateway

    port = int(rows["Redis Cluster"].split()[0].rpartition(":")[2])
    facts = _cluster_info(stack, port)
    assert facts["cluster_state"] == "ok" and facts["cluster_known_nodes"] == "6", facts
    assert facts["cluster_slots_ok"] == "16384", facts
    # the cluster asks for the password it printed (issue 16): a client without it gets NOAUTH
    assert len(_password(stack)) >= 20
    with socket.create_connection(("127.0.0.1", port), timeout=5) as anonymous:
        anonymous.sendall(b"GET anything\r\n")
        assert anonymous.recv(200).startswith(b"-NOAUTH ")


async def test_the_replica_is_a_streaming_standby_given_to_the_cores(stack: Stack) -> None:
    replica_url = stack.rows["PostgreSQL replica"].split()[0]
    primary_url = stack.rows["PostgreSQL"].split()[0]
    conn = await asyncpg.connect(replica_url, timeout=5)
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
        # the migrations `perseus up` ran on the primary arrived by streaming
        assert await conn.fetchval("SELECT to_regclass('api_keys') IS NOT NULL") is True
    finally:
        await conn.close()
    conn = await asyncpg.connect(primary_url, timeout=5)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") >= 1
    finally:
        await conn.close()
    # both cores were given the replica, and a mode of their own
    environments = [
        p.environ() for p in psutil.Process(stack.up.pid).children() if p.cmdline()[-2:] == ["perseus_cli.cli", "core"]
    ]
    assert len(environments) == 2
    assert {e["PERSEUS_MODE"] for e in environments} == {"exchange", "pw-host"}
    assert all(e["PERSEUS_DATABASE_READ_URL"] == replica_url for e in environments)


def test_a_rest_read_through_each_rest_gateway(stack: Stack) -> None:
    for gateway in ("rest-1", "rest-2"):
        url = f"http://{stack.addr(gateway)}/public/v1/prices/latest"
        last: object = None
        deadline = time.monotonic() + ANSWER_S
        while time.monotonic() < deadline:
            try:
                response = httpx.get(url, params={"symbols": "BTC-USD"}, headers={"X-API-Key": stack.key}, timeout=5)
            except httpx.TransportError as exc:
                last = exc
            else:
                last = (response.status_code, response.text[:500])
                if response.status_code == 200 and response.json()["data"]:
                    break
            time.sleep(0.5)
        else:
            pytest.fail(f"{gateway}: no latest BTC-USD price within {ANSWER_S:g} s; last answer {last}")
        data = response.json()["data"]
        assert [item["symbol"] for item in data] == ["BTC-USD"], data


def test_a_ws_subscribe_on_each_ws_gateway(stack: Stack) -> None:
    for gateway in ("ws-1", "ws-2"):
        url = f"ws://{stack.addr(gateway)}/public/v1/stream?apiKey={stack.key}"
        with connect(url, open_timeout=10) as ws:
            ws.send(json.dumps({"action": "subscribe", "channels": ["prices:BTC-USD"]}))
            seen: list[dict[str, object]] = []
            deadline = time.monotonic() + ANSWER_S
            while time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                seen.append(message)
                if message.get("type") == "price_update":
                    break
            else:
                pytest.fail(f"{gateway}: no price_update within {ANSWER_S:g} s; got {seen[:5]}")
            assert seen[0].get("type") == "subscribed", seen[:3]
            assert message["channel"] == "prices:BTC-USD"


def _latest_price(stack: Stack, gateway: str) -> int | str:
    try:
        response = httpx.get(
            f"http://{stack.addr(gateway)}/public/v1/prices/latest",
            params={"symbols": "BTC-USD"},
            headers={"X-API-Key": stack.key},
            timeout=5,
        )
    except httpx.TransportError as exc:
        return repr(exc)
    return response.status_code


def test_a_killed_cluster_node_is_restarted_in_place(stack: Stack) -> None:
    """SIGKILL a master of the local cluster: the supervisor restarts it on its port, the cluster is whole
    again, and REST reads through the cluster still answer."""
    ports = [int(p) for p in re.findall(r"\d+", stack.rows["Redis Cluster"].split("ports ")[1].split(";")[0])]
    assert len(ports) == 6, stack.rows["Redis Cluster"]
    master = next(port for port in ports if _info(stack, port, "replication")["role"] == "master")
    pid = int(_info(stack, master, "server")["process_id"])
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: f"Redis Cluster node {master} restarted" in stack.up.output(), stack.up, "the node's restart", 30
    )

    def whole() -> bool:
        try:
            facts = _cluster_info(stack, master)
        except redis.RedisError:
            return False
        return facts["cluster_state"] == "ok" and facts["cluster_slots_ok"] == "16384"

    wait_until(whole, stack.up, "the cluster whole again", timeout=ANSWER_S)
    assert int(_info(stack, master, "server")["process_id"]) != pid
    wait_until(lambda: _latest_price(stack, "rest-1") == 200, stack.up, "a REST read after the restart", ANSWER_S)


def _password(stack: Stack) -> str:
    """The password of the Redis Cluster ``perseus up --cluster`` made (its printed URL carries it)."""
    password = urlsplit(stack.rows["Redis Cluster"].split()[0]).password
    assert password, stack.rows["Redis Cluster"]
    return password


def _node(stack: Stack, port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, password=_password(stack), socket_timeout=3)


def _info(stack: Stack, port: int, section: str) -> dict[str, Any]:
    client = _node(stack, port)
    try:
        return dict(client.info(section))
    finally:
        client.close()


def _cluster_info(stack: Stack, port: int) -> dict[str, str]:
    client = _node(stack, port)
    try:
        info = client.execute_command("CLUSTER", "INFO")
    finally:
        client.close()
    text = info.decode() if isinstance(info, bytes) else str(info)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def test_ctrl_c_stops_everything(stack: Stack) -> None:
    assert len(stack.pids) >= 6 + 6 + 2  # 6 cluster nodes, 2 PostgreSQL postmasters, 6 servers
    pids = {*stack.pids, *(p.pid for p in psutil.Process(stack.up.pid).children(recursive=True))}
    stack.up.proc.send_signal(signal.SIGINT)
    assert stack.up.proc.wait(90) == 0, stack.up.output()[-3000:]
    deadline = time.monotonic() + 10
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive == [], f"left running: {alive}"


@pytest.mark.timeout(240)
async def test_given_urls_are_used_instead_of_starting_stores(
    redis_cluster: LocalRedisCluster, admin_database_url: str
) -> None:
    """``PERSEUS_REDIS_URL`` and ``PERSEUS_DATABASE_URL`` set: ``--cluster`` starts no Redis, no PostgreSQL and no
    replica, says so, and its six servers serve from the given stores."""
    data_dir = Path(tempfile.mkdtemp(prefix="perseus-up-cluster-given-"))
    prefix = f"perseus-up-cluster-test:{uuid.uuid4().hex[:8]}:"
    async with scratch_database(admin_database_url, f"perseus_up_cluster_{uuid.uuid4().hex[:8]}") as db_url:
        env = {
            "PERSEUS_REDIS_URL": redis_cluster.url,
            "PERSEUS_REDIS_PREFIX": prefix,
            "PERSEUS_DATABASE_URL": db_url,
            "PERSEUS_CORE_ADDR": f"127.0.0.1:{base_port()}",
            "PERSEUS_REST_ADDR": f"127.0.0.1:{base_port()}",
            "PERSEUS_WS_ADDR": f"127.0.0.1:{base_port()}",
            "PERSEUS_CORE_METRICS_ADDR": "",
            "PERSEUS_SIM_BACKFILL_MINUTES": "0",
            "PERSEUS_SIM_SYMBOLS": "BTC-USD",
        }
        up = spawn(
            ["up", "--cluster", "--data-dir", str(data_dir)],
            env,
            env["PERSEUS_REST_ADDR"],
            unset=("PERSEUS_DATABASE_READ_URL",),
        )
        try:
            wait_until(lambda: "Ctrl-C to stop" in up.output(), up, "perseus up --cluster summary", UP_TIMEOUT_S)
            given = Stack(up, data_dir, summary_rows(up.output()), [])
            # the given database is the user's: no dev key is made there; the test makes its own
            assert given.rows["dev API key"].startswith("none"), given.rows
            made = run_cli(["keys", "create", "--tier", "free"], {"PERSEUS_DATABASE_URL": db_url})
            assert made.returncode == 0, made.stderr
            given.rows["dev API key"] = made.stdout.strip().splitlines()[-1]
            assert given.rows["Redis"].endswith("(from PERSEUS_REDIS_URL; no local cluster started)"), given.rows
            assert given.rows["PostgreSQL"].endswith("(from PERSEUS_DATABASE_URL)"), given.rows
            assert given.rows["PostgreSQL replica"].startswith("none started"), given.rows
            assert "Redis Cluster" not in given.rows
            assert not (data_dir / "postgres").exists() and not (data_dir / "postgres-replica").exists()
            names = [p.name() for p in psutil.Process(up.pid).children()]
            assert not [n for n in names if "valkey" in n or "redis" in n or "postgres" in n], names
            for gateway in ("rest-1", "rest-2"):
                wait_until(lambda g=gateway: _latest_price(given, g) == 200, up, f"a REST read via {gateway}", ANSWER_S)
            up.proc.send_signal(signal.SIGINT)
            assert up.proc.wait(90) == 0
        finally:
            up.close()
            shutil.rmtree(data_dir, ignore_errors=True)
            client = redis.RedisCluster.from_url(redis_cluster.url)
            try:
                for key in list(client.scan_iter(match=f"{prefix}*", count=1000)):
                    client.delete(key)
            finally:
                client.close()
