"""``make bench-ingest``: sustained ingestion through gRPC and through the REST gateway, beside its ceiling.

Each client sends 100-feed batches back to back (unique ticks, so every feed
is really stored); the run reports feeds/s and per-batch latency percentiles.
The ceiling (issue 18) is the same rows in the same 100-row batches and
concurrency written straight into ``price_feeds`` with ``COPY`` (asyncpg's
``copy_records_to_table``) by this one process: no validation, no idempotency
check beyond the unique index, no candle queue, no Redis; Perseus's gRPC
figure is printed as a ratio to it. Bounded in time and count; stops by itself.

    python -m bench.ingest [--seconds 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import httpx
import redis
from grpc import aio

from bench.stack import stack
from bench.stats import summary
from perseus.marketdata.v1 import ingest_service_pb2 as pb, prices_pb2

BATCH = 100
SYMBOLS = [f"B{i}-USD" for i in range(20)]
SOURCES = ["coinbase", "binance", "kraken"]


def grpc_batch(counter: itertools.count[int]) -> pb.IngestPricesRequest:
    base = int(time.time() * 1000) - 60_000
    feeds = []
    for _ in range(BATCH):
        n = next(counter)
        feed = prices_pb2.PriceFeed(
            symbol=SYMBOLS[n % len(SYMBOLS)],
            price=f"{100 + n % 997}.{n % 100:02d}",
            volume="1.5",
            source=SOURCES[n % len(SOURCES)],
        )
        feed.timestamp.FromMilliseconds(base + n // 50)
        feeds.append(feed)
    return pb.IngestPricesRequest(feeds=feeds, worker_id="bench")


def rest_batch(counter: itertools.count[int]) -> bytes:
    base = int(time.time() * 1000) - 60_000
    feeds = []
    for _ in range(BATCH):
        n = next(counter)
        feeds.append(
            {
                "symbol": SYMBOLS[n % len(SYMBOLS)],
                "price": f"{100 + n % 997}.{n % 100:02d}",
                "volume": "1.5",
                "source": SOURCES[n % len(SOURCES)],
                "timestamp": base + n // 50,
            }
        )
    return json.dumps({"worker_id": "bench", "feeds": feeds}).encode()


INGEST_METHOD = "/perseus.marketdata.v1.IngestService/IngestPrices"
PREBUILT_BATCHES = 6_000  # built before the clock starts (more than a run can send), so the client only sends


async def run_grpc(
    addr: str, seconds: float, clients: int, counter: itertools.count[int]
) -> tuple[int, list[float], float]:
    latencies: list[float] = []
    stored = 0
    bodies = iter([grpc_batch(counter).SerializeToString() for _ in range(PREBUILT_BATCHES)])
    # One connection per client (a local subchannel pool each), so PERSEUS_CORE_WORKERS=N spreads them.
    channels = [aio.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(clients)]
    began = time.monotonic()
    deadline = began + seconds

    async def client(channel: aio.Channel) -> None:
        nonlocal stored
        call = channel.unary_unary(INGEST_METHOD, response_deserializer=pb.IngestPricesResponse.FromString)
        for body in bodies:
            if time.monotonic() >= deadline:
                break
            started = time.perf_counter()
            reply = await call(body, timeout=10)
            latencies.append(time.perf_counter() - started)
            stored += reply.ingested

    try:
        await asyncio.gather(*(client(channel) for channel in channels))
    finally:
        for channel in channels:
            await channel.close()
    return stored, latencies, time.monotonic() - began  # less than `seconds` if the prebuilt batches ran out


async def run_rest(
    addr: str, key: str, seconds: float, clients: int, counter: itertools.count[int]
) -> tuple[int, list[float], float]:
    latencies: list[float] = []
    stored = 0
    limits = httpx.Limits(max_connections=clients)
    bodies = iter([rest_batch(counter) for _ in range(PREBUILT_BATCHES)])
    began = time.monotonic()
    deadline = began + seconds
    async with httpx.AsyncClient(base_url=f"http://{addr}", limits=limits, headers={"X-API-Key": key}) as http:

        async def client() -> None:
            nonlocal stored
            for body in bodies:
                if time.monotonic() >= deadline:
                    break
                started = time.perf_counter()
                response = await http.post("/internal/v1/ingest", content=body, timeout=10)
                latencies.append(time.perf_counter() - started)
                stored += response.json()["data"]["ingested"]

        await asyncio.gather(*(client() for _ in range(clients)))
    return stored, latencies, time.monotonic() - began  # less than `seconds` if the prebuilt batches ran out


COPY_COLUMNS = ("symbol", "price", "volume", "source", "ts", "worker_id", "index_in_batch")


def copy_batch(counter: itertools.count[int]) -> list[tuple[object, ...]]:
    """The rows of one batch as :func:`grpc_batch` would have them stored."""
    base = int(time.time() * 1000) - 60_000
    rows = []
    for index in range(BATCH):
        n = next(counter)
        ts = datetime.fromtimestamp((base + n // 50) / 1000, tz=UTC)
        price = Decimal(f"{100 + n % 997}.{n % 100:02d}")
        rows.append((SYMBOLS[n % len(SYMBOLS)], price, Decimal("1.5"), SOURCES[n % len(SOURCES)], ts, "copy", index))
    return rows


async def run_copy(
    database_url: str, seconds: float, clients: int, counter: itertools.count[int]
) -> tuple[int, list[float], float]:
    """The ceiling: ``clients`` connections each writing 100-row batches with ``COPY`` back to back."""
    latencies: list[float] = []
    stored = 0
    batches = iter([copy_batch(counter) for _ in range(PREBUILT_BATCHES)])
    conns = [await asyncpg.connect(database_url) for _ in range(clients)]
    began = time.monotonic()
    deadline = began + seconds
    try:

        async def client(conn: asyncpg.Connection) -> None:
            nonlocal stored
            for rows in batches:
                if time.monotonic() >= deadline:
                    break
                started = time.perf_counter()
                await conn.copy_records_to_table("price_feeds", records=rows, columns=COPY_COLUMNS)
                latencies.append(time.perf_counter() - started)
                stored += len(rows)

        await asyncio.gather(*(client(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    return stored, latencies, time.monotonic() - began  # less than `seconds` if the prebuilt batches ran out


def published_events(redis_url: str, prefix: str) -> int:
    """How many price_update events the core has published so far: the sum of the entries ever added to
    the price streams' histories (``XINFO STREAM`` counts trimmed ones too; seqs start at a clock value)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}history:prices:*", count=1000))
        return sum(int(client.xinfo_stream(key)["entries-added"]) for key in keys)
    finally:
        client.close()


