"""Start a private Perseus stack for a benchmark: its own database and Redis prefix, free ports.

Uses ``PERSEUS_BENCH_DATABASE_URL`` (an admin URL; a database ``perseus_bench_<id>``
is created and dropped) and ``PERSEUS_BENCH_REDIS_URL``, by default the
machine's servers on 127.0.0.1. Processes are stopped by PID at the end.

``--redis cluster`` (:func:`redis_target`) runs the stack on a fresh
:class:`~perseus_cli.devstack.redis_cluster.LocalRedisCluster` (3 masters, 3
replicas on free loopback ports) instead, started for the run and stopped with
it; the stack is pointed at one node, as a deployment would be, and finds the
rest itself.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import redis as redis_client

from tests.support.processes import Process, run_cli, running_core, running_gateway

ADMIN_URL = os.environ.get("PERSEUS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PERSEUS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

RedisKind = Literal["standalone", "cluster"]
REDIS_KINDS: tuple[RedisKind, ...] = ("standalone", "cluster")


def redis_kinds(value: str) -> list[RedisKind]:
    """``--redis standalone``, ``cluster`` or both (``standalone,cluster``: one run, both measured)."""
    kinds = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [kind for kind in kinds if kind not in REDIS_KINDS]
    if not kinds or unknown:
        raise ValueError(f"--redis takes {' or '.join(REDIS_KINDS)} (or both, comma-separated), not {value!r}")
    return kinds  # type: ignore[return-value]


@contextmanager
def redis_target(kind: RedisKind) -> Iterator[str]:
    """The Redis URL a run uses: the machine's server, or a local cluster started (and stopped) for the run."""
    if kind == "standalone":
        yield REDIS_URL
        return
    from perseus_cli.devstack.redis_cluster import LocalRedisCluster

    with LocalRedisCluster() as cluster:
        yield cluster.url


@dataclass
class Stack:
    env: dict[str, str]
    core: Process
    rest: Process | None
    key: str
    redis: RedisKind = "standalone"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def stack(
    *, rest: bool = False, redis_url: str = REDIS_URL, redis: RedisKind = "standalone", **core_env: str
) -> Iterator[Stack]:
    """A migrated database, an admin key (never rate-limited) and a core (and a REST gateway) on ``redis_url``."""
    run_id = secrets.token_hex(4)
    name = f"perseus_bench_{run_id}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    prefix = f"perseus-bench:{run_id}:"
    env = {
        "PERSEUS_DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
        "PERSEUS_REDIS_URL": redis_url,
        "PERSEUS_REDIS_PREFIX": prefix,
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_LOG_LEVEL": "WARNING",
    }
    try:
        assert run_cli(["migrate"], env).returncode == 0
        created = run_cli(["keys", "create", "--tier", "admin", "--name", "bench"], env)  # never rate-limited
        key = created.stdout.strip().splitlines()[-1]
        with running_core({**env, **core_env}) as core:
            if rest:
                with running_gateway("rest", env, core.addr) as gateway:
                    yield Stack(env, core, gateway, key, redis)
            else:
                yield Stack(env, core, None, key, redis)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        # A cluster's keys go with it (it was started for the run); a standalone server's are removed.
        if redis == "standalone":
            client: Any = redis_client.Redis.from_url(redis_url)
            for k in client.scan_iter(match=f"{prefix}*", count=1000):
                client.unlink(k)
            client.close()
