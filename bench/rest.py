"""``make bench-rest``: the hot candle read through Perseus, beside the two reference servers, in one run.

``GET /public/v1/candles/{exchange}/{symbol}?timeframe=1m&limit=100`` over 20
symbols of 1000 one-minute candles each (a cache hit), with wrk at 16, 64 and
256 connections, 10 s per point after a 2 s warm-up, against:

* Perseus: a pw-host core and the REST gateway on a private stack
  (:mod:`bench.stack`); the candles are written by the core's own
  ``CandleStore`` (PostgreSQL and the Redis window). The main rows use an
  admin key (never limited); a short extra row per level uses pro keys (8
  fresh ones, rotated, so no run reaches a key's 10,000 units a minute), so
  the Redis rate limiter runs on every request;
* the peers of ``../shared/peers``: ``python-sanic-direct`` (Sanic reading
  Redis directly) and ``node-fastify``, on a private ``redis-server`` seeded by
  the peers' own ``load/seed.py``.

``--redis cluster`` runs Perseus on a local Redis Cluster started for the run
(:func:`bench.stack.redis_target`); ``--redis standalone,cluster`` runs both
stacks side by side and measures them in the same run, point by point, with
the ratios cluster / standalone. The peers keep their own ``redis-server``.

Then the aggregate of two REST gateway processes against one, on the same
core and Redis: two wrk processes of ``--aggregate-conns`` connections each,
both at one gateway, then one at each of two (so the load generator is the
same in both runs), with the ratio.

**The cache-miss point** (issue 18.5, ``--points hot,miss``, both by default): the same read with a random
``end`` per request (epoch ms inside the seeded range, ``MISS`` in the wrk script), so a request almost never
finds its body in the gateway's candle cache (20 symbols x 900 one-minute boundaries, against the cache's
2,048 entries); the peers answer ``end`` from Redis (``ZRANGE ... BYSCORE REV LIMIT``), Perseus through the core.
Perseus's row gives the cache's own hit share (``/metrics``) so a miss point is seen to be one.

**Key tiers at one level** (issue 18.4, ``--tiers 256``; ``--tiers 0`` skips): Perseus's hot read with an
admin key (never limited), then internal, pro and free keys (``TIER_KEYS`` fresh keys per tier, rotated, so
that a short run stays under each key's limit; any 429 shows as non-200, and the p99 of that row then mixes
refusals in), each with its p99 beside the admin row's.

``--tracing``: then the cost of OpenTelemetry traces (issue 19), in the same run: a second core and gateway
on the same database and Redis, exporting every span over OTLP/HTTP to a local sink that keeps nothing
(:mod:`bench.otlp_sink`), measured level by level right after the untraced pair, with the ratio on / off.
The untraced rows are the ones above: with no OTLP endpoint, tracing costs a boolean per call site.

It installs wrk (apt-get) and the Node peer's packages (npm, into a copy
under ``$PERSEUS_BENCH_PEERS``, default /tmp/perseus-bench-peers) when
missing, starts every server itself and stops each by PID.

    python -m bench.rest [--seconds 10] [--conns 16,64,256] [--redis standalone|cluster|standalone,cluster]
                         [--no-peers] [--aggregate-conns 32] [--tracing] [--points hot,miss] [--tiers 256]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from bench.otlp_sink import otlp_sink
from bench.stack import RedisKind, Stack, redis_kinds, redis_target, stack
from common import redis_clients
from core.adapters.candle_store import CandleStore
from core.adapters.redis_keys import RedisKeys
from core.domain.candles import Candle
from core.domain.timeframes import Timeframe
from tests.support.processes import free_port, running_core, running_gateway
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
# A pro key has 10,000 units a minute, fewer than a 4 s run at 64 connections sends: the run rotates over
# PRO_KEYS fresh pro keys (80,000 units: up to 20,000 requests a second stay under). 429s show as non-200.
LIMITED_SECONDS = 4
PRO_KEYS = 8
WRK_WAIT_S = 120.0
# The miss point's `end`: from the 101st candle's open to the last's, so every answer has 100 candles.
MISS_RANGE = f"{START_MS + 100 * 60_000},{START_MS + (CANDLES - 1) * 60_000}"
TIERS = ("admin", "internal", "pro", "free")
# Per tier, keys rotated by the tier row: free keys have 1,000 units a minute, internal ones 5,000.
TIER_KEYS = {"admin": 1, "internal": 8, "pro": 8, "free": 24}


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
    url = env["PERSEUS_REDIS_URL"]
    pipeline = redis_clients.pipeline(url, await redis_clients.open_mode(url), client_name="bench-rest-seed")
    try:
        store = CandleStore(pool, pipeline, RedisKeys(env["PERSEUS_REDIS_PREFIX"]))
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
        await pipeline.aclose()
        await pool.close()


def wrk_start(url: str, conns: int, seconds: float, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(SCRIPT), url],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wrk_result(proc: subprocess.Popen[str]) -> dict[str, float]:
    stdout, stderr = proc.communicate(timeout=WRK_WAIT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr[-2000:]}")
    line = next(line for line in stdout.splitlines() if line.startswith("WRKJSON "))
    figures = json.loads(line.removeprefix("WRKJSON "))
    return {
        "rps": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "bad": figures["non200"] + figures["errors"],
    }


def wrk(url: str, conns: int, seconds: float, env: dict[str, str]) -> dict[str, float]:
    return wrk_result(wrk_start(url, conns, seconds, env))


def wrk_together(urls: list[str], conns: int, seconds: float, env: dict[str, str]) -> dict[str, float]:
    """One wrk per URL at the same time (``conns`` each): summed req/s, the worst p50/p99, summed non-200s."""
    results = [wrk_result(proc) for proc in [wrk_start(url, conns, seconds, env) for url in urls]]
    return {
        "rps": sum(r["rps"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "bad": sum(r["bad"] for r in results),
    }


def print_row(name: str, conns: int, figures: dict[str, float]) -> None:
    print(
        f"{name:30s} {conns:5d} {figures['rps']:8.0f} {figures['p50_ms']:8.1f} "
        f"{figures['p99_ms']:8.1f} {figures['bad']:8.0f}",
        flush=True,
    )


def cache_results(url: str) -> dict[str, float]:
    """The gateway's candle-cache counters (hit, miss, shared, bypass) and its limiter's local fallbacks
    (``fallback``: Redis did not answer the limiter in time) from its /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = re.findall(r'^perseus_rest_candle_cache_total\{result="(\w+)"\} (\S+)$', text, re.M)
    results = {name: float(value) for name, value in found}
    fallbacks = re.search(r"^perseus_rest_ratelimit_local_fallbacks_total (\S+)$", text, re.M)
    return {**results, "fallback": float(fallbacks.group(1)) if fallbacks else 0.0}


