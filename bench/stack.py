"""Start a private Perseus stack for a benchmark: its own database and Redis prefix, free ports.

Uses ``PERSEUS_BENCH_DATABASE_URL`` (an admin URL; a database ``perseus_bench_<id>``
is created and dropped) and ``PERSEUS_BENCH_REDIS_URL``, by default the
machine's servers on 127.0.0.1. Processes are stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg
import redis

from tests.support.processes import Process, run_cli, running_core, running_gateway

ADMIN_URL = os.environ.get("PERSEUS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PERSEUS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Stack:
    env: dict[str, str]
    core: Process
    rest: Process | None
    key: str


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def stack(*, rest: bool = False, **core_env: str) -> Iterator[Stack]:
    run_id = secrets.token_hex(4)
    name = f"perseus_bench_{run_id}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    prefix = f"perseus-bench:{run_id}:"
    env = {
        "PERSEUS_DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
        "PERSEUS_REDIS_URL": REDIS_URL,
        "PERSEUS_REDIS_PREFIX": prefix,
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_LOG_LEVEL": "WARNING",
    }
    try:
        assert run_cli(["migrate"], env).returncode == 0
        created = run_cli(["keys", "create", "--tier", "internal", "--name", "bench"], env)
        key = created.stdout.strip().splitlines()[-1]
        with running_core({**env, **core_env}) as core:
            if rest:
                with running_gateway("rest", env, core.addr) as gateway:
                    yield Stack(env, core, gateway, key)
            else:
                yield Stack(env, core, None, key)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        client = redis.Redis.from_url(REDIS_URL)
        for k in client.scan_iter(match=f"{prefix}*", count=1000):
            client.unlink(k)
        client.close()
