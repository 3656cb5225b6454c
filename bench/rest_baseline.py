"""``python -m bench.rest_baseline COMMIT``: the REST hot path of an earlier commit against this tree's, in one run.

Issue 15 allows the REST hot path on a standalone Redis to lose at most 10 % to
the Redis Cluster work, measured against the earlier code *in the same run*:
the machine's load moves figures by more than that between runs. So this
starts two stacks side by side, each a pw-host core and a REST gateway on a
private database and Redis prefix of the standalone Redis, one from ``COMMIT``
(``git archive`` into a temporary directory, its own ``bench.stack`` and
``bench.rest.seed_perseus``) and one from this tree, and measures them in
alternation with this tree's wrk script at 64 connections: an unlimited key (internal before issue 16, admin since)
(``--seconds``), then 8 fresh pro keys for 4 s (the rate limiter's round trip
on every request), for ``--rounds`` rounds, the order flipped every round.

Besides req/s and p50/p99 it reads each gateway's CPU time from
``/proc/<pid>/stat`` around each run: CPU per request moves much less with
other work on the machine than req/s does. Medians per tree and the ratios
(this tree ÷ ``COMMIT``) are printed at the end.

    python -m bench.rest_baseline COMMIT [--seconds 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONNS = 64
PRO_SECONDS = 4
PRO_KEYS = 8
START_TIMEOUT_S = 180.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def serve() -> None:
    """In the tree on PYTHONPATH: a seeded stack; one JSON line (URL, keys, gateway pid); wait for stdin EOF."""
    import asyncio

    from bench import rest
    from bench.stack import stack
    from tests.support.rest_stack import make_key

    rounds = int(sys.argv[2])
    with stack(rest=True, PERSEUS_MODE="pw-host") as s:
        assert s.rest is not None
        asyncio.run(rest.seed_perseus(s.env))
        url = f"http://{s.rest.addr}"
        rest.wait_http(f"{url}/public/v1/candles/sim/BTC-USD?timeframe=1m", {"X-API-Key": s.key})
        pro = [make_key(s.env, "pro") for _ in range(PRO_KEYS * rounds)]
        print(json.dumps({"url": url, "key": s.key, "pro": pro, "pid": s.rest.pid}), flush=True)
        sys.stdin.read()


def start(tree: Path, rounds: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": f"{tree}:{tree / 'proto'}"}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "serve", str(rounds)],
        cwd=tree,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(START_TIMEOUT_S)
        raise RuntimeError(f"the stack of {tree} did not start ({proc.returncode})")
    return proc, json.loads(line)


def main() -> int:
    from bench.rest import ensure_wrk, wrk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the earlier commit, e.g. the last one before a change")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds of an internal-key run")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ensure_wrk()
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.commit], check=True, capture_output=True, text=True
    ).stdout.strip()
    names = (f"before ({sha})", "this tree")
    figures: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="perseus-baseline-") as tmp:
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", sha], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tmp], stdin=archive.stdout, check=True)
        archive.wait()
        running: list[subprocess.Popen[str]] = []
        try:
            stacks: dict[str, dict[str, Any]] = {}
            for name, tree in zip(names, (Path(tmp), REPO), strict=True):
                proc, info = start(tree, args.rounds)
                running.append(proc)
                stacks[name] = info
            print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; c={CONNS}", flush=True)
            for round_no in range(args.rounds):
                order = names if round_no % 2 == 0 else names[::-1]
                for kind in ("internal", "pro key"):
                    for name in order:
                        info = stacks[name]
                        env = {"PREFIX": "/public/v1/candles/sim", "KEY": info["key"]}
                        wrk(info["url"], CONNS, 2, env)  # warm-up
                        seconds = args.seconds
                        if kind == "pro key":
                            env["KEY"] = ",".join(info["pro"][round_no * PRO_KEYS : (round_no + 1) * PRO_KEYS])
                            seconds = PRO_SECONDS
                        before = cpu_s(info["pid"])
                        f = wrk(info["url"], CONNS, seconds, env)
                        us = (cpu_s(info["pid"]) - before) / max(f["rps"] * seconds, 1) * 1e6
                        figures.setdefault((kind, name), []).append((f["rps"], f["p50_ms"], f["p99_ms"], us))
                        print(
                            f"round {round_no + 1} {kind:9s} {name:18s} {f['rps']:7.0f} req/s  p50 {f['p50_ms']:5.1f}  "
                            f"p99 {f['p99_ms']:6.1f} ms  {us:4.0f} µs gateway CPU/request  non-200 {f['bad']:.0f}  "
                            f"load {os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
        finally:
            for proc in running:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(60)
    print("\nmedians:")
    for kind in ("internal", "pro key"):
        med = {name: [statistics.median(x[i] for x in figures[kind, name]) for i in range(4)] for name in names}
        for name in names:
            rps, p50, p99, us = med[name]
            print(f"{kind:9s} {name:18s} {rps:7.0f} req/s  p50 {p50:5.1f}  p99 {p99:6.1f} ms  {us:4.0f} µs CPU/request")
        old, new = med[names[0]], med[names[1]]
        print(
            f"{kind:9s} this tree / before: req/s {new[0] / old[0]:.2f}, gateway CPU per request {new[3] / old[3]:.2f}"
        )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        # Run as a script, so its own directory is first on sys.path, where bench/core.py would hide the core
        # package of the tree on PYTHONPATH.
        here = Path(__file__).resolve().parent
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
        serve()
        sys.exit(0)
    sys.exit(main())
