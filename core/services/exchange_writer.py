"""Leadership for one exchange: stand by until the writer lease is ours, then run its feed.

At most one exchange-mode instance writes for an exchange. Each instance
loops: try to acquire the lease; while it holds it, run the venue feed and
the candle clock, renew the lease every third of its TTL and, while the venue
is connected, refresh the exchange's heartbeat (what makes it "online"); the
moment a renewal fails (or the local lease runs out, e.g. after a pause),
cancel the feed and go back to standby. A standby
polls every ``poll_s``, so it takes over within TTL + poll after a leader dies,
and contends again as soon as Redis answers after an outage, however long.

Each term (one holding of the lease) runs in a task of its own. On Python 3.11
a TaskGroup whose child raised (``LeaseLost``) cancels its parent task and
never takes that cancellation back: the parent's ``cancelling()`` stays at 1.
When the term's TaskGroup ran in the writer's own task, that leftover count
read as "we are being stopped" and the writer's task ended silently at the
first lost lease. Now the leftover lands on the term's task, which ends
anyway; the writer's own task never runs a TaskGroup, so its count rises only
when somebody really stops it.

A standby logs one line, "standby for EXCHANGE (leader: OWNER, term N)", when
it starts standing by and again only when the leader changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from common.bounded import within
from core.domain.errors import LeaseLost, StaleTerm, Unavailable
from core.domain.models import VenueHealth, VenueState

logger = logging.getLogger(__name__)

DEFAULT_POLL_S = 1.0
CLOCK_S = 0.5
HEARTBEAT_TTL_MS = 15_000
LEADER_READ_S = 1.0  # a standby's read of who leads: it only feeds a log line
RETRY_S = 0.05  # the shortest pause between two renewal attempts


@dataclass(frozen=True, slots=True)
class Leader:
    """Who holds the lease now (``owner`` None: nobody) and the newest term (what a standby reports)."""

    owner: str | None
    term: int


class Lease(Protocol):
    """The writer lease of one exchange (``core.adapters.writer_lock``). Its reads and writes of Redis raise
    ``Unavailable`` when Redis cannot answer; ``held()`` is the local view, valid without Redis."""

    owner: str
    term: int  # the fencing token of the last acquisition
    ttl_ms: int

    def held(self) -> bool: ...

    def renewal_due_in(self) -> float:
        """Seconds until the next renewal is due (<= 0: now)."""
        ...

    async def acquire(self) -> bool: ...

    async def renew(self) -> bool: ...

    async def release(self) -> None: ...

    async def leader(self) -> Leader: ...

    async def raise_term_floor(self, floor: int) -> None: ...


class FenceClaim(Protocol):
    """Makes a term the one allowed to write (``core.adapters.writer_fence``); raises ``StaleTerm`` when a newer
    term already claimed it, ``Unavailable`` when PostgreSQL cannot answer."""

    async def claim(self, term: int, holder: str) -> None: ...


class Pipeline(Protocol):
    """What the writer drives of :class:`~core.services.exchange_pipeline.ExchangePipeline`."""

    async def start(self, symbols: Sequence[str]) -> None: ...

    async def advance(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Feed:
    """What runs while leading: the venue (``run()`` until cancelled) and the pipeline it feeds."""

    pipeline: Pipeline
    run_venue: Callable[[], Coroutine[Any, Any, None]]
    symbols: tuple[str, ...]
    connected: Callable[[], bool]  # the venue's connection is up: only then is the exchange online
    # the venue's connection state and when it last delivered a message (GetStatus); None: not reported
    status: Callable[[], tuple[VenueState, int | None]] | None = None


class ExchangeWriter:
    def __init__(
        self,
        exchange: str,
        lock: Lease,
        make_feed: Callable[[], Feed],
        *,
        heartbeat: Callable[[], Awaitable[object]],
        fence: FenceClaim | None = None,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        self.exchange = exchange
        self._lock = lock
        self._make_feed = make_feed
        self._heartbeat = heartbeat
        self._fence = fence
        self._poll_s = poll_s
        self.leading = False
        self.terms = 0
        self._shown: Leader | None = None  # the leader the last standby line named
        self._stale = False  # the last term was older than PostgreSQL's fence: contend again at once
        self._feed: Feed | None = None  # the feed of the term running now
        self._last_message_ms: int | None = None  # kept from the last term's feed while standing by

    def venue(self) -> VenueHealth:
        """The venue feed as ``GetStatus`` shows it: ``stopped`` unless a term runs it here."""
        feed = self._feed
        if feed is None or feed.status is None:
            return VenueHealth(self.exchange, "stopped", self._last_message_ms)
        state, last_ms = feed.status()
        if last_ms is not None:
            self._last_message_ms = last_ms
        # the venue starts once the fence is claimed and the pipeline started: until then it is connecting
        return VenueHealth(self.exchange, "connecting" if state == "stopped" else state, self._last_message_ms)

    async def run(self) -> None:
        """Until cancelled: stand by, lead, and stand by again when the lease is lost."""
        unreachable = False
        while True:
            try:  # a frozen Redis (or a client that swallows the timeout's cancel) must not hold us here
                acquired = await within(self._lock.acquire(), self._lock.ttl_ms / 1000)
            except (Unavailable, TimeoutError) as exc:
                if not unreachable:  # once per outage, not every poll
                    logger.warning("%s: cannot reach Redis for the writer lease: %s", self.exchange, exc or "timeout")
                unreachable, acquired = True, False
            else:
                unreachable = False
            if acquired:
                self._shown = None  # the next standby is a new one: it logs its line again
                await self._lead()  # returns when the term is over: we stand by again
                if self._stale:  # the floor is raised: the next term is valid, and a standby must not win it
                    self._stale = False
                    continue
            await self._report_standby(reachable=acquired or not unreachable)
            await asyncio.sleep(self._poll_s)

    async def _report_standby(self, *, reachable: bool) -> None:
        """Log "standby for …" when standing by starts, then only when the leader changes."""
        leader: Leader | None = None
        if reachable:
            try:
                leader = await within(self._lock.leader(), min(self._lock.ttl_ms / 1000, LEADER_READ_S))
            except (Unavailable, TimeoutError):
                leader = None
        known = leader is not None
        if leader is None:
            if self._shown is not None:
                return  # Redis does not answer: nothing new to tell
            leader = Leader(None, self._lock.term)  # what we know: the last term we saw
        if leader == self._shown:
            return
        self._shown = leader
        owner = leader.owner if leader.owner is not None else ("none" if known else "unknown")
        logger.info("standby for %s (leader: %s, term %d)", self.exchange, owner, leader.term)

    async def _lead(self) -> None:
        """One term: returns when it ended (lease lost, or the feed failed); raises CancelledError only on a stop."""
        self.leading, self.terms = True, self.terms + 1
        logger.info("%s: this instance is the writer (term %d)", self.exchange, self._lock.term)
        term = asyncio.create_task(self._term(), name=f"writer:{self.exchange}:term-{self._lock.term}")
        try:
            await term
        except asyncio.CancelledError:
            if _stopping():
                raise
            # the term's task was cancelled from inside (nobody stopped us): a failure like any other
            logger.error("%s: the term ended cancelled without a stop; standing by", self.exchange)
        except Exception:  # a bug or an unexpected failure: log it, stand by, try again
            logger.exception("%s: the feed failed; standing by", self.exchange)
        finally:
            self.leading = False
            if not term.done():  # we were stopped while the term ran: stop it too (bounded by the caller)
                term.cancel()
                await asyncio.gather(term, return_exceptions=True)
            if self._lock.held():
                await _quietly(self._lock.release(), self._lock.ttl_ms / 1000)
        if _stopping():  # the stop reached the term, which ended normally (a lease lost meanwhile): stop now
            raise asyncio.CancelledError

    async def _term(self) -> None:
        feed = self._feed = self._make_feed()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._keep_lease(feed))  # from the start: a slow start must not lose the lease
                group.create_task(self._start(feed, group))
        except* StaleTerm:  # (a LeaseLost) logged where it was found; the floor is raised
            self._stale = True
        except* LeaseLost:
            logger.warning("%s: writer lease lost; standing by", self.exchange)
        finally:
            if feed.status is not None:
                self._last_message_ms = feed.status()[1] or self._last_message_ms
            self._feed = None

    async def _start(self, feed: Feed, group: asyncio.TaskGroup) -> None:
        if self._fence is not None:
            try:
                await self._fence.claim(self._lock.term, self._lock.owner)
            except StaleTerm as stale:  # Redis lost its counter: restart the terms above PostgreSQL's
                logger.warning("%s: %s; the next term starts above it", self.exchange, stale)
                await self._lock.raise_term_floor(stale.current)
                raise
        await feed.pipeline.start(feed.symbols)
        group.create_task(feed.run_venue())
        group.create_task(self._clock(feed.pipeline))

    async def _keep_lease(self, feed: Feed) -> None:
        interval = self._lock.ttl_ms / 3000
        while True:
            await asyncio.sleep(max(self._lock.renewal_due_in(), RETRY_S))
            try:  # a frozen Redis: the local lease decides (common.bounded: even if the client ignores a cancel)
                renewed = await within(self._renew(feed), interval)
            except (Unavailable, TimeoutError) as exc:
                logger.warning("%s: lease renewal failed: %s", self.exchange, exc or "timeout")
                renewed = self._lock.held()
            if not renewed:
                raise LeaseLost(self.exchange)

    async def _renew(self, feed: Feed) -> bool:
        renewed = await self._lock.renew()
        if renewed and feed.connected():
            await self._heartbeat()
        return renewed

    async def _clock(self, pipeline: Pipeline) -> None:
        while True:
            await asyncio.sleep(CLOCK_S)
            try:
                await pipeline.advance()
            except LeaseLost:
                raise
            except Exception:  # storage down: keep the candles in memory and try again next tick
                logger.warning("%s: closing candles failed; will retry", self.exchange, exc_info=True)


def _stopping() -> bool:
    """Whether this task was asked to stop: it runs no TaskGroup, so its count is only ever a real stop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _quietly(step: Awaitable[object], timeout_s: float) -> None:
    try:
        await within(step, timeout_s)
    except (Unavailable, TimeoutError):  # the lease then simply runs out
        pass
