"""Exit 0 when the given PostgreSQL and Redis URLs both answer, else 1 (used by .ci/run)."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import redis.asyncio as aioredis

TIMEOUT_S = 3.0


async def reachable(database_url: str, redis_url: str) -> bool:
    try:
        conn = await asyncpg.connect(database_url, timeout=TIMEOUT_S)
        await conn.close()
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=TIMEOUT_S)
        try:
            await client.ping()
        finally:
            await client.aclose()
    except (OSError, asyncpg.PostgresError, aioredis.RedisError) as exc:
        print(f"not reachable: {exc}", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(reachable(sys.argv[1], sys.argv[2])) else 1)