def wait_published(redis_url: str, prefix: str, expected: int) -> float:
    """Seconds until every stored feed has its event published (the after-commit lag), at most 30."""
    started = time.monotonic()
    while published_events(redis_url, prefix) < expected and time.monotonic() - started < 30:
        time.sleep(0.05)
    return time.monotonic() - started


def report(name: str, stored: int, latencies: list[float], seconds: float) -> float:
    """Print one row; return its feeds/s (over the run's own duration)."""
    figures, rate = summary(latencies), stored / seconds if seconds else 0.0
    print(
        f"{name:10s} feeds/s {rate:9.0f}   batches {len(latencies):6d}   "
        f"batch p50 {figures['p50_ms']:6.1f} ms  p95 {figures['p95_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms"
    )
    return rate


def lag(redis_url: str, prefix: str, total: int) -> None:
    waited = wait_published(redis_url, prefix, total)
    print(f"      every price_update event published {waited * 1000:.0f} ms after the last answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="2,3,4", help="comma-separated concurrency levels")
    args = parser.parse_args()
    counter = itertools.count()
    levels = [int(c) for c in args.clients.split(",")]
    print(f"machine: {os.cpu_count()} CPUs; {BATCH}-feed batches, {args.seconds:g} s per run, clients {levels}")
    with stack(rest=True, PERSEUS_MODE="exchange", PERSEUS_SIM_TRADES_PER_S="0") as s:
        assert s.rest is not None
        redis_url, prefix = s.env["PERSEUS_REDIS_URL"], s.env["PERSEUS_REDIS_PREFIX"]
        total, _, _ = asyncio.run(run_grpc(s.core.addr, 1.0, 2, counter))  # warm-up
        for clients in levels:
            stored, latencies, elapsed = asyncio.run(run_grpc(s.core.addr, args.seconds, clients, counter))
            total += stored
            rate = report(f"gRPC  c={clients}", stored, latencies, elapsed)
            lag(redis_url, prefix, total)
            copied, copy_latencies, copy_elapsed = asyncio.run(
                run_copy(s.env["PERSEUS_DATABASE_URL"], args.seconds, clients, counter)
            )
            ceiling = report(f"COPY  c={clients}", copied, copy_latencies, copy_elapsed)
            print(f"      gRPC / COPY ceiling: {rate / ceiling if ceiling else float('nan'):.2f}")
            stored, latencies, elapsed = asyncio.run(run_rest(s.rest.addr, s.key, args.seconds, clients, counter))
            total += stored
            report(f"REST  c={clients}", stored, latencies, elapsed)
            lag(redis_url, prefix, total)


if __name__ == "__main__":
    main()
