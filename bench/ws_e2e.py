"""``make bench-ws MODE=e2e``: latency from ingestion to the WebSocket client (issue 18.7, seed 004: < 100 ms).

A private stack (:mod:`bench.stack`: an ``exchange`` core with no simulated trades, the REST gateway) and a
WebSocket gateway. ``--clients`` WebSocket clients (1,000) each subscribe, in seed 004's dialect
(``{"action":"subscribe","symbols":["E0/USD"]}``, the channel ``prices:all:E0-USD``), to one of ``--symbols``
symbols (20), round robin. Then for ``--seconds`` (10) a writer posts, ``--rate`` times a second (5), one batch
of one feed per symbol to ``POST /internal/v1/ingest`` on the REST gateway, each feed's ``timestamp`` the
wall-clock millisecond the batch was built, just before it is sent. Every client notes, per ``price_update``
it receives, its wall clock minus that timestamp: the latency from the ingest request to the delivery, through
the gateway, the core (validation, PostgreSQL commit, the price streams in Redis), the WebSocket gateway's
stream and its send. So the figure includes the client's own event-loop lag; the clients run in one process
(uvloop), and its CPU is printed beside the figures so a saturated client can be seen.

Printed: deliveries expected and received, latency P50/P90/P99/max in ms and each against seed 004's 100 ms
(the ratio); per batch, the latency of its first delivery (the pipeline) and of its last (plus the fan-out of
the batch's ``clients`` deliveries and the clients' reading of them); the ingest requests' own P50/P99, and the
CPU of each process. Timestamps are milliseconds, so
figures below a millisecond round to it. Everything runs on 127.0.0.1 and stops by PID.

    python -m bench.ws --mode e2e [--clients 1000] [--symbols 20] [--rate 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import httpx
import orjson
import psutil
import uvloop
from websockets.asyncio.client import ClientConnection, connect

from bench.stack import stack
from tests.support.processes import running_gateway

TARGET_MS = 100.0  # seed 004: WebSocket delivery < 100 ms from ingestion to client
SOURCE = "coinbase"
UNCAPPED = {"PERSEUS_WS_MAX_CONNECTIONS": "0", "PERSEUS_WS_MAX_CONNECTIONS_PER_IP": "0"}
CONNECTS_IN_FLIGHT = 100
SETTLE_S = 1.0  # after the last feed: deliveries still on their way


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@lru_cache(maxsize=1024)  # a batch's stamp reaches every client: parsed once, not once per delivery
def ms_of(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000 + 0.5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Clients:
    """The WebSocket clients of one run, and the latency of every price update they received."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.by_batch: dict[str, list[float]] = {}  # a batch's stamp: its deliveries' first and last latency
        self.recording = False
        self.other = 0

    async def open(self, url: str, symbol: str, gate: asyncio.Semaphore) -> ClientConnection:
        async with gate:
            ws = await connect(url, open_timeout=30, max_queue=None, ping_interval=None)
            await ws.send(json.dumps({"action": "subscribe", "symbols": [symbol.replace("-", "/")]}))
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if reply.get("type") != "subscribed":
                raise RuntimeError(f"subscribe {symbol}: {reply}")
            return ws

    async def read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                now_ms = time.time() * 1000
                message = orjson.loads(raw)
                if message.get("type") != "price_update":
                    self.other += 1
                    continue
                if self.recording:
                    stamp = message["data"]["timestamp"]
                    latency = now_ms - ms_of(stamp)
                    self.latencies.append(latency)
                    span = self.by_batch.setdefault(stamp, [latency, latency])
                    span[0], span[1] = min(span[0], latency), max(span[1], latency)


