"""``make bench-rest``: the hot candle read through Perseus, beside the two reference servers, in one run.

``GET /public/v1/candles/{exchange}/{symbol}?timeframe=1m&limit=100`` over 20
symbols of 1000 one-minute candles each (a cache hit), with wrk at 16, 64 and
256 connections, 10 s per point after a 2 s warm-up, against:

* Perseus: a pw-host core and the REST gateway on a private stack
  (:mod:`bench.stack`); the candles are written by the core's own
  ``CandleStore`` (PostgreSQL and the Redis window). The main rows use an
  internal key (not limited); a short extra row per level uses a pro key, so
  the Redis rate limiter runs on every request;
* the peers of ``../shared/peers``: ``python-sanic-direct`` (Sanic reading
  Redis directly) and ``node-fastify``, on a private ``redis-server`` seeded by
  the peers' own ``load/seed.py``.

It installs wrk (apt-get) and the Node peer's packages (npm, into a copy
under ``$PERSEUS_BENCH_PEERS``, default /tmp/perseus-bench-peers) when
missing, starts every server itself and stops each by PID.

    python -m bench.rest [--seconds 10] [--conns 16,64,256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis

from bench.stack import stack
from core.adapters.candle_store import CandleStore
from core.adapters.redis_keys import RedisKeys
from core.domain.candles import Candle
from core.domain.timeframes import Timeframe
from tests.support.processes import free_port
from tests.support.rest_stack import make_key

HERE = Path(__file__).resolve().parent
PEERS = (HERE.parent / ".." / "shared" / "peers").resolve()
PEERS_HOME = Path(os.environ.get("PERSEUS_BENCH_PEERS", "/tmp/perseus-bench-peers"))
SCRIPT = HERE / "rest_candles.lua"
SYMBOLS = [
    "BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOGE-USD", "DOT-USD", "AVAX-USD", "LINK-USD",
    "MATIC-USD", "LTC-USD", "BCH-USD", "ATOM-USD", "UNI-USD", "XLM-USD", "ETC-USD", "FIL-USD", "APT-USD",
    "NEAR-USD", "ARB-USD",
]  # fmt: skip
CANDLES = 1000
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z, as the peers' seed
SIM_EXCHANGE_ID = 1
# A pro key has 10,000 units a minute: a short run stays under it (non-200s would show in the table).
LIMITED_SECONDS = 4


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, env=env, stdout=subprocess.DEVNULL)


def ensure_node_peer() -> Path:
    target = PEERS_HOME / "node-fastify"
    if not (target / "node_modules").is_dir():
        print(f"installing the Node peer's packages into {target}", flush=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(PEERS / "node-fastify", target)
        for path in target.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        target.chmod(0o755)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=target, check=True)
    return target


def start(args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


async def seed_perseus(env: dict[str, str]) -> None:
    """20 x 1000 one-minute candles on `sim`, through the core's CandleStore (PostgreSQL and the Redis window)."""
    pool = await asyncpg.create_pool(env["PERSEUS_DATABASE_URL"], min_size=1, max_size=2)
    client = aioredis.Redis.from_url(env["PERSEUS_REDIS_URL"])
    try:
        store = CandleStore(pool, client, RedisKeys(env["PERSEUS_REDIS_PREFIX"]))
        await store.register_symbols(SIM_EXCHANGE_ID, SYMBOLS)
        for n, symbol in enumerate(SYMBOLS):
            price = Decimal(100 + n)
            candles = [
                Candle("sim", symbol, Timeframe.M1, START_MS + i * 60_000, price, price + 1, price - 1, price + i % 7,
                       Decimal(f"{i}.25"))
                for i in range(CANDLES)
            ]  # fmt: skip
            await store.insert(SIM_EXCHANGE_ID, candles)
            await store.add_to_windows(SIM_EXCHANGE_ID, candles)
    finally:
        await client.aclose()
        await pool.close()


def wrk(url: str, conns: int, seconds: float, env: dict[str, str]) -> dict[str, float]:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(SCRIPT), url],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("WRKJSON "))
    figures = json.loads(line.removeprefix("WRKJSON "))
    return {
        "rps": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "bad": figures["non200"] + figures["errors"],
    }


def print_row(name: str, conns: int, figures: dict[str, float]) -> None:
    print(
        f"{name:22s} {conns:5d} {figures['rps']:8.0f} {figures['p50_ms']:8.1f} "
        f"{figures['p99_ms']:8.1f} {figures['bad']:8.0f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--conns", default="16,64,256")
    args = parser.parse_args()
    levels = [int(c) for c in args.conns.split(",")]
    ensure_wrk()
    node_dir = ensure_node_peer()
    logs = PEERS_HOME / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    redis_port, sanic_port, node_port = free_port(), free_port(), free_port()
    peer_redis = start(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=PEERS_HOME, env={}, log=logs / "redis.log",
    )  # fmt: skip
    servers: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(0.5)
        subprocess.run([sys.executable, "seed.py", "--port", str(redis_port)], cwd=PEERS / "load", check=True)
        peer_env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}", "HOST": "127.0.0.1"}
        sanic_dir = PEERS / "python-sanic-direct"
        servers.append(
            start([sys.executable, "server.py"], cwd=sanic_dir, env={**peer_env, "PORT": str(sanic_port)},
                  log=logs / "sanic.log")
        )  # fmt: skip
        servers.append(
            start(["node", "server.js"], cwd=node_dir, env={**peer_env, "PORT": str(node_port)}, log=logs / "node.log")
        )
        with stack(rest=True, PERSEUS_MODE="pw-host") as s:
            assert s.rest is not None
            asyncio.run(seed_perseus(s.env))
            targets = {
                "perseus": (f"http://{s.rest.addr}", {"PREFIX": "/public/v1/candles/sim", "KEY": s.key}),
                "python-sanic-direct": (f"http://127.0.0.1:{sanic_port}", {}),
                "node-fastify": (f"http://127.0.0.1:{node_port}", {}),
            }
            wait_http(f"http://{s.rest.addr}/public/v1/candles/sim/BTC-USD?timeframe=1m", {"X-API-Key": s.key})
            for url, _ in list(targets.values())[1:]:
                wait_http(f"{url}/public/v1/candles/BTC-USD?timeframe=1m&limit=100")
            load = os.getloadavg()[0]
            print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f}; {args.seconds:g} s per point")
            print(f"{'server':22s} {'conns':>5s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'non-200':>8s}")
            results: dict[tuple[str, int], dict[str, float]] = {}
            for conns in levels:
                for name, (url, env) in targets.items():
                    wrk(url, conns, 2, env)  # warm-up
                    figures = wrk(url, conns, args.seconds, env)
                    if name == "perseus":  # again with a pro key: the Redis limiter on every request
                        pro = {**env, "KEY": make_key(s.env, "pro")}
                        limited = wrk(url, conns, LIMITED_SECONDS, pro)
                        print_row("perseus (pro key)", conns, limited)
                    results[name, conns] = figures
                    print_row(name, conns, figures)
            for conns in levels:
                ours = results["perseus", conns]["rps"]
                print(
                    f"c={conns}: perseus / sanic-direct {ours / results['python-sanic-direct', conns]['rps']:.2f}, "
                    f"perseus / node {ours / results['node-fastify', conns]['rps']:.2f}"
                )
    finally:
        for proc in servers:
            stop(proc)
        stop(peer_redis)


if __name__ == "__main__":
    main()
