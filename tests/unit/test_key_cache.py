"""The gateways' key cache: brief answers, one lookup for concurrent misses, revocation honoured,
and a grace for confirmed keys while the core cannot answer (a controllable clock, a lookup that fails)."""

from __future__ import annotations

import asyncio

import pytest

from gateways.common.auth import CACHE_TTL_S, KEY_PATTERN, KEY_UNCHECKABLE, NEGATIVE_TTL_S, KeyCache
from gateways.common.errors import InternalError, RateLimitExceeded, ServiceUnavailable, Unauthorized
from perseus.marketdata.v1 import key_service_pb2

PRO = key_service_pb2.ApiKey(id=1, tier=key_service_pb2.KEY_TIER_PRO)
GOOD = "pk_pro_" + "A" * 43
BAD = "pk_pro_" + "B" * 43


class Core:
    """Stands in for the core's KeyService: counts lookups, answers when released."""

    def __init__(self) -> None:
        self.calls = 0
        self.known: dict[str, key_service_pb2.ApiKey] = {GOOD: PRO}
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def lookup(self, key: str) -> key_service_pb2.ApiKey | None:
        self.calls += 1
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return self.known.get(key)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_misses_share_one_lookup() -> None:
    core = Core()
    cache = KeyCache(core.lookup)
    waiting = [asyncio.create_task(cache.authenticate(GOOD)) for _ in range(500)]
    await asyncio.sleep(0)
    core.release.set()
    assert [k.id for k in await asyncio.gather(*waiting)] == [1] * 500
    assert core.calls == 1
    assert (await cache.authenticate(GOOD)).id == 1 and core.calls == 1  # and it is remembered


async def test_a_waiter_that_gives_up_does_not_cancel_the_others() -> None:
    core = Core()
    cache = KeyCache(core.lookup)
    first, second = (asyncio.create_task(cache.authenticate(GOOD)) for _ in range(2))
    await asyncio.sleep(0)
    first.cancel()
    core.release.set()
    assert (await second).id == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_lookup_reaches_every_waiter_and_is_not_remembered() -> None:
    core = Core()
    core.failure = ConnectionError("core down")
    cache = KeyCache(core.lookup)
    waiting = [asyncio.create_task(cache.authenticate(GOOD)) for _ in range(3)]
    await asyncio.sleep(0)
    core.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results) and core.calls == 1
    core.failure = None
    assert (await cache.authenticate(GOOD)).id == 1 and core.calls == 2


async def test_a_revoked_key_stops_working_once_its_answer_expires() -> None:
    core, clock = Core(), Clock()
    core.release.set()
    cache = KeyCache(core.lookup, clock=clock)
    assert (await cache.authenticate(GOOD)).id == 1
    del core.known[GOOD]  # revoked in the core
    clock.now += CACHE_TTL_S - 0.1
    assert (await cache.authenticate(GOOD)).id == 1  # still within the cache's few seconds
    clock.now += 0.2
    with pytest.raises(Unauthorized):
        await cache.authenticate(GOOD)
    assert core.calls == 2


GRACE_S = 60.0


async def confirmed_then_unanswered(grace_s: float = GRACE_S) -> tuple[Core, Clock, KeyCache]:
    """A cache whose key the core confirmed at ``clock.now``; from then on the core does not answer."""
    core, clock = Core(), Clock()
    core.release.set()
    cache = KeyCache(core.lookup, clock=clock, grace_s=grace_s)
    assert (await cache.authenticate(GOOD)).id == 1
    core.failure = ServiceUnavailable()  # what the core client raises for UNAVAILABLE and DEADLINE_EXCEEDED
    return core, clock, cache


async def test_a_confirmed_key_keeps_working_while_the_core_does_not_answer_until_the_grace_ends() -> None:
    core, clock, cache = await confirmed_then_unanswered()
    confirmed_at = clock.now
    clock.now += CACHE_TTL_S + 1
    assert (await cache.authenticate(GOOD)).id == 1  # the lookup failed: the confirmed answer stands
    assert core.calls == 2
    core.release.clear()  # lookups now hang (a stalled core): a key in grace must not wait for them
    for _ in range(20):
        clock.now += 1
        async with asyncio.timeout(1):
            assert (await cache.authenticate(GOOD)).id == 1
    await asyncio.sleep(0)
    assert core.calls == 3  # one lookup at a time is retried in the background, not one per request
    core.release.set()
    await asyncio.sleep(0)
    clock.now = confirmed_at + GRACE_S + 0.1
    with pytest.raises(ServiceUnavailable) as ended:
        await cache.authenticate(GOOD)
    assert ended.value.message == KEY_UNCHECKABLE


