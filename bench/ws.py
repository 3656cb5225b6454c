"""``make bench-ws``: WebSocket fan-out of ``perseus ws`` beside the two reference bridges, in one run.

For each point of the matrix (clients x events/s, 20 channels, 20 s of
publishing) every server is started fresh and measured by the peers' own load
tool, ``../shared/peers/load/ws-fanout.js``, which is invoked as it is (never
copied): it opens the clients, each subscribing to ``candles:{SYM}:1m``, forks
a publisher that PUBLISHes the events to Redis with the send time
(CLOCK_MONOTONIC µs) in ``volume``, and reports delivered msgs/s, latency
percentiles, undelivered messages, server RSS and CPU.

- **node** and **python**: the reference bridges of ``../shared/peers``, which
  read those Redis channels directly.
- **perseus**: ``perseus core`` (``pw-host``: no exchange adapters, so no other
  events) and ``perseus ws``. A small translator (``python -m bench.ws
  translate``) turns each published candle into a Perseus ``candle_close``
  event with the core's own publisher (seq assigned in Redis, the serialized
  ``StreamEvent`` on the channel's sharded pub/sub), keeping the probe in
  ``volume``. So Perseus's figures include one extra hop the peers do not pay
  (Redis pub/sub -> translator -> Redis), plus the core's gRPC stream.

``--redis cluster`` runs Perseus's core and gateway on a local Redis Cluster
started for the run (:func:`bench.stack.redis_target`): the load tool still
publishes to the machine's Redis, and the translator republishes into the
cluster (each channel's events on the shard that owns its hash tag).
``--redis standalone,cluster`` measures both in the same run, each point
Perseus on the standalone server, then on the cluster, then the peers.

``--tracing`` adds a row per point: ``perseus [traced]``, the same core with a WebSocket gateway that exports
its spans over OTLP/HTTP to a local sink keeping nothing (:mod:`bench.otlp_sink`), and a translator that stamps
every event with a ``traceparent`` as a traced core's publish would, so each delivery is a ``ws deliver`` span
linked to it (the most tracing the gateway does); the table then gives the ratio traced / untraced.

``--mode e2e`` is another measure, in :mod:`bench.ws_e2e`: the latency from ``POST /internal/v1/ingest`` to
the WebSocket client, 1,000 clients on seed 004's price channels, against seed 004's 100 ms.

Knobs: ``BENCH_WS_MATRIX`` (``1000x100,10000x40,10000x100``), ``BENCH_WS_SERVERS``
(``perseus,node,python``), ``BENCH_WS_DURATION`` (20). The Node packages
(pinned to the versions the peers were measured with) are installed once
under ``$XDG_CACHE_HOME/perseus-bench-node``. Results: one JSON line per run
on stdout and in ``bench/results/ws.jsonl``, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench.otlp_sink import BENCH_TRACEPARENT, otlp_sink
from bench.stack import REDIS_URL, RedisKind, Stack, redis_kinds, redis_target, stack
from tests.support.processes import free_port, running_gateway
from tests.support.ws import register_symbols

REPO = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("PERSEUS_PEERS_DIR", REPO.parent / "shared" / "peers"))
# The load's 20 symbols (ws-fanout.js): the gateway refuses a symbol the core does not list, and the pw-host
# core of the benchmark has no feed that would list them.
LOAD_SYMBOLS = (
    "BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOGE-USD", "DOT-USD", "AVAX-USD", "LINK-USD", "MATIC-USD",
    "LTC-USD", "BCH-USD", "ATOM-USD", "UNI-USD", "XLM-USD", "ETC-USD", "FIL-USD", "APT-USD", "NEAR-USD", "ARB-USD",
)  # fmt: skip
# Every load client connects from this host, up to 10,000 of them: no per-address or per-gateway cap.
UNCAPPED = {"PERSEUS_WS_MAX_CONNECTIONS": "0", "PERSEUS_WS_MAX_CONNECTIONS_PER_IP": "0"}
NODE_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "perseus-bench-node"
NODE_PACKAGES = ["ws@8.23.0", "ioredis@6.0.0", "fastify@5.12.8", "@fastify/websocket@11.3.6"]
RESULTS = REPO / "bench" / "results" / "ws.jsonl"
PEER_CHANNEL = re.compile(r"channel:exchange:1:candle:close:([A-Z0-9-]+):1m")
START_TIMEOUT_S = 20.0
TRACED_SUFFIX = " [traced]"


def raise_file_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def node_modules() -> Path:
    modules = NODE_HOME / "node_modules"
    if not all((modules / p.rsplit("@", 1)[0]).is_dir() for p in NODE_PACKAGES):
        NODE_HOME.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(NODE_HOME), *NODE_PACKAGES],
            check=True,
        )
    return modules


def redis_port_and_pid() -> tuple[int, int]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        info = client.info("server")
    finally:
        client.close()
    return int(info["tcp_port"]), int(info["process_id"])


def wait_for_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url}: not answering within {START_TIMEOUT_S} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def peer(kind: str, modules: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_URL": REDIS_URL.rsplit("/", 1)[0], "NODE_PATH": str(modules)}
    if kind == "node":
        command = ["node", str(PEERS / "node-fastify" / "server.js")]
    else:
        command = [sys.executable, str(PEERS / "python-sanic-direct" / "server.py")]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/internal/stats", proc)
        yield f"ws://127.0.0.1:{port}/public/v1/stream", proc.pid
    finally:
        stop(proc)


@contextlib.contextmanager
def perseus(bench_stack: Stack, *, traced: bool = False) -> Iterator[tuple[str, int]]:
    env, core, key = bench_stack.env, bench_stack.core, bench_stack.key
    register_symbols(env["PERSEUS_DATABASE_URL"], LOAD_SYMBOLS)
    with contextlib.ExitStack() as tracing:
        otel = tracing.enter_context(otlp_sink())[0] if traced else {}
        gateway = tracing.enter_context(running_gateway("ws", {**env, **UNCAPPED, **otel}, core.addr))
        stamp = [BENCH_TRACEPARENT] if traced else []
        prefix, url = env["PERSEUS_REDIS_PREFIX"], env["PERSEUS_REDIS_URL"]
        translator = subprocess.Popen([sys.executable, "-m", "bench.ws", "translate", prefix, url, *stamp], cwd=REPO)
        try:
            time.sleep(1.0)  # the translator's PSUBSCRIBE is in place
            yield f"ws://{gateway.addr}/public/v1/stream?apiKey={key}", gateway.pid
        finally:
            stop(translator)


def load(url: str, pid: int, label: str, clients: int, rate: int, duration: int, modules: Path) -> dict[str, object]:
    redis_port, redis_pid = redis_port_and_pid()
    command = [
        "node", str(PEERS / "load" / "ws-fanout.js"), "--url", url, "--clients", str(clients), "--rate", str(rate),
        "--duration", str(duration), "--server-pid", str(pid), "--redis-pid", str(redis_pid),
        "--redis-port", str(redis_port), "--label", label,
    ]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "NODE_PATH": str(modules)}, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"ws-fanout failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


PERSEUS_COUNTERS = (
    "skipped_events", "events", "core_streams_opened", "slow_closes", "event_lag_seconds_max", "event_lag_seconds_sum",
)  # fmt: skip


def counters(url: str) -> dict[str, float]:
    """Perseus's own counters (its /metrics): events skipped for slow clients, events from the core, ..."""
    base = url.split("/public/")[0].replace("ws://", "http://")
    text = httpx.get(base + "/metrics", timeout=5).text
    found = (re.search(rf"^perseus_ws_{name}(?:_total)? (\S+)$", text, re.M) for name in PERSEUS_COUNTERS)
    return {name: float(m.group(1)) if m else float("nan") for name, m in zip(PERSEUS_COUNTERS, found, strict=True)}