def hit_share(before: dict[str, float], after: dict[str, float]) -> str:
    counts = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after if name != "fallback"}
    total = sum(counts.values())
    return f"cache hits {counts.get('hit', 0.0) / total:.1%} of {total:.0f} reads" if total else "no cache reads"


def make_keys(env: dict[str, str], tier: str, count: int) -> list[str]:
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: make_key(env, tier), range(count)))


def tiers(s: Stack, conns: int, seconds: float) -> None:
    """Perseus's hot read at ``conns`` with each key tier's keys, p99 beside the admin key's (issue 18.4)."""
    assert s.rest is not None
    url = f"http://{s.rest.addr}"
    keys = {tier: [s.key] if tier == "admin" else make_keys(s.env, tier, TIER_KEYS[tier]) for tier in TIERS}
    print(f"key tiers at c={conns} (keys per tier {TIER_KEYS}; non-200 = 429s of a tier over its limits):")
    rows: dict[str, dict[str, float]] = {}
    for tier in TIERS:
        env = {"PREFIX": "/public/v1/candles/sim", "KEY": ",".join(keys[tier])}
        wrk(url, conns, 2, env)  # warm-up
        before = cache_results(url)
        rows[tier] = wrk(url, conns, seconds, env)
        print_row(f"perseus ({tier} key)", conns, rows[tier])
        after = cache_results(url)
        missed = {name: after[name] - before.get(name, 0.0) for name in ("fallback", "bypass") if name in after}
        # Redis deadlines passed: limiter calls counted locally, reads that bypassed the cache (issue 18.4)
        print(f"  limiter fallbacks {missed.get('fallback', 0):.0f}, cache bypasses {missed.get('bypass', 0):.0f}")
    p99 = {tier: rows[tier]["p99_ms"] for tier in TIERS}
    goal = ", ".join(f"{tier} {p99[tier]:.1f} ms ({p99[tier] / 50:.2f} of the 50 ms goal)" for tier in TIERS)
    against = ", ".join(f"{tier} / admin {p99[tier] / p99['admin']:.2f}x" for tier in TIERS[1:])
    print(f"c={conns}: p99 by tier {goal}; {against}", flush=True)


def label(kind: RedisKind) -> str:
    return "perseus" if kind == "standalone" else f"perseus [{kind}]"


