"""``make bench-workers``: the REST and WS gateways as 1 process against 2 worker processes on one port.

The same stack as ``make bench-rest`` (20 symbols of 1,000 one-minute candles, seeded through the core's
CandleStore, an admin key): hot ``/public/v1/candles/sim/<symbol>?timeframe=1m&limit=100`` by wrk at
``--conns`` connections, first against a gateway of one process, then against one of two worker processes
sharing its port (``SO_REUSEPORT``), both in front of the same core. The load average is printed beside
each row: on a loaded box the figures are preliminary.

``--ws CLIENTSxRATE`` (default ``1000x100``; empty: none) adds the WebSocket fan-out of ``make bench-ws``
(the Node load tool, 20 channels) against ``PERSEUS_WS_WORKERS=1`` and ``2``: deliveries/s and latency.
The load tool's RSS and CPU columns are the supervisor's with 2 workers, not the workers', so they are
not printed.

    python -m bench.workers [--seconds 5] [--conns 64] [--workers 2] [--ws 1000x100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from bench.rest import seed_perseus, wait_http, wrk
from bench.stack import Stack, stack
from tests.support.processes import Process, running_gateway


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def wait_workers(process: Process, workers: int, timeout: float = 60.0) -> None:
    """Until the supervisor's every worker has started (its "worker <i> started" lines) and had a moment."""
    deadline = time.monotonic() + timeout
    while process.output().count(" started (pid ") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers not started within {timeout} s")
        time.sleep(0.2)
    time.sleep(3.0)  # a spawned worker imports and binds within a few seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ws", default="1000x100", help="WS clients x events/s per channel; empty: no WS rows")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; {args.seconds:g} s per run; load {load_average()}")
    with stack(PERSEUS_MODE="pw-host") as s:
        asyncio.run(seed_perseus(s.env))
        env = {"PREFIX": "/public/v1/candles/sim", "KEY": s.key}
        rows = []
        for workers in (1, args.workers):
            gateway_env = {**s.env, "PERSEUS_REST_WORKERS": str(workers), "PERSEUS_LOG_LEVEL": "INFO"}
            with running_gateway("rest", gateway_env, s.core.addr) as gateway:
                if workers > 1:
                    wait_workers(gateway, workers)
                url = f"http://{gateway.addr}"
                wait_http(f"{url}/public/v1/candles/sim/BTC-USD?timeframe=1m&limit=100", {"X-API-Key": s.key})
                wrk(url, args.conns, 2, env)  # warm-up
                figures = wrk(url, args.conns, args.seconds, env)
                rows.append((workers, figures, load_average()))
        print(f"REST candles(100) hot, c={args.conns}, one core:")
        for workers, figures, load in rows:
            print(
                f"  {workers} REST process{'es' if workers > 1 else '  '}: {figures['rps']:8.0f} req/s  "
                f"p50 {figures['p50_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms  non-200 {figures['bad']:.0f}  "
                f"(load {load})"
            )
        if len(rows) > 1:
            print(f"  {rows[1][0]} processes / 1: {rows[1][1]['rps'] / rows[0][1]['rps']:.2f}x")
        if args.ws:
            ws_rows(s, args)


def ws_rows(s: Stack, args: argparse.Namespace) -> None:
    from bench import ws

    clients, rate = (int(part) for part in args.ws.split("x"))
    ws.raise_file_limit()
    modules = ws.node_modules()
    results = []
    for workers in (1, args.workers):
        env = {**s.env, "PERSEUS_WS_WORKERS": str(workers)}
        with ws.perseus(Stack(env, s.core, s.rest, s.key, s.redis)) as (url, pid):
            time.sleep(4.0 if workers > 1 else 0.0)  # every worker binds (the first answering is not all)
            result = ws.load(url, pid, f"perseus x{workers}", clients, rate, int(args.seconds), modules)
            results.append((workers, result, load_average()))
    print(f"WS fan-out {clients} clients x {rate} events/s per channel (20 channels), one core:")
    for workers, r, load in results:
        lat = r["latMs"]
        print(
            f"  {workers} WS process{'es' if workers > 1 else '  '}: {r['deliveredPerSec']} delivered/s "
            f"(target {r['targetDeliveriesPerSec']})  p50 {lat['p50']} ms  p99 {lat['p99']} ms  max {lat['max']} ms  "
            f"undelivered {r['dropped']}  (load {load})"
        )


if __name__ == "__main__":
    main()