def label(kind: RedisKind) -> str:
    return "perseus" if kind == "standalone" else f"perseus [{kind}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis", default="standalone", help="standalone, cluster (a local cluster started for the run) or both"
    )
    parser.add_argument("--tracing", action="store_true", help="a traced gateway's row beside each Perseus row")
    args = parser.parse_args()
    kinds = redis_kinds(args.redis)
    limit = raise_file_limit()
    modules = node_modules()
    matrix = [tuple(int(x) for x in point.split("x")) for point in os.environ.get(
        "BENCH_WS_MATRIX", "1000x100,10000x40,10000x100").split(",")]  # fmt: skip
    servers = os.environ.get("BENCH_WS_SERVERS", "perseus,node,python").split(",")
    duration = int(os.environ.get("BENCH_WS_DURATION", "20"))
    print(
        f"file limit {limit}; matrix {matrix}; servers {servers}; redis {kinds}; {duration} s per point; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    with contextlib.ExitStack() as running:
        stacks: dict[RedisKind, Stack] = {}
        for kind in kinds:
            redis_url = running.enter_context(redis_target(kind))
            stacks[kind] = running.enter_context(stack(redis_url=redis_url, redis=kind, PERSEUS_MODE="pw-host"))
        for clients, rate in matrix:
            runs: list[tuple[str, Stack | None]] = (
                [(label(k), s) for k, s in stacks.items()] if "perseus" in servers else []
            )
            if args.tracing and "perseus" in servers:
                runs += [(label(k) + TRACED_SUFFIX, s) for k, s in stacks.items()]
            runs += [(server, None) for server in servers if server != "perseus"]
            for name, bench_stack in runs:
                traced = name.endswith(TRACED_SUFFIX)
                starter = perseus(bench_stack, traced=traced) if bench_stack is not None else peer(name, modules)
                with starter as (url, pid):
                    before = counters(url) if bench_stack is not None else None
                    result = load(url, pid, name, clients, rate, duration, modules)
                    if before is not None:
                        after = counters(url)
                        result["perseus"] = {n: after[n] - before[n] for n in PERSEUS_COUNTERS}
                result["loadavg"] = os.getloadavg()[0]
                rows.append(result)
                line = json.dumps(result)
                print(line, flush=True)
                with RESULTS.open("a") as f:
                    f.write(line + "\n")
    print(table(rows))
    for line in tracing_ratios(rows):
        print(line)
    return 0


def tracing_ratios(rows: list[dict[str, object]]) -> list[str]:
    """Per point, each traced row against its untraced twin: delivered/s, p50 and p99, server CPU."""
    plain = {(r["clients"], r["rate"], r["label"]): r for r in rows}
    lines = []
    for row in rows:
        r: dict[str, Any] = row
        if not str(r["label"]).endswith(TRACED_SUFFIX):
            continue
        base: dict[str, Any] | None = plain.get((r["clients"], r["rate"], str(r["label"])[: -len(TRACED_SUFFIX)]))
        if base is None:
            continue

        def ratio(on: Any, off: Any) -> str:
            return f"{float(on) / float(off):.2f}" if float(off) else "n/a"

        lines.append(
            f"{r['clients']} x {r['rate']} {r['label']}: tracing on / off "
            f"delivered/s {ratio(r['deliveredPerSec'], base['deliveredPerSec'])}, "
            f"p50 {ratio(r['latMs']['p50'], base['latMs']['p50'])}x, "
            f"p99 {ratio(r['latMs']['p99'], base['latMs']['p99'])}x, "
            f"server CPU {ratio(r['cpuPctOfOneCore']['server'], base['cpuPctOfOneCore']['server'])}x"
        )
    return lines


def table(rows: list[dict[str, object]]) -> str:
    out = [
        "| clients x pub/s | server | delivered/s (target) | p50 / p99 / max ms | undelivered | skipped "
        "| RSS connected / peak MiB | server CPU % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r: dict[str, Any] = row  # the load tool's JSON
        lat, rss, cpu = r["latMs"], r["serverRssMiB"], r["cpuPctOfOneCore"]
        stats = r.get("serverStats") or {}
        own = r.get("perseus")
        skipped_count = own["skipped_events"] if isinstance(own, dict) else stats.get("skipped")
        out.append(
            f"| {r['clients']} x {r['rate']} | {r['label']} | {r['deliveredPerSec']} ({r['targetDeliveriesPerSec']}) "
            f"| {lat['p50']} / {lat['p99']} / {lat['max']} | {r['dropped']} | {skipped_count} "
            f"| {rss['connected']} / {rss['peak']} | {cpu['server']} |"
        )
    return "\n".join(out)


# --- the translator: peer-format candles in, Perseus candle_close events out ---------------------


async def translate(prefix: str, target_url: str, traceparent: str = "") -> None:
    """Peer-format candles from the machine's Redis, republished as Perseus events into ``target_url``
    (stamped with ``traceparent`` when given, as a traced core's publish would)."""
    import redis.asyncio as aioredis

    from common import redis_clients
    from core.adapters.events import Event, EventPublisher
    from core.adapters.redis_keys import RedisKeys
    from core.domain.channels import Channel, ChannelFamily
    from core.domain.timeframes import Timeframe
    from perseus.marketdata.v1 import candles_pb2, common_pb2, stream_service_pb2 as pb

    client = aioredis.Redis.from_url(REDIS_URL)
    pipeline = redis_clients.pipeline(
        target_url, await redis_clients.open_mode(target_url), client_name="bench-ws-translator"
    )
    publisher = EventPublisher(pipeline, RedisKeys(prefix))
    pubsub = client.pubsub()
    await pubsub.psubscribe("channel:exchange:1:candle:close:*")
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        match = PEER_CHANNEL.fullmatch(message["channel"].decode())
        if match is None:
            continue
        symbol = match.group(1)
        body = orjson.loads(message["data"])
        candle = candles_pb2.Candle(
            exchange="sim", symbol=symbol, timeframe=common_pb2.TIMEFRAME_1M, open=str(body["open"]),
            high=str(body["high"]), low=str(body["low"]), close=str(body["close"]), volume=str(body["volume"]),
        )  # fmt: skip
        candle.timestamp.FromMilliseconds(int(body["timestamp"]))
        event = pb.StreamEvent(channel=f"candles:sim:{symbol}:1m", candle_close=candle)
        event.publish_time.GetCurrentTime()
        if traceparent:
            event.traceparent = traceparent
        channel = Channel(ChannelFamily.CANDLES, "sim", symbol, Timeframe.M1)
        await publisher.publish([Event(channel, event.SerializeToString())])


if __name__ == "__main__":
    if "--mode" in sys.argv[1:] or any(a.startswith("--mode=") for a in sys.argv[1:]):
        from bench import ws_e2e  # --mode e2e: ingestion to client (issue 18.7), its own options

        sys.exit(ws_e2e.main(sys.argv[1:]))
    if sys.argv[1:2] == ["translate"]:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(translate(*sys.argv[2:5]) if len(sys.argv) > 3 else translate(sys.argv[2], REDIS_URL))
        sys.exit(0)
    sys.exit(main())
