"""``make bench-core``: the core's read path and its stream fan-out, beside redis-benchmark.

1. ``GetCandles`` with limit 100 from concurrent gRPC clients (20 series of
   1,000 one-minute candles in their Redis windows, the symbol rotating per
   call): requests/s, P50/P99. In the same run ``redis-benchmark`` does the
   equivalent ``ZRANGE window -100 -1`` on the same Redis, and the same client
   calls a bare grpc.aio server that answers the same response bytes from
   memory (the ceiling of one gRPC hop here); both ratios are printed. Each client process holds
   ``CONNECTIONS_PER_PROC`` connections. Then the same against a core of
   ``--workers`` worker processes on one port (``PERSEUS_CORE_WORKERS``) beside as many bare servers on
   one port: 1 vs N workers, each row with its own ceiling.
2. Stream fan-out: 100 concurrent ``Subscribe`` streams on the same 20
   channels, events published at a fixed rate by a separate process; events/s
   delivered and publish-to-receive latency (the publisher stamps each event's
   ``publish_time``).

Bounded in time; stops everything it started.

    python -m bench.core [--seconds 10] [--clients 32] [--workers 2] [--streams 100] [--rates 5,10,15]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import shutil
import subprocess
import time
from decimal import Decimal

import grpc
import redis as sync_redis
import uvloop
from grpc import aio

from bench.stack import Stack, stack
from bench.stats import summary
from common.redis_clients import open_mode, pipeline
from core.adapters.candle_store import CandleStore
from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.domain.candles import Candle
from core.domain.channels import Channel, ChannelFamily
from core.domain.timeframes import Timeframe
from perseus.marketdata.v1 import (
    common_pb2,
    market_data_service_pb2 as md_pb2,
    prices_pb2,
    stream_service_pb2 as stream_pb2,
)
from tests.support.processes import Process, free_port, running_core

SYMBOLS = [f"BC{i}-USD" for i in range(20)]
WINDOW = 1_000
LIMIT = 100
EXCHANGE = "sim"
GET_CANDLES = "/perseus.marketdata.v1.MarketDataService/GetCandles"
SUBSCRIBE = "/perseus.marketdata.v1.StreamService/Subscribe"
FANOUT_CHANNELS = [Channel(ChannelFamily.PRICES, EXCHANGE, f"FO{i}-USD", None) for i in range(20)]


async def seed_windows(redis_url: str, prefix: str) -> str:
    """1,000 closed 1m candles per symbol in the Redis windows; returns one window key for redis-benchmark."""
    redis = pipeline(redis_url, await open_mode(redis_url), client_name="bench-core-seed")
    keys = RedisKeys(prefix)
    store = CandleStore(None, redis, keys, window_size=WINDOW)  # type: ignore[arg-type]  # windows only
    start = (int(time.time()) // 60 - WINDOW - 5) * 60_000
    try:
        for symbol in SYMBOLS:
            candles = []
            for i in range(WINDOW):
                price = Decimal(f"{100 + i % 50}.25")
                open_time = start + i * 60_000
                candles.append(Candle(EXCHANGE, symbol, Timeframe.M1, open_time, price, price, price, price, price))
            await store.add_to_windows(1, candles)
    finally:
        await redis.aclose()
    return keys.candle_window(EXCHANGE, SYMBOLS[0], Timeframe.M1)


CONNECTIONS_PER_PROC = 4  # SO_REUSEPORT spreads connections, not calls: enough of them to reach every worker


async def get_candles_load(addr: str, seconds: float, clients: int) -> tuple[int, list[float]]:
    requests = [
        md_pb2.GetCandlesRequest(
            exchange=EXCHANGE, symbol=symbol, timeframe=common_pb2.TIMEFRAME_1M, limit=LIMIT
        ).SerializeToString()
        for symbol in SYMBOLS
    ]
    latencies: list[float] = []
    candles = 0
    deadline = time.monotonic() + seconds
    # each channel its own connection (a local subchannel pool: grpc would otherwise share one)
    channels = [
        aio.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(CONNECTIONS_PER_PROC)
    ]
    try:
        calls = [
            channel.unary_unary(GET_CANDLES, response_deserializer=md_pb2.GetCandlesResponse.FromString)
            for channel in channels
        ]

        async def client(n: int) -> None:
            nonlocal candles
            call = calls[n % len(calls)]
            while time.monotonic() < deadline:
                started = time.perf_counter()
                reply = await call(requests[n % len(requests)], timeout=5)
                latencies.append(time.perf_counter() - started)
                candles += len(reply.candles)
                n += 1

        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        for channel in channels:
            await channel.close()
    assert candles == len(latencies) * LIMIT, "a GetCandles answer had fewer than 100 candles"
    return len(latencies), latencies


def _load_in_process(addr: str, seconds: float, clients: int) -> tuple[int, list[float]]:
    return uvloop.run(get_candles_load(addr, seconds, clients))


def load(addr: str, seconds: float, clients: int, procs: int) -> tuple[int, list[float]]:
    """``clients`` concurrent calls spread over ``procs`` client processes (one Python client process
    tops out below what the core can serve); returns the calls made and their latencies."""
    if procs == 1:
        return _load_in_process(addr, seconds, clients)
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        results = pool.starmap(_load_in_process, [(addr, seconds, max(1, clients // procs))] * procs)
    return sum(n for n, _ in results), [lat for _, lats in results for lat in lats]


def echo_server(port: int, response: bytes) -> None:
    """A bare grpc.aio server answering GetCandles with ``response`` from memory: no core behind it. Several
    of them may share ``port`` (``SO_REUSEPORT``), as the core's workers do."""

    async def serve() -> None:
        async def answer(request: bytes, context: object) -> bytes:
            return response

        method = grpc.unary_unary_rpc_method_handler(answer)
        server = aio.server(options=[("grpc.so_reuseport", 1)])
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("perseus.marketdata.v1.MarketDataService", {"GetCandles": method}),)
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(serve())