async def test_revocation_reaches_a_key_in_grace_once_the_core_answers_again() -> None:
    core, clock, cache = await confirmed_then_unanswered()
    clock.now += CACHE_TTL_S + 1
    assert (await cache.authenticate(GOOD)).id == 1  # in grace
    core.failure = None
    del core.known[GOOD]  # revoked while the core could not be asked
    clock.now += 1
    assert (await cache.authenticate(GOOD)).id == 1  # served from the cache; the core is asked meanwhile
    await asyncio.sleep(0)
    with pytest.raises(Unauthorized):
        await cache.authenticate(GOOD)


async def test_a_key_the_core_never_confirmed_is_not_let_in() -> None:
    core, clock, cache = await confirmed_then_unanswered()
    with pytest.raises(ServiceUnavailable) as unknown:
        await cache.authenticate("pk_pro_" + "N" * 43)
    assert unknown.value.message == KEY_UNCHECKABLE
    core.failure = None
    with pytest.raises(Unauthorized):
        await cache.authenticate(BAD)  # the core says: unknown
    core.failure = ServiceUnavailable()
    clock.now += NEGATIVE_TTL_S
    with pytest.raises(ServiceUnavailable):  # an "unknown" answer is not turned into a grace
        await cache.authenticate(BAD)


async def test_only_an_unanswered_lookup_is_forgiven() -> None:
    core, clock, cache = await confirmed_then_unanswered()
    core.failure = InternalError()
    clock.now += CACHE_TTL_S + 1
    with pytest.raises(InternalError):
        await cache.authenticate(GOOD)


async def test_no_grace_when_it_is_zero() -> None:
    _, clock, cache = await confirmed_then_unanswered(grace_s=0)
    clock.now += CACHE_TTL_S + 0.1
    with pytest.raises(ServiceUnavailable):
        await cache.authenticate(GOOD)


# --- junk keys (issue 16) ------------------------------------------------------------------------


def test_the_gateway_key_shape_is_the_cores() -> None:
    from core.adapters import apikeys

    assert apikeys._KEY_SHAPE.pattern == KEY_PATTERN


async def test_malformed_keys_never_reach_the_core() -> None:
    core = Core()
    core.release.set()
    cache = KeyCache(core.lookup)
    for junk in ("pk_good", "x" * 50, "pk_pro_" + "A" * 31, "pk_PRO_" + "A" * 43, "pk_pro_" + "A" * 42 + "!"):
        with pytest.raises(Unauthorized):
            await cache.authenticate(junk, client="198.51.100.7")
    assert core.calls == 0


async def test_junk_keys_do_not_evict_a_good_one_and_are_asked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateways.common.auth as auth

    monkeypatch.setattr(auth, "MAX_CACHED_KEYS", 2)
    monkeypatch.setattr(auth, "MAX_UNKNOWN_KEYS", 4)
    core = Core()
    core.release.set()
    cache = KeyCache(core.lookup, bad_keys_per_minute=0)
    await cache.authenticate(GOOD)
    for n in range(50):
        with pytest.raises(Unauthorized):
            await cache.authenticate(f"pk_pro_{n:043d}")
    calls = core.calls
    assert (await cache.authenticate(GOOD)).id == 1 and core.calls == calls  # still cached
    with pytest.raises(Unauthorized):
        await cache.authenticate(f"pk_pro_{49:043d}")
    assert core.calls == calls  # the negative cache answered


async def test_a_client_trying_many_unknown_keys_gets_429() -> None:
    core = Core()
    core.release.set()
    clock = Clock()
    cache = KeyCache(core.lookup, clock=clock, bad_keys_per_minute=3)
    await cache.authenticate(GOOD, client="a")
    for n in range(3):
        with pytest.raises(Unauthorized):
            await cache.authenticate(f"pk_pro_{n:043d}", client="a")
    calls = core.calls
    with pytest.raises(RateLimitExceeded) as limited:
        await cache.authenticate(f"pk_pro_{9:043d}", client="a")
    assert 1 <= limited.value.retry_after_s <= 60 and core.calls == calls
    assert (await cache.authenticate(GOOD, client="a")).id == 1  # a key known good still works
    with pytest.raises(Unauthorized):  # another client is not affected
        await cache.authenticate(f"pk_pro_{9:043d}", client="b")
    clock.now += 60
    with pytest.raises(Unauthorized):  # a new minute
        await cache.authenticate(f"pk_pro_{8:043d}", client="a")
