"""The raw RESP auto-pipeline on one real Redis server.

A thousand commands of one call (an indicator wave) come back in order, on the database of the URL;
concurrent callers each get their own replies, also when some give up; a killed connection, a restarted
and a frozen Redis are survived.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from common.resp import AutoPipeline, ReplyError
from perseus_cli.devstack.valkey import EmbeddedRedis

pytestmark = [
    pytest.mark.integration,
    pytest.mark.standalone_redis("tests the one-server AutoPipeline; ClusterPipeline has its own on the local cluster"),
]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def auto(client: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    pipeline = AutoPipeline.beside(client, f"perseus-test-auto-{secrets.token_hex(4)}")
    yield pipeline
    await pipeline.aclose()


async def test_replies_come_back_in_order_for_a_thousand_commands(
    auto: AutoPipeline, client: aioredis.Redis, redis_prefix: str
) -> None:
    names = [f"{redis_prefix}bulk:{{s{i}}}" for i in range(1000)]
    written = await auto.call(
        *[("MSET", f"{n}:a", f"{i}-a".encode(), f"{n}:b", b"\x00" * 200) for i, n in enumerate(names)]
    )
    replies = await auto.call(*[("MGET", f"{n}:a", f"{n}:b", f"{n}:missing") for n in names])
    assert written == [b"OK"] * 1000
    assert replies == [[f"{i}-a".encode(), b"\x00" * 200, None] for i in range(1000)]
    assert await client.get(f"{names[7]}:a") == b"7-a"  # the same server and database as the client


async def test_the_database_of_the_url_is_selected(redis_url: str, redis_prefix: str) -> None:
    other = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    auto = AutoPipeline.beside(other, "perseus-test-auto-db")
    try:
        await auto.call(("SET", f"{redis_prefix}db3", b"here"))
        assert await other.get(f"{redis_prefix}db3") == b"here"
        await other.delete(f"{redis_prefix}db3")
    finally:
        await auto.aclose()
        await other.aclose()


async def test_concurrent_calls_each_get_their_own_replies(auto: AutoPipeline, redis_prefix: str) -> None:
    async def one(i: int) -> list[object]:
        key = f"{redis_prefix}auto:{i}"
        return await auto.call(("SET", key, f"v{i}"), ("APPEND", key, "!" * (i % 7)), ("GET", key))

    replies = await asyncio.gather(*(one(i) for i in range(2000)))
    assert replies == [[b"OK", len(f"v{i}") + i % 7, f"v{i}{'!' * (i % 7)}".encode()] for i in range(2000)]


async def test_callers_that_give_up_do_not_shift_anyone_elses_replies(auto: AutoPipeline, redis_prefix: str) -> None:
    calls = [asyncio.ensure_future(auto.call(("ECHO", f"r{i}"), ("ECHO", f"s{i}"))) for i in range(300)]
    await asyncio.sleep(0)  # a first part is written
    calls += [asyncio.ensure_future(auto.call(("ECHO", f"r{i}"), ("ECHO", f"s{i}"))) for i in range(300, 600)]
    for i in range(0, 600, 3):
        calls[i].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 3 == 0:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == [f"r{i}".encode(), f"s{i}".encode()]
    assert await auto.call(("ECHO", "after")) == [b"after"]


async def test_an_error_reply_is_a_value_and_the_calls_go_on(
    auto: AutoPipeline, client: aioredis.Redis, redis_prefix: str
) -> None:
    await client.set(f"{redis_prefix}auto-text", "x")
    bad, good = await auto.call(("INCR", f"{redis_prefix}auto-text"), ("GET", f"{redis_prefix}auto-text"))
    assert isinstance(bad, ReplyError) and "not an integer" in str(bad) and good == b"x"
    assert await auto.call(("PING",)) == [b"PONG"]


async def test_a_killed_connection_is_replaced_by_the_next_call(auto: AutoPipeline, client: aioredis.Redis) -> None:
    assert await auto.call(("CLIENT", "SETNAME", "perseus-test-auto-kill")) == [b"OK"]
    ids = [c["id"] for c in await client.client_list() if c["name"] == "perseus-test-auto-kill"]
    assert len(ids) == 1 and await client.client_kill_filter(_id=ids[0]) == 1
    await asyncio.sleep(0.05)  # the pipeline reads the end of the connection
    assert await auto.call(("PING",)) == [b"PONG"]
    (name,) = await auto.call(("CLIENT", "GETNAME"))  # a new connection, named as the pipeline names them
    assert name.startswith(b"perseus-test-auto-") and name != b"perseus-test-auto-kill"


async def test_calls_go_on_after_a_redis_restart(embedded_redis: EmbeddedRedis) -> None:
    server = aioredis.Redis.from_url(embedded_redis.url)
    auto = AutoPipeline.beside(server, "perseus-test-auto-restart")
    try:
        assert await auto.call(("SET", "k", "before")) == [b"OK"]
        embedded_redis.stop()
        with pytest.raises(ConnectionError):
            await auto.call(("GET", "k"))
        embedded_redis.start()
        assert await auto.call(("SET", "k", "after"), ("GET", "k")) == [b"OK", b"after"]
    finally:
        await auto.aclose()
        await server.aclose()


async def test_a_frozen_redis_fails_the_waiting_calls_and_a_thawed_one_answers_again(
    embedded_redis: EmbeddedRedis,
) -> None:
    server = aioredis.Redis.from_url(embedded_redis.url)
    auto = AutoPipeline(server.connection_pool.connection_kwargs, tls=False, client_name="t", stall_s=0.3)
    assert embedded_redis.pid is not None
    try:
        assert await auto.call(("PING",)) == [b"PONG"]
        os.kill(embedded_redis.pid, signal.SIGSTOP)
        try:
            waiting = asyncio.ensure_future(auto.call(("ECHO", "waiting")))
            with pytest.raises(TimeoutError):  # the caller's own timeout
                await asyncio.wait_for(auto.call(("ECHO", "gave up")), 0.2)
            await asyncio.sleep(0.2)  # now the oldest reply is 0.4 s late
            late = asyncio.ensure_future(auto.call(("ECHO", "late")))  # drops the stuck connection
            with pytest.raises(ConnectionError, match="has not answered"):
                await waiting
        finally:
            os.kill(embedded_redis.pid, signal.SIGCONT)
        assert await asyncio.wait_for(late, 5) == [b"late"]  # on the new connection, once Redis is back
        assert await auto.call(("ECHO", "again")) == [b"again"]
    finally:
        await auto.aclose()
        await server.aclose()


async def test_submit_queues_now_and_leaves_lost_scripts_to_reload_lost_scripts(
    auto: AutoPipeline, redis_prefix: str
) -> None:
    """The public half of ``call`` that ``ClusterPipeline`` sends each node's batch with: a future per batch, on
    a pipeline with no connection yet and on one with a connection; a script the server does not have answers
    ``NOSCRIPT`` there, and ``reload_lost_scripts`` loads it and gives the real answer (the others untouched)."""
    sha = auto.register_script(f"-- {secrets.token_hex(8)}, never loaded before\nreturn redis.call('INCR', KEYS[1])")
    key = f"{redis_prefix}submit:{{n}}"
    batch = [("EVALSHA", sha, 1, key), ("SET", f"{key}:plain", b"x"), ("GET", f"{key}:plain")]
    first = auto.submit(batch)  # no connection yet: a task opens one
    replies = await first
    assert isinstance(replies[0], ReplyError) and str(replies[0]).startswith("NOSCRIPT")
    assert replies[1:] == [b"OK", b"x"]
    assert await auto.reload_lost_scripts(batch, replies) == [1, b"OK", b"x"]
    both = [auto.submit([("EVALSHA", sha, 1, key)]), auto.submit([("GET", key)])]  # an open connection: queued now
    assert [await future for future in both] == [[2], [b"2"]]