@contextlib.contextmanager
def peers(logs: Path) -> Iterator[dict[str, tuple[str, dict[str, str]]]]:
    """The two reference servers on a private redis-server seeded by the peers' own seed.py."""
    node_dir = ensure_node_peer()
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
        targets: dict[str, tuple[str, dict[str, str]]] = {
            "python-sanic-direct": (f"http://127.0.0.1:{sanic_port}", {}),
            "node-fastify": (f"http://127.0.0.1:{node_port}", {}),
        }
        for url, _ in targets.values():
            wait_http(f"{url}/public/v1/candles/BTC-USD?timeframe=1m&limit=100")
        yield targets
    finally:
        for proc in servers:
            stop(proc)
        stop(peer_redis)


def aggregate(s: Stack, conns: int, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """Two wrk processes of ``conns`` connections each: both at the stack's gateway, then one at it and one at a
    second gateway process on the same core. The load generator is the same in both runs."""
    assert s.rest is not None
    env = {"PREFIX": "/public/v1/candles/sim", "KEY": s.key}
    first = f"http://{s.rest.addr}"
    with running_gateway("rest", s.env, s.core.addr) as second_gateway:
        second = f"http://{second_gateway.addr}"
        wait_http(f"{second}/public/v1/candles/sim/BTC-USD?timeframe=1m", {"X-API-Key": s.key})
        wrk_together([first, second], conns, 2, env)  # warm-up of both
        one = wrk_together([first, first], conns, seconds, env)
        two = wrk_together([first, second], conns, seconds, env)
    return one, two


def miss_point(targets: dict[str, tuple[str, dict[str, str]]], levels: list[int], seconds: float) -> None:
    """Every target at every level with a random ``end`` per request: the cache-miss read (issue 18.5)."""
    print(f"cache-miss point: a random end per request in [{MISS_RANGE}] ms:")
    results: dict[tuple[str, int], dict[str, float]] = {}
    for conns in levels:
        for name, (url, env) in targets.items():
            miss = {**env, "MISS": MISS_RANGE}
            wrk(url, conns, 2, miss)  # warm-up
            before = cache_results(url) if name.startswith("perseus") else None
            results[name, conns] = figures = wrk(url, conns, seconds, miss)
            print_row(f"{name} (miss)", conns, figures)
            if before is not None:
                print(f"  {name}: {hit_share(before, cache_results(url))}", flush=True)
    for conns in levels:
        for name in targets:
            if not name.startswith("perseus"):
                continue
            ours = results[name, conns]["rps"]
            ratios = [f"{name} / {peer} {ours / results[peer, conns]['rps']:.2f}"
                      for peer in ("python-sanic-direct", "node-fastify") if (peer, conns) in results]  # fmt: skip
            if ratios:
                print(f"c={conns} miss: " + ", ".join(ratios), flush=True)


def tracing_cost(s: Stack, levels: list[int], seconds: float) -> None:
    """The untraced stack against a traced core and gateway on the same stores, level by level (issue 19)."""
    assert s.rest is not None
    env = {"PREFIX": "/public/v1/candles/sim", "KEY": s.key}
    path = "/public/v1/candles/sim/BTC-USD?timeframe=1m"
    with (
        otlp_sink() as (otel, received),
        running_core({**s.env, **otel, "PERSEUS_MODE": "pw-host"}) as core,
        running_gateway("rest", {**s.env, **otel}, core.addr) as gateway,
    ):
        plain, traced = f"http://{s.rest.addr}", f"http://{gateway.addr}"
        wait_http(traced + path, {"X-API-Key": s.key})
        print("tracing: the same read, untraced pair then traced pair (every span exported to a local sink):")
        for conns in levels:
            wrk(plain, conns, 2, env)  # warm-up of both
            wrk(traced, conns, 2, env)
            off = wrk(plain, conns, seconds, env)
            on = wrk(traced, conns, seconds, env)
            print_row("perseus, tracing off", conns, off)
            print_row("perseus, tracing on", conns, on)
            ratios = {name: on[name] / off[name] for name in ("rps", "p50_ms", "p99_ms")}
            print(
                f"c={conns}: tracing on / off {ratios['rps']:.2f} req/s, "
                f"p50 {ratios['p50_ms']:.2f}x, p99 {ratios['p99_ms']:.2f}x",
                flush=True,
            )
        print(f"tracing: the sink received {received.posts} exports, {received.body_bytes / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--conns", default="16,64,256")
    parser.add_argument(
        "--redis", default="standalone", help="standalone, cluster (a local cluster started for the run) or both"
    )
    parser.add_argument("--no-peers", action="store_true", help="Perseus only, without the two reference servers")
    parser.add_argument(
        "--aggregate-conns", type=int, default=32,
        help="connections per wrk in the 2-gateways-against-1 measurement (two wrk processes); 0 skips it",
    )  # fmt: skip
    parser.add_argument("--tracing", action="store_true", help="then the cost of traces: a traced pair, on / off")
    parser.add_argument(
        "--points", default="hot,miss", help="hot (the cached read), miss (a random `end` per request) or both"
    )
    parser.add_argument("--tiers", type=int, default=256, help="connections of the per-tier rows; 0 skips them")
    args = parser.parse_args()
    levels = [int(c) for c in args.conns.split(",")]
    points = [p.strip() for p in args.points.split(",") if p.strip()]
    if not points or set(points) - {"hot", "miss"}:
        parser.error(f"--points takes hot, miss or both, not {args.points!r}")
    kinds = redis_kinds(args.redis)
    ensure_wrk()
    logs = PEERS_HOME / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as running:
        targets: dict[str, tuple[str, dict[str, str]]] = {}
        stacks: dict[RedisKind, Stack] = {}
        for kind in kinds:
            redis_url = running.enter_context(redis_target(kind))
            s = running.enter_context(stack(rest=True, redis_url=redis_url, redis=kind, PERSEUS_MODE="pw-host"))
            assert s.rest is not None
            asyncio.run(seed_perseus(s.env))
            wait_http(f"http://{s.rest.addr}/public/v1/candles/sim/BTC-USD?timeframe=1m", {"X-API-Key": s.key})
            targets[label(kind)] = (f"http://{s.rest.addr}", {"PREFIX": "/public/v1/candles/sim", "KEY": s.key})
            stacks[kind] = s
        if not args.no_peers:
            targets.update(running.enter_context(peers(logs)))
        load = os.getloadavg()[0]
        print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f}; {args.seconds:g} s per point; redis {kinds}")
        print(f"{'server':30s} {'conns':>5s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'non-200':>8s}")
        results: dict[tuple[str, int], dict[str, float]] = {}
        for conns in levels if "hot" in points else []:
            for name, (url, env) in targets.items():
                wrk(url, conns, 2, env)  # warm-up
                figures = wrk(url, conns, args.seconds, env)
                if name.startswith("perseus"):  # again with a pro key: the Redis limiter on every request
                    kind = next(k for k in stacks if label(k) == name)
                    keys = ",".join(make_key(stacks[kind].env, "pro") for _ in range(PRO_KEYS))
                    pro = {**env, "KEY": keys}
                    limited = wrk(url, conns, LIMITED_SECONDS, pro)
                    results[f"{name} (pro key)", conns] = limited
                    print_row(f"{name} (pro key)", conns, limited)
                results[name, conns] = figures
                print_row(name, conns, figures)
        for conns in levels if "hot" in points else []:
            for kind in kinds:
                ours = results[label(kind), conns]["rps"]
                ratios = [f"{label(kind)} / {peer} {ours / results[peer, conns]['rps']:.2f}"
                          for peer in ("python-sanic-direct", "node-fastify") if (peer, conns) in results]  # fmt: skip
                if kind != "standalone" and "standalone" in stacks:
                    for suffix in ("", " (pro key)"):
                        mine = results[label(kind) + suffix, conns]["rps"]
                        ratios.append(f"{kind}{suffix} / standalone{suffix} "
                                      f"{mine / results[label('standalone') + suffix, conns]['rps']:.2f}")  # fmt: skip
                if ratios:
                    print(f"c={conns}: " + ", ".join(ratios))
        if "miss" in points:
            miss_point(targets, levels, args.seconds)
        if args.tiers > 0:
            for s in stacks.values():
                tiers(s, args.tiers, args.seconds)
        if args.tracing:
            tracing_cost(next(iter(stacks.values())), levels, args.seconds)
        if args.aggregate_conns > 0:
            print(f"2 REST gateway processes against 1, same core, two wrk of {args.aggregate_conns} connections each:")
            for kind, s in stacks.items():
                one, two = aggregate(s, args.aggregate_conns, args.seconds)
                print_row(f"{label(kind)} x 1 gateway", 2 * args.aggregate_conns, one)
                print_row(f"{label(kind)} x 2 gateways", 2 * args.aggregate_conns, two)
                print(f"{label(kind)}: 2 gateways / 1 {two['rps'] / one['rps']:.2f}", flush=True)


if __name__ == "__main__":
    main()