async def write(http: httpx.AsyncClient, symbols: list[str], rate: float, seconds: float) -> list[float]:
    """``rate`` batches a second of one feed per symbol, each stamped when built; the requests' latencies."""
    took: list[float] = []
    period = 1.0 / rate
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        stamp = iso_ms(int(time.time() * 1000))
        feeds = [
            {"symbol": s.replace("-", "/"), "price": f"{100 + n % 97}.{i:02d}", "volume": "1.5", "source": SOURCE,
             "timestamp": stamp}
            for i, s in enumerate(symbols)
        ]  # fmt: skip
        sent = time.perf_counter()
        response = await http.post("/internal/v1/ingest", json={"worker_id": "bench-e2e", "feeds": feeds})
        took.append((time.perf_counter() - sent) * 1000)
        if response.status_code != 200 or response.json()["data"]["ingested"] != len(feeds):
            raise RuntimeError(f"ingest: {response.status_code} {response.text[:500]}")
        n += 1
        await asyncio.sleep(max(0.0, started + n * period - time.monotonic()))
    return took


async def run(args: argparse.Namespace, rest_addr: str, ws_addr: str, key: str, pids: dict[str, int]) -> None:
    symbols = [f"E{i}-USD" for i in range(args.symbols)]
    async with httpx.AsyncClient(base_url=f"http://{rest_addr}", headers={"X-API-Key": key}, timeout=10) as http:
        await write(http, symbols, 1.0, 0.5)  # the symbols exist (ListSymbols) before clients subscribe to them
        clients = Clients()
        gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
        url = f"ws://{ws_addr}/public/v1/stream?key={key}"
        opened = time.monotonic()
        sockets = await asyncio.gather(
            *(clients.open(url, symbols[i % len(symbols)], gate) for i in range(args.clients))
        )
        print(f"{len(sockets)} clients subscribed in {time.monotonic() - opened:.1f} s", flush=True)
        readers = [asyncio.ensure_future(clients.read(ws)) for ws in sockets]
        processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        for p in processes.values():
            p.cpu_percent(None)
        clients.recording = True
        took = await write(http, symbols, args.rate, args.seconds)
        await asyncio.sleep(SETTLE_S)
        clients.recording = False
        cpu = {name: p.cpu_percent(None) for name, p in processes.items()}
        for ws in sockets:
            await ws.close()
        for reader in readers:
            reader.cancel()
    expected = len(took) * args.clients
    lat = clients.latencies
    p50, p90, p99 = (percentile(lat, q) for q in (50, 90, 99))
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.clients} clients over "
        f"{args.symbols} symbols, {args.rate:g} ingest batches/s of {args.symbols} feeds for {args.seconds:g} s"
    )
    print(f"deliveries {len(lat)} of {expected} expected ({len(lat) / expected:.1%})" if expected else "no batches")
    print(f"ingest -> WS client latency ms: p50 {p50:.0f}, p90 {p90:.0f}, p99 {p99:.0f}, max {max(lat, default=0):.0f}")
    print(f"against seed 004's {TARGET_MS:.0f} ms: p50 {p50 / TARGET_MS:.2f}x, p99 {p99 / TARGET_MS:.2f}x")
    first, last = [span[0] for span in clients.by_batch.values()], [span[1] for span in clients.by_batch.values()]
    print(
        f"per batch ({len(first)}): its first delivery p50 {percentile(first, 50):.0f} / p99 "
        f"{percentile(first, 99):.0f} ms (ingest, core, Redis, the WS gateway's first send), its last p50 "
        f"{percentile(last, 50):.0f} / p99 {percentile(last, 99):.0f} ms (with the fan-out and the clients reading)"
    )
    post = f"p50 {percentile(took, 50):.1f}, p99 {percentile(took, 99):.1f}"
    print(f"ingest request (POST, {args.symbols} feeds) ms: {post}")
    print("CPU % of one core: " + ", ".join(f"{name} {value:.0f}" for name, value in cpu.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="e2e")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0, help="ingest batches a second (one feed per symbol)")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    from bench.ws import raise_file_limit

    raise_file_limit()
    with (
        stack(rest=True, PERSEUS_MODE="exchange", PERSEUS_SIM_TRADES_PER_S="0") as s,
        running_gateway("ws", {**s.env, **UNCAPPED}, s.core.addr) as ws_gateway,
    ):
        assert s.rest is not None
        pids: dict[str, Any] = {
            "core": s.core.pid, "rest gateway": s.rest.pid, "ws gateway": ws_gateway.pid, "clients": os.getpid()
        }  # fmt: skip
        uvloop.run(run(args, s.rest.addr, ws_gateway.addr, s.key, pids))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
