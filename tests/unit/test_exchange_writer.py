"""Leadership over in-memory ports: the writer leads while its lease holds, stands by when it is lost or Redis
is away, and comes back; no Redis, no PostgreSQL (tests/integration/test_writer_*.py run the real lease)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from core.domain.errors import StaleTerm, StorageUnavailable
from core.services import exchange_writer as module
from core.services.exchange_writer import ExchangeWriter, Feed, Leader

SYMBOLS = ("BTC-USD",)


class MemoryLease:
    """The Lease port: free unless ``other`` holds it; ``down`` is Redis away (StorageUnavailable)."""

    def __init__(self) -> None:
        self.owner, self.term, self.ttl_ms = "me", 0, 300
        self.other: str | None = None
        self.down = False
        self.floor = 0
        self.releases = 0
        self._held = False

    def _redis(self) -> None:
        if self.down:
            raise StorageUnavailable("redis", "down")

    def held(self) -> bool:
        return self._held

    def renewal_due_in(self) -> float:
        return 0.0

    async def acquire(self) -> bool:
        self._redis()
        if self.other is not None:
            return False
        self.term = max(self.term, self.floor) + 1
        self._held = True
        return True

    async def renew(self) -> bool:
        self._redis()
        self._held = self.other is None
        return self._held

    async def release(self) -> None:
        self._held = False
        self.releases += 1

    async def leader(self) -> Leader:
        self._redis()
        return Leader(self.other or (self.owner if self._held else None), self.term)

    async def raise_term_floor(self, floor: int) -> None:
        self._redis()
        self.floor = floor


class Fence:
    """The fence claim port: PostgreSQL's term, which a claim must pass."""

    def __init__(self, current: int = 0) -> None:
        self.current = current
        self.claims: list[int] = []

    async def claim(self, term: int, holder: str) -> None:
        if term <= self.current:
            raise StaleTerm(term, self.current)
        self.current = term
        self.claims.append(term)


class Pipeline:
    def __init__(self) -> None:
        self.started: list[Sequence[str]] = []

    async def start(self, symbols: Sequence[str]) -> None:
        self.started.append(symbols)

    async def advance(self) -> None:
        return None


class Venue:
    def __init__(self) -> None:
        self.running = 0
        self.ended = 0

    async def run(self) -> None:
        self.running += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.running -= 1
            self.ended += 1


class Harness:
    def __init__(self, fence: Fence | None = None, poll_s: float = 0.01) -> None:
        self.lease, self.pipeline, self.venue = MemoryLease(), Pipeline(), Venue()
        self.beats = 0

        async def heartbeat() -> None:
            self.lease._redis()
            self.beats += 1

        self.writer = ExchangeWriter(
            "sim",
            self.lease,
            lambda: Feed(self.pipeline, self.venue.run, SYMBOLS, lambda: True),
            heartbeat=heartbeat,
            fence=fence,
            poll_s=poll_s,
        )


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:  # the doubles change state from the writer's tasks: poll them
            if condition():
                return
            await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "RETRY_S", 0.01)


async def running(h: Harness) -> asyncio.Task[None]:
    return asyncio.create_task(h.writer.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_free_lease_is_taken_and_the_feed_runs_with_its_heartbeat() -> None:
    h = Harness()
    task = await running(h)
    try:
        await eventually(lambda: h.venue.running == 1 and h.beats > 0)
        assert h.writer.leading and h.pipeline.started == [SYMBOLS]
    finally:
        await stop(task)
    assert h.venue.running == 0 and h.lease.releases == 1  # a stop ends the feed and gives the lease back


async def test_a_lost_lease_stops_the_feed_and_the_writer_leads_again_when_it_is_free() -> None:
    h = Harness()
    task = await running(h)
    try:
        await eventually(lambda: h.venue.running == 1)
        h.lease.other = "them"  # another instance holds it now: the next renewal fails
        await eventually(lambda: h.venue.ended == 1 and not h.writer.leading)
        h.lease.other = None
        await eventually(lambda: h.venue.running == 1)
        assert h.writer.terms == 2 and len(h.pipeline.started) == 2
    finally:
        await stop(task)


async def test_redis_away_is_waited_out_without_leading_and_the_writer_leads_once_it_is_back() -> None:
    h = Harness()
    h.lease.down = True
    task = await running(h)
    try:
        await asyncio.sleep(0.1)  # several polls against a Redis that does not answer
        assert not task.done() and h.writer.terms == 0
        h.lease.down = False
        await eventually(lambda: h.venue.running == 1)
    finally:
        await stop(task)


async def test_redis_away_while_leading_ends_the_term_once_the_local_lease_runs_out() -> None:
    h = Harness()
    task = await running(h)
    try:
        await eventually(lambda: h.venue.running == 1)
        h.lease.down = True
        h.lease._held = False  # the local lease ran out while renewals failed
        await eventually(lambda: h.venue.ended == 1 and not h.writer.leading)
        assert not task.done()
    finally:
        await stop(task)


async def test_a_term_older_than_postgresqls_raises_the_floor_and_the_next_term_starts_above_it() -> None:
    fence = Fence(current=41)  # Redis lost its term counter; PostgreSQL has seen term 41
    h = Harness(fence)
    task = await running(h)
    try:
        await eventually(lambda: h.venue.running == 1)
        assert fence.claims == [42] and h.lease.floor == 41
        assert h.pipeline.started == [SYMBOLS]  # the stale term never started the feed
    finally:
        await stop(task)


async def test_after_a_stale_term_the_writer_contends_again_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """Not after a poll: the lease was released, and a standby polling meanwhile would win a term this writer
    had just made valid (seen as the standby leading in a database whose fence was ahead of Redis)."""
    h = Harness(Fence(current=41), poll_s=30.0)
    task = await running(h)
    try:
        await eventually(lambda: h.venue.running == 1, timeout_s=2.0)
        assert h.writer.terms == 2 and h.lease.term == 42
        assert "the feed failed" not in caplog.text  # an expected event, not a crash with a traceback
    finally:
        await stop(task)


async def _deaf_to_cancel(seconds: float) -> bool:
    """A Redis call that swallows the cancellation of a timeout and keeps waiting (seen once from redis-py's
    cluster client during a failover): only ``seconds`` later does it answer, with a failed renewal."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            await asyncio.sleep(left)
        except asyncio.CancelledError:
            continue
    return False


async def test_a_renewal_that_ignores_its_timeout_still_ends_the_term_when_the_local_lease_runs_out() -> None:
    h = Harness()
    task = await running(h)
    try:
        await eventually(lambda: h.venue.running == 1)
        h.lease.renew = lambda: _deaf_to_cancel(3.0)  # type: ignore[method-assign]
        h.lease._held = False  # the local lease runs out while that renewal hangs
        await eventually(lambda: h.venue.ended == 1 and not h.writer.leading, timeout_s=1.0)
        assert not task.done()
    finally:
        await stop(task)
