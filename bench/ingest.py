"""``make bench-ingest``: sustained ingestion through gRPC and through the REST gateway.

Each client sends 100-feed batches back to back (unique ticks, so every feed
is really stored); the run reports feeds/s and per-batch latency percentiles.
Bounded in time and count; stops by itself.

    python -m bench.ingest [--seconds 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time

import httpx
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
PREBUILT_BATCHES = 2_000  # built before the clock starts, so the client spends its CPU on sending


async def run_grpc(addr: str, seconds: float, clients: int, counter: itertools.count[int]) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stored = 0
    bodies = iter([grpc_batch(counter).SerializeToString() for _ in range(PREBUILT_BATCHES)])
    deadline = time.monotonic() + seconds
    async with aio.insecure_channel(addr) as channel:
        call = channel.unary_unary(INGEST_METHOD, response_deserializer=pb.IngestPricesResponse.FromString)

        async def client() -> None:
            nonlocal stored
            for body in bodies:
                if time.monotonic() >= deadline:
                    break
                started = time.perf_counter()
                reply = await call(body, timeout=10)
                latencies.append(time.perf_counter() - started)
                stored += reply.ingested

        await asyncio.gather(*(client() for _ in range(clients)))
    return stored, latencies


async def run_rest(
    addr: str, key: str, seconds: float, clients: int, counter: itertools.count[int]
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stored = 0
    limits = httpx.Limits(max_connections=clients)
    bodies = iter([rest_batch(counter) for _ in range(PREBUILT_BATCHES)])
    deadline = time.monotonic() + seconds
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
    return stored, latencies


def report(name: str, stored: int, latencies: list[float], seconds: float) -> None:
    figures = summary(latencies)
    print(
        f"{name:5s} feeds/s {stored / seconds:9.0f}   batches {len(latencies):6d}   "
        f"batch p50 {figures['p50_ms']:6.1f} ms  p95 {figures['p95_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    counter = itertools.count()
    print(f"machine: {os.cpu_count()} CPUs; {args.clients} clients x {BATCH}-feed batches, {args.seconds:g} s each")
    with stack(rest=True, PERSEUS_MODE="exchange", PERSEUS_SIM_TRADES_PER_S="0") as s:
        asyncio.run(run_grpc(s.core.addr, 1.0, args.clients, counter))  # warm-up
        stored, latencies = asyncio.run(run_grpc(s.core.addr, args.seconds, args.clients, counter))
        report("gRPC", stored, latencies, args.seconds)
        assert s.rest is not None
        stored, latencies = asyncio.run(run_rest(s.rest.addr, s.key, args.seconds, args.clients, counter))
        report("REST", stored, latencies, args.seconds)


if __name__ == "__main__":
    main()
