"""The session's Redis is what ``PERSEUS_TEST_REDIS`` asks for: without this, a cluster run that silently fell
back to the one server would pass everything and prove nothing."""

from __future__ import annotations

import pytest

from common.redis_mode import detect
from tests.support.redis_target import on_owner, redis_client, session_mode

pytestmark = pytest.mark.integration


async def test_the_session_redis_is_in_the_asked_mode(
    redis_url: str, redis_prefix: str, base_env: dict[str, str]
) -> None:
    assert base_env["PERSEUS_REDIS_URL"] == redis_url  # what every core and gateway of the tests is given
    assert await detect(redis_url) == session_mode()
    client = redis_client(redis_url)
    keys = [f"{redis_prefix}target:{{{tag}}}" for tag in ("a", "b", "c")]  # slots 15495, 3300, 7365
    try:
        for key in keys:
            await client.set(key, key)
        assert [await client.get(key) for key in keys] == [key.encode() for key in keys]
        if session_mode() == "cluster":
            # One key on each of the three masters, and the client routed each there.
            assert len({await on_owner(client, key, "CLUSTER", "MYID") for key in keys}) == 3
    finally:
        await client.delete(*keys)
        await client.aclose()
