"""``python -m bench.redis_clients``: the REST gateway's Redis round trip through each candidate client, one run.

Issue 15 asked to measure before choosing a cluster-capable client (valkey-glide, coredis and redis-py's
cluster client were the candidates) against the hand-written RESP paths of ``common/resp.py``. The pattern
measured is the gateway's hot path for a limited key (:mod:`gateways.rest.limiter`): ``CALLERS`` (64)
concurrent callers, each call one ``EVALSHA`` of the rate-limit window script
(:data:`gateways.rest.ratelimit.WINDOW_SCRIPT`, key ``ratelimit:{apikey:<id>}:<window>``, one key id per
caller, a limit never reached so every call increments) plus the candle probe
``ZRANGE candles:{sim:<symbol>}:1m -1 -1 WITHSCORES`` (20 windows of 100 members), sent together.

Against the standalone Redis (``PERSEUS_BENCH_REDIS_URL``, default 127.0.0.1:6379) and against a
:class:`~perseus_cli.devstack.redis_cluster.LocalRedisCluster` (3 masters, 3 replicas) this script starts
and stops itself. On a cluster the two commands of a call live on different nodes (different hash tags):
every client splits them itself. Each client is driven the way its documentation suggests:

* ``resp AutoPipeline`` / ``resp ClusterPipeline``: ``await p.call(evalsha, zrange)`` (the gateway's code);
* ``redis-py pipeline``: ``Redis.pipeline(transaction=False)`` with both commands (the gateway before
  ``AutoPipeline``); ``redis-py cluster gather``: ``RedisCluster`` with the two commands awaited together
  (its cluster pipeline refuses ``EVALSHA``);
* ``coredis pipeline``: ``pipeline(transaction=False)``, on ``Redis`` and on ``RedisCluster``;
* ``valkey-glide gather``: ``invoke_script`` and the ``ZRANGE`` awaited together on the one multiplexed
  connection (glide pipelines concurrent commands itself); ``valkey-glide batch``: a non-atomic ``Batch``
  / ``ClusterBatch`` of the two.

Per client: calls/s over the run, p50/p99 of one call, and the CPU this process spent per call (Python,
and glide's Rust threads: ``time.process_time``), which is what a CPU-bound gateway pays. Rounds are
interleaved (every client once, then again) so a burst of other work on the machine hits all of them;
the medians of the rounds are printed, then the ratios to ``resp AutoPipeline`` of the same run.

coredis and valkey-glide are not dependencies of Perseus: ``pip install coredis valkey-glide`` into the
venv to measure them; a client that cannot be imported is reported as skipped.

    python -m bench.redis_clients [--seconds 3] [--rounds 3] [--callers 64] [--only NAME,...] [--no-cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
import uvloop

from bench.stack import REDIS_URL
from bench.stats import percentile
from common.resp import AutoPipeline, ReplyError
from gateways.rest.candle_cache import window_key
from gateways.rest.ratelimit import WINDOW_S, WINDOW_SCRIPT, window_of

CALLERS = 64
SYMBOLS = 20
WINDOW_MEMBERS = 100
LIMIT = 10**12  # never reached: every call takes the INCRBY branch, as an allowed request does
TTL_MS = (WINDOW_S + 5) * 1000
WARMUP_S = 0.5
CALL_TIMEOUT_S = 5.0

Call = Callable[[int], Awaitable[tuple[Any, Any]]]  # caller index -> (script reply, probe reply)
Close = Callable[[], Awaitable[None]]


@dataclass
class Target:
    """Where a client runs: the URL, the key prefix and whether it is a cluster."""

    name: str
    url: str
    cluster: bool
    prefix: str

    def limit_key(self, caller: int) -> str:
        return f"{self.prefix}ratelimit:{{apikey:{caller}}}:{window_of(time.time())}"

    def probe_key(self, caller: int) -> str:
        return window_key(self.prefix, "sim", f"SYM{caller % SYMBOLS}-USD", "1m")


@dataclass
class Row:
    client: str
    target: str
    rounds: list[tuple[float, float, float, float]] = field(default_factory=list)  # calls/s, p50, p99, cpu µs
    skipped: str = ""

    def median(self, index: int) -> float:
        return statistics.median(r[index] for r in self.rounds) if self.rounds else float("nan")


# --- the clients: each factory returns (one call of caller i, close) -------------------------------------------


async def resp_auto(t: Target) -> tuple[Call, Close]:
    client = aioredis.Redis.from_url(t.url)
    pipeline = AutoPipeline.beside(client, "bench-redis-clients")
    await client.aclose()
    sha = pipeline.register_script(WINDOW_SCRIPT)

    async def call(i: int) -> tuple[Any, Any]:
        spent, probe = await pipeline.call(
            ("EVALSHA", sha, 1, t.limit_key(i), 1, LIMIT, TTL_MS), ("ZRANGE", t.probe_key(i), -1, -1, "WITHSCORES")
        )
        return spent, probe

    return call, pipeline.aclose


async def resp_cluster(t: Target) -> tuple[Call, Close]:
    from common import redis_clients  # helper A's factories (issue 15); missing until they land

    pipeline = redis_clients.pipeline(t.url, "cluster", client_name="bench-redis-clients")
    sha = pipeline.register_script(WINDOW_SCRIPT)

    async def call(i: int) -> tuple[Any, Any]:
        spent, probe = await pipeline.call(
            ("EVALSHA", sha, 1, t.limit_key(i), 1, LIMIT, TTL_MS), ("ZRANGE", t.probe_key(i), -1, -1, "WITHSCORES")
        )
        return spent, probe

    return call, pipeline.aclose


async def redis_py_pipeline(t: Target) -> tuple[Call, Close]:
    client = aioredis.Redis.from_url(t.url)
    sha = await client.script_load(WINDOW_SCRIPT)

    async def call(i: int) -> tuple[Any, Any]:
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(sha, 1, t.limit_key(i), 1, LIMIT, TTL_MS)
        pipe.zrange(t.probe_key(i), -1, -1, withscores=True)
        spent, probe = await pipe.execute(raise_on_error=False)
        return spent, probe

    return call, client.aclose


async def redis_py_cluster(t: Target) -> tuple[Call, Close]:
    client = aioredis.RedisCluster.from_url(t.url)
    script = client.register_script(WINDOW_SCRIPT)

    async def call(i: int) -> tuple[Any, Any]:
        spent, probe = await asyncio.gather(
            script(keys=[t.limit_key(i)], args=[1, LIMIT, TTL_MS]),
            client.zrange(t.probe_key(i), -1, -1, withscores=True),
        )
        return spent, probe

    return call, client.aclose


async def coredis_pipeline(t: Target) -> tuple[Call, Close]:
    import coredis

    host, port = _host_port(t.url)
    client: Any = coredis.RedisCluster(host, port) if t.cluster else coredis.Redis(host, port)
    await client.__aenter__()  # coredis 5+: a client is an async context manager (its connection pool's tasks)
    sha = await client.script_load(WINDOW_SCRIPT)

    async def call(i: int) -> tuple[Any, Any]:
        async with client.pipeline(transaction=False) as pipe:
            spent = pipe.evalsha(sha, keys=[t.limit_key(i)], args=[1, LIMIT, TTL_MS])
            probe = pipe.zrange(t.probe_key(i), -1, -1, withscores=True)
        return await spent, await probe

    async def close() -> None:
        await client.__aexit__(None, None, None)

    return call, close


async def coredis_gather(t: Target) -> tuple[Call, Close]:
    import coredis

    host, port = _host_port(t.url)
    client: Any = coredis.RedisCluster(host, port) if t.cluster else coredis.Redis(host, port)
    await client.__aenter__()
    sha = await client.script_load(WINDOW_SCRIPT)

    async def call(i: int) -> tuple[Any, Any]:
        spent, probe = await asyncio.gather(
            client.evalsha(sha, keys=[t.limit_key(i)], args=[1, LIMIT, TTL_MS]),
            client.zrange(t.probe_key(i), -1, -1, withscores=True),
        )
        return spent, probe

    async def close() -> None:
        await client.__aexit__(None, None, None)

    return call, close


async def _glide(t: Target) -> Any:
    import glide

    host, port = _host_port(t.url)
    addresses = [glide.NodeAddress(host, port)]
    if t.cluster:
        return await glide.GlideClusterClient.create(
            glide.GlideClusterClientConfiguration(addresses, request_timeout=int(CALL_TIMEOUT_S * 1000))
        )
    return await glide.GlideClient.create(
        glide.GlideClientConfiguration(addresses, request_timeout=int(CALL_TIMEOUT_S * 1000))
    )


async def glide_gather(t: Target) -> tuple[Call, Close]:
    import glide

    client = await _glide(t)
    script = glide.Script(WINDOW_SCRIPT)  # type: ignore[no-untyped-call]

    async def call(i: int) -> tuple[Any, Any]:
        spent, probe = await asyncio.gather(
            client.invoke_script(script, keys=[t.limit_key(i)], args=["1", str(LIMIT), str(TTL_MS)]),
            client.custom_command(["ZRANGE", t.probe_key(i), "-1", "-1", "WITHSCORES"]),
        )
        return spent, probe

    return call, client.close


async def glide_batch(t: Target) -> tuple[Call, Close]:
    import glide

    client = await _glide(t)
    script = glide.Script(WINDOW_SCRIPT)  # type: ignore[no-untyped-call]
    sha = script.get_hash()
    await client.custom_command(["SCRIPT", "LOAD", WINDOW_SCRIPT])  # a batch has no invoke_script: EVALSHA it
    if t.cluster:
        await client.custom_command(["SCRIPT", "LOAD", WINDOW_SCRIPT], glide.AllPrimaries())
    batch_class = glide.ClusterBatch if t.cluster else glide.Batch

    async def call(i: int) -> tuple[Any, Any]:
        batch = batch_class(is_atomic=False)
        batch.custom_command(["EVALSHA", sha, "1", t.limit_key(i), "1", str(LIMIT), str(TTL_MS)])
        batch.custom_command(["ZRANGE", t.probe_key(i), "-1", "-1", "WITHSCORES"])
        spent, probe = await client.exec(batch, raise_on_error=False)
        return spent, probe

    return call, client.close


STANDALONE: dict[str, Callable[[Target], Awaitable[tuple[Call, Close]]]] = {
    "resp AutoPipeline": resp_auto,
    "redis-py pipeline": redis_py_pipeline,
    "coredis pipeline": coredis_pipeline,
    "coredis gather": coredis_gather,
    "valkey-glide gather": glide_gather,
    "valkey-glide batch": glide_batch,
}
CLUSTER: dict[str, Callable[[Target], Awaitable[tuple[Call, Close]]]] = {
    "resp ClusterPipeline": resp_cluster,
    "redis-py cluster gather": redis_py_cluster,
    "coredis pipeline": coredis_pipeline,
    "coredis gather": coredis_gather,
    "valkey-glide gather": glide_gather,
    "valkey-glide batch": glide_batch,
}
BASELINE = ("resp AutoPipeline", "standalone")


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def _check(client: str, spent: Any, probe: Any) -> None:
    """One call's replies look right: the script allowed and counted, the probe found the window's newest member."""
    if isinstance(spent, (ReplyError, Exception)) or isinstance(probe, (ReplyError, Exception)):
        raise RuntimeError(f"{client}: an error reply ({spent!r}, {probe!r})")
    allowed, used = list(spent)
    if allowed != 1 or int(used) < 1 or not probe:
        raise RuntimeError(f"{client}: unexpected replies ({spent!r}, {probe!r})")


# --- one measurement -----------------------------------------------------------------------------------------


async def measure(
    client: str, factory: Callable[[Target], Awaitable[tuple[Call, Close]]], t: Target, callers: int, seconds: float
) -> tuple[float, float, float, float]:
    """Calls/s, p50 ms, p99 ms and CPU µs per call of ``callers`` concurrent callers for ``seconds``."""
    call, close = await factory(t)
    try:
        _check(client, *await asyncio.wait_for(call(0), CALL_TIMEOUT_S))
        latencies: list[list[float]] = [[] for _ in range(callers)]
        counting = False

        async def caller(i: int, end: float) -> None:
            mine = latencies[i]
            clock = time.perf_counter
            while (start := clock()) < end:
                await call(i)
                if counting:
                    mine.append(clock() - start)

        loop_end = time.perf_counter() + WARMUP_S + seconds
        tasks = [asyncio.ensure_future(caller(i, loop_end)) for i in range(callers)]
        await asyncio.sleep(WARMUP_S)
        counting = True
        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.wait_for(asyncio.gather(*tasks), seconds + CALL_TIMEOUT_S * 2)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await close()
    flat = sorted(x for mine in latencies for x in mine)
    calls = len(flat)
    return calls / elapsed, percentile(flat, 0.50) * 1000, percentile(flat, 0.99) * 1000, cpu / max(calls, 1) * 1e6


def seed(t: Target) -> None:
    """The 20 candle windows the probe reads (100 members each), through redis-py."""
    client: Any = redis.RedisCluster.from_url(t.url) if t.cluster else redis.Redis.from_url(t.url)
    try:
        for n in range(SYMBOLS):
            key = window_key(t.prefix, "sim", f"SYM{n}-USD", "1m")
            client.zadd(key, {f"candle-{i}".encode(): i for i in range(WINDOW_MEMBERS)})
            client.expire(key, 3600)
    finally:
        client.close()


def cleanup(t: Target) -> None:
    client = redis.Redis.from_url(t.url)
    try:
        for key in client.scan_iter(match=f"{t.prefix}*", count=1000):
            client.unlink(key)
    finally:
        client.close()


def run_target(t: Target, clients: dict[str, Any], rows: dict[tuple[str, str], Row], args: argparse.Namespace) -> None:
    seed(t)
    for round_no in range(args.rounds):
        for name, factory in clients.items():
            row = rows.setdefault((name, t.name), Row(name, t.name))
            if row.skipped:
                continue
            try:
                figures = uvloop.run(measure(name, factory, t, args.callers, args.seconds))
            except ImportError as exc:
                row.skipped = f"cannot import: {exc}"
                print(f"  {t.name:10s} {name:24s} skipped ({row.skipped})", flush=True)
                continue
            row.rounds.append(figures)
            calls, p50, p99, cpu = figures
            print(
                f"  round {round_no + 1} {t.name:10s} {name:24s} {calls:9.0f} calls/s  p50 {p50:6.2f} ms  "
                f"p99 {p99:6.2f} ms  {cpu:6.1f} µs CPU/call",
                flush=True,
            )


def report(rows: dict[tuple[str, str], Row]) -> None:
    base = rows.get(BASELINE)
    base_calls = base.median(0) if base and base.rounds else float("nan")
    base_cpu = base.median(3) if base and base.rounds else float("nan")
    print()
    print(f"{'target':10s} {'client':24s} {'calls/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'µs CPU':>7s} "
          f"{'÷ Auto calls/s':>15s} {'÷ Auto CPU':>11s}")  # fmt: skip
    for row in rows.values():
        if row.skipped:
            print(f"{row.target:10s} {row.client:24s} skipped: {row.skipped}")
            continue
        calls, p50, p99, cpu = (row.median(i) for i in range(4))
        print(
            f"{row.target:10s} {row.client:24s} {calls:9.0f} {p50:7.2f} {p99:7.2f} {cpu:7.1f} "
            f"{calls / base_calls:15.2f} {cpu / base_cpu:11.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callers", type=int, default=CALLERS)
    parser.add_argument("--only", default="", help="comma-separated client names (as printed) to run")
    parser.add_argument("--no-cluster", action="store_true", help="the standalone server only")
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}

    def chosen(clients: dict[str, Any]) -> dict[str, Any]:
        return {name: f for name, f in clients.items() if not only or name in only or name == BASELINE[0]}

    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start; {args.callers} callers, "
        f"{args.seconds:g} s x {args.rounds} rounds per client; python {sys.version.split()[0]}, "
        f"redis-py {redis.__version__}",
        flush=True,
    )
    run_id = secrets.token_hex(4)
    rows: dict[tuple[str, str], Row] = {}
    standalone = Target("standalone", REDIS_URL, False, f"perseus-bench:rc:{run_id}:")
    try:
        run_target(standalone, chosen(STANDALONE), rows, args)
    finally:
        cleanup(standalone)
    if not args.no_cluster:
        from perseus_cli.devstack.redis_cluster import LocalRedisCluster

        with LocalRedisCluster() as cluster:
            print(f"local cluster: {' '.join(cluster.urls)}", flush=True)
            run_target(Target("cluster", cluster.url, True, f"perseus-bench:rc:{run_id}:"), chosen(CLUSTER), rows, args)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
