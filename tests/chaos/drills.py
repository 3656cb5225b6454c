"""The faults, one coroutine each: inject, hold, end the fault (restart or resume) and say when it ended.

A killed process is started again by the harness after ``RESTART_AFTER_S``, as
``perseus up`` does for its children; a frozen one gets SIGCONT. What the
system does in between is what the drill measures.

PostgreSQL stall: the whole server (the postmaster and every backend) gets
SIGSTOP. That is what a storage freeze or a paused VM looks like to the core:
connections stay open, nothing errors, every query and commit just waits,
``SELECT 1`` included. An ACCESS EXCLUSIVE lock on ``price_feeds`` would only
stall one table while health checks and the rest kept answering, closer to a
long migration than to a stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.chaos.stack import Stack, children_of

RESTART_AFTER_S = 1.0
NET_DELAY_S = 0.3


@dataclass(frozen=True)
class Drill:
    name: str
    what: str
    hold_s: float
    run: Callable[[Stack, float], Awaitable[str]]  # (stack, hold) -> note; returns when the fault has ended
    prepare: Callable[[], Awaitable[None]] | None = None  # before the fault (not timed)


async def redis_kill(stack: Stack, hold: float) -> str:
    stack.children["redis"].kill()
    await asyncio.sleep(hold)
    await asyncio.to_thread(stack.children["redis"].start)
    return "SIGKILL, restarted on the same port and AOF"


async def redis_freeze(stack: Stack, hold: float) -> str:
    stack.children["redis"].signal(signal.SIGSTOP)
    await asyncio.sleep(hold)
    stack.children["redis"].signal(signal.SIGCONT)
    return "SIGSTOP, then SIGCONT"


async def postgres_stall(stack: Stack, hold: float) -> str:
    # Every backend calls setsid(), so the server is not one process group: stop the postmaster first (no
    # new backend can start), then each of its children.
    postmaster = stack.postgres_pid()
    os.kill(postmaster, signal.SIGSTOP)
    stopped = [postmaster]
    try:
        for pid in children_of(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        await asyncio.sleep(hold)
    finally:
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return f"SIGSTOP of all {len(stopped)} PostgreSQL processes (postmaster and backends), then SIGCONT"


async def _kill_and_restart(stack: Stack, names: list[str], hold: float) -> None:
    for name in names:
        stack.children[name].kill()
    await asyncio.sleep(hold)
    for name in names:
        await asyncio.to_thread(stack.children[name].start)


async def core_kill(stack: Stack, hold: float) -> str:
    role = "leader" if stack.lease_holder() == "core-a" else "standby"
    await _kill_and_restart(stack, ["core-a"], hold)
    return f"SIGKILL core-a (the gateways' core, {role}), restarted"


async def not_at_minute_end() -> None:
    """Not in the last seconds of a minute: a leader kill should leave a candle in progress half-built."""
    second = time.time() % 60
    if second > 50:
        await asyncio.sleep(61 - second)


async def leader_kill(stack: Stack, hold: float) -> str:
    holder = stack.lease_holder()
    if holder not in ("core-a", "core-b"):
        return f"no lease holder to kill (lease says {holder!r})"
    await _kill_and_restart(stack, [holder], hold)
    return f"SIGKILL {holder} (lease holder) {time.time() % 60:.0f} s into the minute, restarted as standby"


async def gateway_kill(stack: Stack, hold: float) -> str:
    await _kill_and_restart(stack, ["rest", "ws"], hold)
    return "SIGKILL rest and ws, restarted"


async def net_delay(stack: Stack, hold: float) -> str:
    assert stack.proxy is not None
    stack.proxy.delay_s = NET_DELAY_S
    await asyncio.sleep(hold)
    stack.proxy.delay_s = 0.0
    return f"+{NET_DELAY_S * 1000:.0f} ms each way on gateway->core (user-space relay; no netem in this kernel)"


def drills(short: bool) -> list[Drill]:
    """The order puts the leader kill early, so the candles it left in progress have closed by the end."""
    if short:
        return [
            Drill("leader kill", "SIGKILL the writer-lease holder", RESTART_AFTER_S, leader_kill, not_at_minute_end),
            Drill("redis kill 3s", "Redis down 3 s", 3, redis_kill),
            Drill("core kill", "SIGKILL the gateways' core", RESTART_AFTER_S, core_kill),
            Drill("redis freeze", "Redis SIGSTOP 5 s", 5, redis_freeze),
            Drill("postgres stall", "PostgreSQL SIGSTOP 8 s", 8, postgres_stall),
            Drill("gateway kill", "SIGKILL rest + ws", RESTART_AFTER_S, gateway_kill),
            Drill("redis kill 15s", "Redis down 15 s", 15, redis_kill),
            Drill("net delay", "gateway<->core +300 ms, 10 s", 10, net_delay),
        ]
    return [
        Drill("leader kill", "SIGKILL the writer-lease holder", RESTART_AFTER_S, leader_kill, not_at_minute_end),
        Drill("redis kill 3s", "Redis down 3 s", 3, redis_kill),
        Drill("core kill", "SIGKILL the gateways' core", RESTART_AFTER_S, core_kill),
        Drill("redis freeze", "Redis SIGSTOP 15 s", 15, redis_freeze),
        Drill("postgres stall", "PostgreSQL SIGSTOP 20 s", 20, postgres_stall),
        Drill("gateway kill", "SIGKILL rest + ws", RESTART_AFTER_S, gateway_kill),
        Drill("redis kill 60s", "Redis down 60 s", 60, redis_kill),
        Drill("net delay", "gateway<->core +300 ms, 30 s", 30, net_delay),
        Drill(
            "leader kill 2", "SIGKILL the writer-lease holder again", RESTART_AFTER_S, leader_kill, not_at_minute_end
        ),
    ]
