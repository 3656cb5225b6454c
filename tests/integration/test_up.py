"""`perseus up` end to end on the embedded default: a fresh data dir, no Redis or PostgreSQL URL."""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import httpx
import psutil
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from perseus.marketdata.v1 import (
    common_pb2,
    key_service_pb2,
    key_service_pb2_grpc,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
    market_pb2,
)
from tests.support.databases import scratch_database
from tests.support.processes import Process, free_port, run_cli, spawn, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("perseus_up")]  # one real stack at a time

UP_TIMEOUT_S = 90.0


def _health(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir directly under the system temp dir: as root, PostgreSQL runs as ``nobody``, which
    must be able to traverse every parent (pytest's own tmp_path parents are private)."""
    path = Path(tempfile.mkdtemp(prefix="perseus-up-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_up_brings_up_everything_and_stops_everything(data_dir: Path) -> None:
    ports = {name: free_port() for name in ("core", "rest", "ws")}
    env = {
        "PERSEUS_CORE_ADDR": f"127.0.0.1:{ports['core']}",
        "PERSEUS_REST_ADDR": f"127.0.0.1:{ports['rest']}",
        "PERSEUS_WS_ADDR": f"127.0.0.1:{ports['ws']}",
        "PERSEUS_CORE_METRICS_ADDR": "",
    }
    up = spawn(
        ["up", "--data-dir", str(data_dir)],
        env,
        env["PERSEUS_REST_ADDR"],
        unset=("PERSEUS_REDIS_URL", "PERSEUS_DATABASE_URL", "PERSEUS_REDIS_PREFIX"),
    )
    try:
        rest_health = f"http://127.0.0.1:{ports['rest']}/health"
        wait_until(lambda: _health(rest_health), up, "perseus up", timeout=UP_TIMEOUT_S)
        wait_until(lambda: "Ctrl-C" in up.output(), up, "perseus up summary", timeout=10)

        body = httpx.get(rest_health, timeout=2).json()
        assert body["mode"] == "exchange"
        assert body["services"] == {"core": "up", "redis": "up", "postgres": "up"}
        # the WS gateway answers healthy too (its /health is cached a second: a probe made while it was still
        # starting may stand that long)
        wait_until(lambda: _health(f"http://127.0.0.1:{ports['ws']}/health"), up, "perseus ws healthy", timeout=10)
        assert (data_dir / "postgres").is_dir() and (data_dir / "redis").is_dir()

        key = printed_key(up.output())
        token = re.search(r"^  service token +(\S+)", up.output(), re.MULTILINE)
        assert token is not None, up.output()
        auth = (("authorization", f"Bearer {token[1]}"),)  # the core's service credential, made for this run
        with grpc.insecure_channel(env["PERSEUS_CORE_ADDR"]) as channel:
            reply = key_service_pb2_grpc.KeyServiceStub(channel).AuthenticateKey(
                key_service_pb2.AuthenticateKeyRequest(key=key), timeout=2, metadata=auth
            )
            assert reply.api_key.tier == key_service_pb2.KEY_TIER_INTERNAL  # the dev key is internal (issue 16)
            market = md_grpc.MarketDataServiceStub(channel)

            def sim_is_live() -> bool:  # the sim exchange feeds the pipeline under `perseus up`
                exchanges = market.ListExchanges(md_pb2.ListExchangesRequest(), timeout=2, metadata=auth).exchanges
                prices = market.GetLatestPrices(
                    md_pb2.GetLatestPricesRequest(symbols=["BTC-USD"]), timeout=2, metadata=auth
                ).prices
                online = {e.name: e.status for e in exchanges}["sim"] == market_pb2.EXCHANGE_STATUS_ONLINE
                return online and [p.source for p in prices] == ["sim"]

            wait_until(sim_is_live, up, "sim prices under perseus up", timeout=15)

            def indicator_ready() -> bool:  # `perseus up` backfills simulated history: MACD-V exists at once
                request = md_pb2.GetIndicatorRequest(
                    exchange="sim", symbol="BTC-USD", timeframe=common_pb2.TIMEFRAME_5M
                )
                try:
                    market.GetIndicator(request, timeout=2, metadata=auth)
                except grpc.RpcError:
                    return False
                return True

            wait_until(indicator_ready, up, "a 5m MACD-V value under perseus up", timeout=30)
            alerts = market.ListAlerts(md_pb2.ListAlertsRequest(exchange="sim", page_size=5), timeout=2, metadata=auth)
            assert alerts.signals and {a.exchange for a in alerts.signals} == {"sim"}

        with pytest.raises(ConnectionClosed), connect(f"ws://127.0.0.1:{ports['ws']}/public/v1/stream") as ws:
            ws.recv(timeout=15)  # the WS gateway answers upgrades; keyless, it closes (after seed 004's 5 s auth wait)

        descendants = psutil.Process(up.pid).children(recursive=True)
        assert len(descendants) >= 5  # core, rest, ws, postgres (+ its workers), redis
        assert up.stop(timeout=60) == 0
        alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"orphans: {[(p.pid, p.name()) for p in alive]}"
    finally:
        up.close()


# ---------------------------------------------------------------- one store given, the other embedded


def _start_up(data_dir: Path, given: dict[str, str]) -> tuple[Process, dict[str, int]]:
    """``perseus up`` on free ports with only the ``given`` store URLs set; returns once its summary is out."""
    ports = {name: free_port() for name in ("core", "rest", "ws")}
    env = {
        "PERSEUS_CORE_ADDR": f"127.0.0.1:{ports['core']}",
        "PERSEUS_REST_ADDR": f"127.0.0.1:{ports['rest']}",
        "PERSEUS_WS_ADDR": f"127.0.0.1:{ports['ws']}",
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_SIM_BACKFILL_MINUTES": "0",
        "PERSEUS_SIM_SYMBOLS": "BTC-USD",
        **given,
    }
    unset = tuple(v for v in ("PERSEUS_REDIS_URL", "PERSEUS_DATABASE_URL", "PERSEUS_REDIS_PREFIX") if v not in given)
    up = spawn(["up", "--data-dir", str(data_dir)], env, env["PERSEUS_REST_ADDR"], unset=unset)
    wait_until(lambda: "Ctrl-C to stop" in up.output(), up, "perseus up summary", timeout=UP_TIMEOUT_S)
    return up, ports


def printed_key(output: str) -> str:
    """The dev key ``perseus up`` printed: an ``internal`` one (issue 16)."""
    return next(word for line in output.splitlines() for word in line.split() if word.startswith("pk_int_"))


def _serves_a_read(up: Process, ports: dict[str, int], key: str) -> None:
    """The stack is whole: /health says every service is up, and ``key`` reads the sim's latest price."""
    body = httpx.get(f"http://127.0.0.1:{ports['rest']}/health", timeout=3).json()
    assert body["services"] == {"core": "up", "redis": "up", "postgres": "up"}, body

    def priced() -> bool:
        response = httpx.get(
            f"http://127.0.0.1:{ports['rest']}/public/v1/prices/latest",
            params={"symbols": "BTC-USD"},
            headers={"X-API-Key": key},
            timeout=3,
        )
        return response.status_code == 200 and [p["source"] for p in response.json()["data"]] == ["sim"]

    wait_until(priced, up, "a latest sim price through REST", timeout=30)


def _stops_cleanly(up: Process) -> None:
    descendants = psutil.Process(up.pid).children(recursive=True)
    assert up.stop(timeout=60) == 0
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"orphans: {[(p.pid, p.name()) for p in alive]}"


@pytest.mark.parametrize("store", ["redis", "cluster"])
@pytest.mark.timeout(240)
def test_only_a_redis_url_is_used_beside_the_embedded_postgres(
    data_dir: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """``PERSEUS_REDIS_URL`` alone: that Redis (the session's server, or a Redis Cluster) serves, PostgreSQL is
    embedded, and no embedded Redis is started."""
    url = request.getfixturevalue("redis_url") if store == "redis" else request.getfixturevalue("redis_cluster").url
    prefix = f"perseus-up-test:{uuid.uuid4().hex[:8]}:"
    client = redis.RedisCluster.from_url(url) if store == "cluster" else redis.Redis.from_url(url)
    up, ports = _start_up(data_dir, {"PERSEUS_REDIS_URL": url, "PERSEUS_REDIS_PREFIX": prefix})
    try:
        summary = up.output()
        assert re.search(r"Redis\s+redis://\S+\s+\(from PERSEUS_REDIS_URL\)", summary), summary[-2000:]
        assert f"embedded; data in {data_dir / 'postgres'}" in summary
        assert (data_dir / "postgres").is_dir() and not (data_dir / "redis").exists()
        _serves_a_read(up, ports, printed_key(summary))
        assert next(client.scan_iter(match=f"{prefix}*", count=1000), None) is not None, "nothing written there"
        _stops_cleanly(up)
    finally:
        up.close()
        for key in list(client.scan_iter(match=f"{prefix}*", count=1000)):
            client.delete(key)
        client.close()


@pytest.mark.timeout(240)
async def test_only_a_database_url_is_used_beside_the_embedded_redis(data_dir: Path, admin_database_url: str) -> None:
    """``PERSEUS_DATABASE_URL`` alone: that database is migrated and serves, Redis is embedded, and no embedded
    PostgreSQL is started."""
    async with scratch_database(admin_database_url, f"perseus_up_{uuid.uuid4().hex[:8]}") as url:
        up, ports = _start_up(data_dir, {"PERSEUS_DATABASE_URL": url})
        try:
            summary = up.output()
            assert re.search(r"PostgreSQL\s+postgresql://\S+\s+\(from PERSEUS_DATABASE_URL\)", summary), summary
            assert f"embedded; data in {data_dir / 'redis'}" in summary
            assert (data_dir / "redis").is_dir() and not (data_dir / "postgres").exists()
            # the given database is the user's: no dev key is made in it, and the summary says how to make one
            assert "pk_int_" not in summary and "`perseus keys create --tier internal`" in summary, summary
            conn = await asyncpg.connect(url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0
            finally:
                await conn.close()
            made = run_cli(["keys", "create", "--tier", "free"], {"PERSEUS_DATABASE_URL": url})
            assert made.returncode == 0, made.stderr
            _serves_a_read(up, ports, made.stdout.strip().splitlines()[-1])
            _stops_cleanly(up)
        finally:
            up.close()
