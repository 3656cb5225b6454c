"""A standby says once that it stands by, naming the leader and its term, and again only when the leader
changes: not on every poll."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.adapters.writer_lock import WriterLock
from core.services.exchange_writer import ExchangeWriter, Feed
from tests.support.redis_target import redis_client

pytestmark = pytest.mark.integration

POLL_S = 0.02


def never_leads() -> Feed:
    raise AssertionError("the standby must not lead while another holds the lease")


async def nothing() -> None:
    return None


async def test_the_standby_line_names_the_leader_once_per_leader(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis = redis_client(redis_url)
    # One hash tag, as the real lease keys have: the acquire script and the MULTI below take both.
    key, term_key = f"{redis_prefix}standby:lock:{{standby}}", f"{redis_prefix}standby:term:{{standby}}"

    def lock(owner: str) -> WriterLock:
        return WriterLock(redis, key, term_key, owner, ttl_ms=60_000)

    first = lock("core-a")
    standby = ExchangeWriter("sim", lock("core-c"), never_leads, heartbeat=nothing, poll_s=POLL_S)
    try:
        assert await first.acquire()
        with caplog.at_level(logging.INFO, logger="core.services.exchange_writer"):
            task = asyncio.create_task(standby.run())
            await asyncio.sleep(30 * POLL_S)  # many polls
            async with redis.pipeline(transaction=True) as pipe:  # a new leader, a new term, with no gap between
                _, second_term = await pipe.set(key, "core-b", px=60_000).incr(term_key).execute()
            await asyncio.sleep(30 * POLL_S)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("standby for")]
        assert lines == [
            f"standby for sim (leader: core-a, term {first.term})",
            f"standby for sim (leader: core-b, term {second_term})",
        ]
    finally:
        await redis.delete(key, term_key)
        await redis.aclose()
