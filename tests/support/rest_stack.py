"""A real core and REST gateway over a private, seeded database, for the REST gateway's tests."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tests.support.databases import scratch_database
from tests.support.market_seed import Seed, seed_market
from tests.support.processes import Process, run_cli, running_core, running_gateway

TIERS = ("free", "pro", "internal", "admin")


@dataclass
class RestStack:
    env: dict[str, str]
    core: Process
    rest: Process
    keys: dict[str, str]
    seed: Seed

    def get(self, path: str, *, tier: str = "pro", **kwargs: object) -> httpx.Response:
        headers = {"X-API-Key": self.keys[tier], **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return httpx.get(f"http://{self.rest.addr}{path}", headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def make_key(env: dict[str, str], tier: str) -> str:
    result = run_cli(["keys", "create", "--tier", tier], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@contextmanager
def seeded_rest_stack(
    base_env: dict[str, str], admin_database_url: str, seed: Seed, *, first_key_id: int | None = None, **rest_env: str
) -> Iterator[RestStack]:
    """Migrate a private database, seed it, then run a pw-host core (nothing else writes) and a gateway."""
    name = f"perseus_rest_{secrets.token_hex(4)}"
    loop = asyncio.new_event_loop()
    manager = scratch_database(admin_database_url, name)
    url = loop.run_until_complete(manager.__aenter__())
    try:
        # Its own Redis prefix too: key ids restart at 1 in every private database, and rate-limit
        # counters of another stack's keys with the same ids must not be this one's.
        prefix = f"{base_env['PERSEUS_REDIS_PREFIX']}{name}:"
        env = {**base_env, "PERSEUS_DATABASE_URL": url, "PERSEUS_MODE": "pw-host", "PERSEUS_REDIS_PREFIX": prefix}
        result = run_cli(["migrate"], env)
        assert result.returncode == 0, result.stderr
        loop.run_until_complete(seed_market(url, env["PERSEUS_REDIS_URL"], env["PERSEUS_REDIS_PREFIX"], seed))
        if first_key_id is not None:
            loop.run_until_complete(_restart_key_ids(url, first_key_id))
        keys = {tier: make_key(env, tier) for tier in TIERS}
        with running_core(env) as core, running_gateway("rest", {**env, **rest_env}, core.addr) as rest:
            yield RestStack(env, core, rest, keys, seed)
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


async def _restart_key_ids(url: str, first: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"ALTER TABLE api_keys ALTER COLUMN id RESTART WITH {int(first)}")
    finally:
        await conn.close()