async def one_response(addr: str) -> bytes:
    async with aio.insecure_channel(addr) as channel:
        call = channel.unary_unary(GET_CANDLES)
        request = md_pb2.GetCandlesRequest(exchange=EXCHANGE, symbol=SYMBOLS[0], timeframe=common_pb2.TIMEFRAME_1M)
        return await call(request.SerializeToString(), timeout=5)  # type: ignore[no-any-return]


def grpc_ceiling(response: bytes, seconds: float, clients: int, procs: int, servers: int = 1) -> float:
    """req/s of ``servers`` bare grpc.aio processes on one port (``SO_REUSEPORT``), loaded like the core."""
    port = free_port()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=echo_server, args=(port, response), daemon=True) for _ in range(servers)]
    for process in processes:
        process.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        time.sleep(1.0 if servers > 1 else 0.0)  # the others bind too
        load(f"127.0.0.1:{port}", 1.0, clients, procs)
        count, _ = load(f"127.0.0.1:{port}", seconds, clients, procs)
        return count / seconds
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(5)


def redis_benchmark(redis_url: str, key: str, clients: int) -> float | None:
    """ZRANGE key -100 -1 requests/s by redis-benchmark on the same server, or None without the tool."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    params = sync_redis.connection.parse_url(redis_url)
    argv = [binary, "-h", params["host"], "-p", str(params["port"]), "-n", "200000", "-c", str(clients), "--csv"]
    out = subprocess.run([*argv, "ZRANGE", key, str(-LIMIT), "-1"], capture_output=True, text=True, timeout=120)
    match = re.search(r'"ZRANGE[^"]*","([0-9.]+)"', out.stdout)
    return float(match.group(1)) if match else None


def publisher_process(redis_url: str, prefix: str, rate_per_channel: float, seconds: float) -> None:
    """Publish ``rate_per_channel`` events/s on every fan-out channel, each stamped with its publish time."""

    async def run() -> None:
        redis = pipeline(redis_url, await open_mode(redis_url), client_name="bench-core-publisher")
        publisher = EventPublisher(redis, RedisKeys(prefix))
        tick_s = 0.01
        per_tick = rate_per_channel * tick_s
        owed = 0.0
        deadline = time.monotonic() + seconds
        next_tick = time.monotonic()
        while time.monotonic() < deadline:
            owed += per_tick
            count, owed = int(owed), owed - int(owed)
            if count:
                events = []
                for channel in FANOUT_CHANNELS:
                    for _ in range(count):
                        event = stream_pb2.StreamEvent(
                            channel=f"prices:{EXCHANGE}:{channel.symbol}",
                            price_update=prices_pb2.PriceFeed(symbol=channel.symbol, price="1.5", source=EXCHANGE),
                        )
                        event.publish_time.FromNanoseconds(time.time_ns())
                        events.append(Event(channel, event.SerializeToString()))
                await publisher.publish(events)
            next_tick += tick_s
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        await redis.aclose()

    uvloop.run(run())


async def fanout(addr: str, redis_url: str, prefix: str, streams: int, rate: float, seconds: float) -> dict[str, float]:
    names = [f"prices:{EXCHANGE}:{c.symbol}" for c in FANOUT_CHANNELS]
    latencies: list[float] = []
    received = 0
    gaps = 0
    async with aio.insecure_channel(addr) as channel:
        subscribe = channel.unary_stream(SUBSCRIBE, response_deserializer=stream_pb2.SubscribeResponse.FromString)
        calls = [subscribe(stream_pb2.SubscribeRequest(channels=names).SerializeToString()) for _ in range(streams)]
        for call in calls:
            assert (await call.read()).WhichOneof("kind") == "subscribed"
        measuring = False

        async def consume(call: aio.UnaryStreamCall) -> None:
            nonlocal received, gaps
            last: dict[str, int] = {}
            while (response := await call.read()) is not aio.EOF:  # read() and async-for must not mix
                kind = response.WhichOneof("kind")
                if kind not in ("event", "events"):
                    gaps += 1
                    continue
                now = time.time()
                for event in response.events.events if kind == "events" else (response.event,):
                    if last.get(event.channel, event.seq - 1) != event.seq - 1:
                        gaps += 1
                    last[event.channel] = event.seq
                    if measuring:
                        received += 1
                        latencies.append(now - event.publish_time.ToNanoseconds() / 1e9)

        consumers = [asyncio.create_task(consume(call)) for call in calls]
        ctx = multiprocessing.get_context("spawn")
        warmup = 1.0
        publisher = ctx.Process(target=publisher_process, args=(redis_url, prefix, rate, seconds + warmup + 0.5))
        publisher.start()
        await asyncio.sleep(warmup)
        measuring = True
        started = time.monotonic()
        await asyncio.sleep(seconds)
        measuring = False
        elapsed = time.monotonic() - started
        await asyncio.to_thread(publisher.join, 30)
        for call in calls:
            call.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    figures = summary(latencies)
    return {
        "published_per_s": rate * len(FANOUT_CHANNELS),
        "delivered_per_s": received / elapsed,
        "max_ms": max(latencies) * 1000 if latencies else float("nan"),
        "gaps": gaps,
        **figures,
    }


def perseus_rps(addr: str, seconds: float, clients: int, procs: int) -> tuple[float, dict[str, float]]:
    load(addr, 1.0, clients, procs)  # warm-up
    count, latencies = load(addr, seconds, clients, procs)
    return count / seconds, summary(latencies)


def wait_workers(process: Process, workers: int, timeout: float = 60.0) -> None:
    """Until every worker of a ``PERSEUS_CORE_WORKERS`` core logged "core serving" (INFO)."""
    deadline = time.monotonic() + timeout
    while process.output().count("core serving") < workers:
        if time.monotonic() > deadline or process.proc.poll() is not None:
            raise RuntimeError(f"{workers} core workers not serving within {timeout} s:\n{process.output()[-3000:]}")
        time.sleep(0.2)


def read_rows(args: argparse.Namespace, s: Stack) -> None:
    """GetCandles(100) from 1 core worker and from ``--workers``, each beside as many bare grpc.aio processes."""
    response = uvloop.run(one_response(s.core.addr))
    rows = []
    rps, figures = perseus_rps(s.core.addr, args.seconds, args.clients, args.client_procs)
    bare = grpc_ceiling(response, args.seconds, args.clients, args.client_procs, 1)
    rows.append((1, rps, figures, bare))
    if args.workers > 1:
        env = {**s.env, "PERSEUS_MODE": "pw-host", "PERSEUS_CORE_WORKERS": str(args.workers)}
        with running_core({**env, "PERSEUS_LOG_LEVEL": "INFO", "PERSEUS_LOG_FORMAT": "text"}) as workers:
            wait_workers(workers, args.workers)
            rps_n, figures_n = perseus_rps(workers.addr, args.seconds, args.clients, args.client_procs)
        bare_n = grpc_ceiling(response, args.seconds, args.clients, args.client_procs, args.workers)
        rows.append((args.workers, rps_n, figures_n, bare_n))
    print(f"GetCandles limit={LIMIT}, c={args.clients} in {args.client_procs} client processes; load {load_average()}")
    for n, rps, figures, bare in rows:
        print(
            f"  {n} core worker{'s' if n > 1 else ' '}: {rps:8.0f} req/s  p50 {figures['p50_ms']:5.1f} ms  "
            f"p99 {figures['p99_ms']:5.1f} ms | bare grpc.aio x{n}, same bytes: {bare:8.0f} req/s  "
            f"(Perseus/bare = {rps / bare:.3f})"
        )
    if len(rows) > 1:
        (_, one, _, bare_one), (n, many, _, bare_many) = rows
        print(f"  {n} workers / 1: Perseus {many / one:.2f}x, bare grpc.aio {bare_many / bare_one:.2f}x")


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32, help="concurrent GetCandles calls")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes the calls are spread over")
    parser.add_argument(
        "--workers", type=int, default=2, help="PERSEUS_CORE_WORKERS measured against 1 (1: only one worker)"
    )
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument(
        "--rates", default="5,10,15", help="events/s per channel (20 channels), comma-separated; empty: no fan-out"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; {args.seconds:g} s per run; load {load_average()}")
    with stack(PERSEUS_MODE="pw-host") as s:
        redis_url, prefix = s.env["PERSEUS_REDIS_URL"], s.env["PERSEUS_REDIS_PREFIX"]
        key = uvloop.run(seed_windows(redis_url, prefix))
        read_rows(args, s)
        zrange = redis_benchmark(redis_url, key, 50)
        if zrange:
            print(f"redis-benchmark ZRANGE -100 -1 c=50: {zrange:8.0f} req/s")
        else:
            print("redis-benchmark not found: no ceiling measured")
        for rate in (float(r) for r in args.rates.split(",") if r.strip()):
            result = uvloop.run(fanout(s.core.addr, redis_url, prefix, args.streams, rate, args.seconds))
            print(
                f"fan-out {args.streams} streams x 20 channels, {result['published_per_s']:.0f} events/s published: "
                f"{result['delivered_per_s']:8.0f} delivered/s  p50 {result['p50_ms']:5.1f} ms  "
                f"p99 {result['p99_ms']:5.1f} ms  max {result['max_ms']:6.1f} ms  gaps {result['gaps']:.0f}"
            )


if __name__ == "__main__":
    main()
