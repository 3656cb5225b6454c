"""At most one exchange-mode core writes for an exchange: standby, takeover, and a paused leader that wakes up."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import asyncpg
import grpc
import pytest

from core.adapters.redis_keys import RedisKeys
from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2, market_data_service_pb2_grpc as md_grpc, market_pb2
from tests.support.processes import Process, free_port, grpc_serving, run_cli, spawn, wait_until
from tests.support.redis_target import sync_redis_client

pytestmark = pytest.mark.integration

LEASE_MS = 3_000
TAKEOVER_LIMIT_S = 10.0


def start_core(env: dict[str, str], instance: str) -> Process:
    addr = f"127.0.0.1:{free_port()}"
    process = spawn(
        ["core"],
        {
            **env,
            "PERSEUS_CORE_ADDR": addr,
            "PERSEUS_INSTANCE_ID": instance,
            "PERSEUS_WRITER_LEASE_MS": str(LEASE_MS),
            "PERSEUS_SIM_SYMBOLS": "LEAD-USD",
            "PERSEUS_SIM_TRADES_PER_S": "20",
        },
        addr,
    )
    wait_until(lambda: grpc_serving(addr), process, f"core {instance}")
    return process


def eventually(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def rows_by(database_url: str, instance: str, since: float = 0.0) -> int:
    """Price feeds written by the sim feed of one core instance (since a wall-clock time)."""

    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            query = "SELECT count(*) FROM price_feeds WHERE worker_id = $1 AND ingested_at >= to_timestamp($2)"
            return int(await conn.fetchval(query, f"venue:sim@{instance}", since))
        finally:
            await conn.close()

    return asyncio.run(count())


def set_fence_term(database_url: str, exchange: str, term: int) -> None:
    async def update() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE writer_fences SET term = $1 WHERE exchange_id = (SELECT id FROM exchanges WHERE name = $2)",
                term,
                exchange,
            )
        finally:
            await conn.close()

    asyncio.run(update())


def leadership_env(base_env: dict[str, str], namespace: str) -> tuple[dict[str, str], RedisKeys]:
    """A migrated environment with its own Redis prefix, so leases and terms start from nothing, the fence in
    PostgreSQL included: other tests of this worker's database led `sim` before, and a fence above the new
    Redis counter makes the first leader's term stale, so it hands the lease over and a standby started
    meanwhile may win it (seen as "b" leading where "a" should)."""
    env = {**base_env, "PERSEUS_REDIS_PREFIX": base_env["PERSEUS_REDIS_PREFIX"] + namespace}
    assert run_cli(["migrate"], env).returncode == 0

    async def forget_fence() -> None:
        conn = await asyncpg.connect(base_env["PERSEUS_DATABASE_URL"])
        try:
            await conn.execute(
                "DELETE FROM writer_fences WHERE exchange_id = (SELECT id FROM exchanges WHERE name = 'sim')"
            )
        finally:
            await conn.close()

    asyncio.run(forget_fence())
    return env, RedisKeys(env["PERSEUS_REDIS_PREFIX"])


def test_standby_takes_over_and_a_paused_leader_stops_writing(
    base_env: dict[str, str], database_url: str, redis_url: str
) -> None:
    env, keys = leadership_env(base_env, "lead:")
    rds = sync_redis_client(redis_url)
    holder = lambda: (rds.get(keys.exchange_writer_lock("sim")) or b"").decode()  # noqa: E731
    a = start_core(env, "a")
    b = c = None
    try:
        eventually(lambda: holder() == "a", 5)
        b = start_core(env, "b")
        time.sleep(2 * LEASE_MS / 1000)
        logs = f"--- a ---\n{a.output()[-4000:]}\n--- b ---\n{b.output()[-4000:]}"
        assert holder() == "a", f"b does not stand by:\n{logs}"
        assert rows_by(database_url, "b") == 0

        with grpc.insecure_channel(b.addr) as channel:  # any instance reports the exchange online
            reply = md_grpc.MarketDataServiceStub(channel).ListExchanges(md_pb2.ListExchangesRequest(), timeout=2)
            symbols = md_grpc.MarketDataServiceStub(channel).ListSymbols(md_pb2.ListSymbolsRequest(exchange="sim"))
            with pytest.raises(grpc.RpcError) as unknown:
                md_grpc.MarketDataServiceStub(channel).ListSymbols(md_pb2.ListSymbolsRequest(exchange="nyse"))
        assert {e.name: e.status for e in reply.exchanges}["sim"] == market_pb2.EXCHANGE_STATUS_ONLINE
        listed = [(s.exchange, s.symbol, s.base, s.quote) for s in symbols.symbols]
        assert ("sim", "LEAD-USD", "LEAD", "USD") in listed  # the database is shared by this worker's tests
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND

        os.kill(a.pid, signal.SIGKILL)
        took = eventually(lambda: holder() == "b", TAKEOVER_LIMIT_S)
        assert took < TAKEOVER_LIMIT_S
        eventually(lambda: rows_by(database_url, "b") > 0, 5)

        c = start_core(env, "c")  # a new standby
        os.kill(b.pid, signal.SIGSTOP)
        eventually(lambda: holder() == "c", TAKEOVER_LIMIT_S)
        woke = time.time()
        os.kill(b.pid, signal.SIGCONT)
        time.sleep(2.0)
        assert rows_by(database_url, "b", since=woke) == 0  # the old leader woke up and wrote nothing
        assert holder() == "c"
        assert b.proc.poll() is None  # and it is still alive, standing by
    finally:
        for process in (a, b, c):
            if process is not None:
                if process.proc.poll() is None:
                    os.kill(process.pid, signal.SIGCONT)
                process.close()
        rds.close()


def test_a_writer_leads_again_after_redis_lost_its_term_counter(
    base_env: dict[str, str], database_url: str, redis_url: str
) -> None:
    env, keys = leadership_env(base_env, "termloss:")
    rds = sync_redis_client(redis_url)
    try:
        first = start_core(env, "t1")
        eventually(lambda: rows_by(database_url, "t1") > 0, 10)
        first.close()
        rds.delete(keys.exchange_writer_term("sim"), keys.exchange_writer_lock("sim"))  # Redis lost its state
        set_fence_term(database_url, "sim", 500)  # ... after many terms: PostgreSQL is far ahead
        second = start_core(env, "t2")
        try:
            took = eventually(lambda: rows_by(database_url, "t2") > 0, TAKEOVER_LIMIT_S)
            assert took < TAKEOVER_LIMIT_S  # not stuck behind PostgreSQL's higher fencing term
        finally:
            second.close()
    finally:
        rds.close()
