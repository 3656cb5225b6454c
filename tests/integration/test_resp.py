"""The raw bulk pipeline on real Redis: replies in order, errors, a database of the URL, a dropped connection."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from core.adapters.redis_client import redis_client
from core.adapters.resp import BulkPipeline

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = redis_client(redis_url)
    yield redis
    await redis.aclose()


async def test_replies_come_back_in_order_for_a_thousand_commands(client: aioredis.Redis, redis_prefix: str) -> None:
    bulk = BulkPipeline.beside(client, "perseus-test-bulk")
    try:
        names = [f"{redis_prefix}bulk:{{s{i}}}" for i in range(1000)]
        await bulk.execute(
            [("MSET", f"{n}:a", f"{i}-a".encode(), f"{n}:b", b"\x00" * 200) for i, n in enumerate(names)]
        )
        replies = await bulk.execute([("MGET", f"{n}:a", f"{n}:b", f"{n}:missing") for n in names])
    finally:
        await bulk.aclose()
    assert replies == [[f"{i}-a".encode(), b"\x00" * 200, None] for i in range(1000)]
    assert await client.get(f"{names[7]}:a") == b"7-a"  # the same server and database as the client


async def test_an_error_reply_raises_and_the_pipeline_still_works(client: aioredis.Redis, redis_prefix: str) -> None:
    bulk = BulkPipeline.beside(client, "perseus-test-bulk")
    try:
        await client.set(f"{redis_prefix}text", "x")
        with pytest.raises(ResponseError):
            await bulk.execute([("GET", f"{redis_prefix}text"), ("INCR", f"{redis_prefix}text")])
        assert await bulk.execute([("GET", f"{redis_prefix}text")]) == [b"x"]
    finally:
        await bulk.aclose()


async def test_a_killed_connection_is_reopened_for_the_next_pipeline(client: aioredis.Redis, redis_prefix: str) -> None:
    name = f"perseus-test-bulk-{secrets.token_hex(4)}"
    bulk = BulkPipeline.beside(client, name)
    try:
        assert await bulk.execute([("PING",)]) == [b"PONG"]
        ids = [c["id"] for c in await client.client_list() if c["name"] == name]
        assert len(ids) == 1 and await client.client_kill_filter(_id=ids[0]) == 1
        await asyncio.sleep(0.05)
        with pytest.raises((ConnectionError, OSError)):
            await bulk.execute([("PING",)])
        assert await bulk.execute([("PING",)]) == [b"PONG"]
    finally:
        await bulk.aclose()


async def test_the_database_of_the_url_is_selected(redis_url: str, redis_prefix: str) -> None:
    other = redis_client(redis_url.rsplit("/", 1)[0] + "/3")
    bulk = BulkPipeline.beside(other, "perseus-test-bulk-db")
    try:
        await bulk.execute([("SET", f"{redis_prefix}db3", b"here")])
        assert await other.get(f"{redis_prefix}db3") == b"here"
        await other.delete(f"{redis_prefix}db3")
    finally:
        await bulk.aclose()
        await other.aclose()
