"""VenueRunner with CoinbaseProtocol against the local replay server: delivery, reconnects, backoff, shutdown.

Backoff sleeps and the monotonic clock are fake (instant); only the idle
timeouts are real, and short.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from core.adapters.venues.coinbase import CoinbaseProtocol
from core.adapters.venues.runner import BACKOFF_CAP_S, VenueRunner, backoff_delay
from core.domain.market_events import MarketEvent, Trade
from tests.support.replay import Close, Drop, Pause, Reject, ReplayServer, Script, load_frames, wait_until

FIXTURES = Path(__file__).parent.parent / "fixtures" / "coinbase"
SESSION = load_frames(FIXTURES / "session.jsonl")
GAP = load_frames(FIXTURES / "gap.jsonl")
ERRORS = load_frames(FIXTURES / "errors.jsonl")
SYMBOLS = ("BTC-USD", "ETH-USD")
SUBSCRIBE = [
    {"type": "subscribe", "product_ids": [], "channel": "heartbeats"},
    {"type": "subscribe", "product_ids": list(SYMBOLS), "channel": "market_trades"},
]
SESSION_TRADE_IDS = ["572714612", "572714611", "478103355", "572714613", "478103356", "572714614", "572714615"]
NOW_MS = 1_695_628_300_000
IDLE_S = 0.5


class FakeTime:
    """A monotonic clock that only moves when told, and a sleep that records and returns at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.delays: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


class Sink:
    def __init__(self, *, fail_first: int = 0, error: Exception | None = None) -> None:
        self.events: list[MarketEvent] = []
        self._fail_first = fail_first
        self._error = error or RuntimeError("sink broke")
        self.calls = 0

    async def __call__(self, events: Sequence[MarketEvent]) -> None:
        self.calls += 1
        if self.calls <= self._fail_first:
            raise self._error
        self.events.extend(events)

    def trade_ids(self) -> list[str]:
        return [e.trade_id for e in self.events if isinstance(e, Trade)]


def make_runner(
    server: ReplayServer,
    sink: Sink,
    fake: FakeTime,
    *,
    idle_timeout_s: float = IDLE_S,
    propagate: tuple[type[Exception], ...] = (),
) -> VenueRunner:
    return VenueRunner(
        lambda: CoinbaseProtocol(SYMBOLS, url=server.url, idle_timeout_s=idle_timeout_s),
        sink,
        clock_ms=lambda: NOW_MS,
        monotonic=fake.monotonic,
        sleep=fake.sleep,
        random_source=lambda: 1.0,
        propagate=propagate,
    )


@asynccontextmanager
async def running(runner: VenueRunner) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        await runner.aclose()
        assert task.done() and not task.cancelled()
        task.result()  # an exception that ended run() fails the test here


def subscribed(server: ReplayServer, index: int) -> list[object]:
    return [json.loads(frame) for frame in server.connections[index].received]


async def test_events_reach_the_sink_in_order() -> None:
    sink, fake = Sink(), FakeTime()
    async with ReplayServer([Script(expect=SUBSCRIBE, send=SESSION)]) as server:
        runner = make_runner(server, sink, fake, idle_timeout_s=5.0)
        async with running(runner):
            await wait_until(lambda: len(sink.events) == len(SESSION_TRADE_IDS))
            assert sink.trade_ids() == SESSION_TRADE_IDS
            assert (runner.connected, runner.connects, runner.frames, runner.errors) == (True, 1, len(SESSION), 0)
            assert runner.last_frame_ms == NOW_MS
        assert not runner.connected
        assert subscribed(server, 0) == SUBSCRIBE


async def test_close_and_drop_lead_to_reconnect_and_resubscribe() -> None:
    sink, fake = Sink(), FakeTime()
    scripts = [
        Script(expect=SUBSCRIBE, send=SESSION[:3], then=Close(1011, "restarting")),
        Script(expect=SUBSCRIBE, send=SESSION[:3], then=Drop()),
        Script(expect=SUBSCRIBE, send=SESSION[5:6]),
    ]
    async with ReplayServer(scripts) as server:
        runner = make_runner(server, sink, fake, idle_timeout_s=5.0)
        async with running(runner):
            await wait_until(lambda: len(sink.events) == 7)
            assert [subscribed(server, i) for i in range(3)] == [SUBSCRIBE] * 3
            # the snapshot comes again on each connection; the pipeline drops the repeats
            assert sink.trade_ids() == SESSION_TRADE_IDS[:3] * 2 + ["572714613"]
            assert (runner.connects, runner.reconnects, len(server.connections)) == (3, 2, 3)


async def test_idle_timeout_counts_from_the_last_frame_then_reconnects() -> None:
    sink, fake = Sink(), FakeTime()
    heartbeat = SESSION[0]
    # each gap well inside the idle timeout (a loaded machine stretches them), all of them beyond it
    spaced = [heartbeat, Pause(0.7), heartbeat, Pause(0.7), heartbeat, Pause(0.7), heartbeat]
    async with ReplayServer([Script(expect=SUBSCRIBE, send=spaced), Script(expect=SUBSCRIBE)]) as server:
        runner = make_runner(server, sink, fake, idle_timeout_s=2.0)
        async with running(runner):
            await server.wait_connections(2)
            assert runner.frames == 4  # 2.1 s of heartbeats outlived a 2 s idle timeout
            await asyncio.wait_for(server.connections[0].done.wait(), 5)  # the runner closed the silent one
            await wait_until(lambda: runner.connects == 2)
            await wait_until(lambda: subscribed(server, 1) == SUBSCRIBE)  # the new connection subscribes again


async def test_error_frame_leads_to_reconnect() -> None:
    sink, fake = Sink(), FakeTime()
    async with ReplayServer([Script(expect=SUBSCRIBE, send=ERRORS[:1]), Script(expect=SUBSCRIBE)]) as server:
        runner = make_runner(server, sink, fake, idle_timeout_s=5.0)
        async with running(runner):
            await server.wait_connections(2)
            await wait_until(lambda: runner.connects == 2)
            assert (runner.errors, runner.reconnects) == (1, 1)
            assert server.connections[0].done.is_set() or await asyncio.wait_for(server.connections[0].done.wait(), 5)


async def test_unreadable_frames_are_skipped_on_the_same_connection_and_gaps_counted() -> None:
    sink, fake = Sink(), FakeTime()
    async with ReplayServer([Script(expect=SUBSCRIBE, send=[*GAP, ERRORS[1], ERRORS[3]])]) as server:
        runner = make_runner(server, sink, fake, idle_timeout_s=5.0)
        async with running(runner):
            await wait_until(lambda: runner.frames == len(GAP) + 2)
            assert (runner.errors, runner.connects, runner.gaps) == (2, 1, 2)  # one gap per subscribed symbol
            assert sink.trade_ids() == ["572714701", "572714705", "478103420"]


@pytest.mark.parametrize(
    ("healthy", "expected"),
    [(True, [0.5, 1.0, 2.0, 0.5, 1.0, 2.0]), (False, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0])],
)
async def test_backoff_grows_between_failures_and_resets_after_a_healthy_connection(
    healthy: bool, expected: list[float]
) -> None:
    fake = FakeTime()

    class AgingSink(Sink):
        async def __call__(self, events: Sequence[MarketEvent]) -> None:
            await super().__call__(events)
            if healthy:
                fake.now += 31.0  # the connection has now been up longer than healthy_after_s

    sink = AgingSink()
    scripts = [Script(then=Reject())] * 3 + [Script(expect=SUBSCRIBE, send=SESSION[5:6], then=Drop())]
    async with ReplayServer(scripts) as server:
        runner = make_runner(server, sink, fake)
        async with running(runner):
            await wait_until(lambda: len(fake.delays) >= len(expected))
        assert fake.delays[: len(expected)] == expected
        assert runner.connects == 1 and sink.trade_ids() == ["572714613"]


def test_backoff_delay_arithmetic() -> None:
    assert [backoff_delay(n, 1.0) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(0, 0.0) == 0.25  # jitter takes off at most half
    assert backoff_delay(10_000, 0.0) == BACKOFF_CAP_S / 2
    assert 0.25 < backoff_delay(0, 0.5) < 0.5


async def test_a_failing_sink_does_not_stop_the_runner() -> None:
    sink, fake = Sink(fail_first=1), FakeTime()
    async with ReplayServer([Script(expect=SUBSCRIBE, send=SESSION)]) as server:
        runner = make_runner(server, sink, fake, idle_timeout_s=5.0)
        async with running(runner):
            await wait_until(lambda: runner.frames == len(SESSION))
            await wait_until(lambda: len(sink.events) == 4)  # all but the snapshot's 3 trades
            assert (runner.sink_errors, runner.connects, runner.reconnects) == (1, 1, 0)


async def test_exceptions_named_in_propagate_end_run() -> None:
    class LeaseGone(Exception):
        pass

    sink, fake = Sink(fail_first=1, error=LeaseGone()), FakeTime()
    async with ReplayServer([Script(expect=SUBSCRIBE, send=SESSION)]) as server:
        runner = make_runner(server, sink, fake, propagate=(LeaseGone,))
        with pytest.raises(LeaseGone):
            await asyncio.wait_for(runner.run(), 5)
        assert not runner.connected
        await asyncio.wait_for(server.connections[0].done.wait(), 5)


@pytest.mark.parametrize("stop", ["cancel", "aclose"])
async def test_stopping_closes_the_connection_and_leaves_no_task(stop: str) -> None:
    sink, fake = Sink(), FakeTime()
    async with ReplayServer([Script(expect=SUBSCRIBE, send=SESSION[:1])]) as server:
        tasks_before = len(asyncio.all_tasks())
        runner = make_runner(server, sink, fake, idle_timeout_s=5.0)
        task = asyncio.create_task(runner.run())
        await wait_until(lambda: runner.frames == 1)
        if stop == "cancel":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            await runner.aclose()
            assert task.done() and not task.cancelled() and task.result() is None
        assert not runner.connected
        await asyncio.wait_for(server.connections[0].done.wait(), 5)  # the server saw the socket go
        await wait_until(lambda: len(asyncio.all_tasks()) == tasks_before)


async def test_aclose_from_the_sink_ends_run_without_reconnecting() -> None:
    fake = FakeTime()
    runner: VenueRunner | None = None

    class ClosingSink(Sink):
        async def __call__(self, events: Sequence[MarketEvent]) -> None:
            await super().__call__(events)
            assert runner is not None
            await runner.aclose()

    sink = ClosingSink()
    async with ReplayServer([Script(expect=SUBSCRIBE, send=SESSION)]) as server:
        runner = make_runner(server, sink, fake, idle_timeout_s=5.0)
        await asyncio.wait_for(runner.run(), 5)
        assert (runner.connects, runner.reconnects, runner.connected) == (1, 0, False)
        assert sink.trade_ids() == SESSION_TRADE_IDS[:3]  # the snapshot, then nothing
        await asyncio.wait_for(server.connections[0].done.wait(), 5)


async def test_state_goes_connecting_reconnecting_connected_stopped() -> None:
    """What GetStatus shows of a venue: ``reconnecting`` through the backoff after a refused or lost
    connection, ``connected`` while one is open, ``stopped`` before and after run()."""
    sink, fake = Sink(), FakeTime()
    during_backoff: list[str] = []
    scripts = [
        Script(then=Reject(503)),
        Script(expect=SUBSCRIBE, send=SESSION[:1], then=Drop()),
        Script(expect=SUBSCRIBE, send=SESSION[:1]),
    ]
    async with ReplayServer(scripts) as server:
        runner = make_runner(server, sink, fake, idle_timeout_s=5.0)

        async def sleep(seconds: float) -> None:
            during_backoff.append(runner.state)
            await fake.sleep(seconds)

        runner._sleep = sleep
        assert (runner.state, runner.last_frame_ms) == ("stopped", None)
        async with running(runner):
            await wait_until(lambda: runner.connects == 2 and runner.connected)
            assert runner.state == "connected"
            assert runner.last_frame_ms == NOW_MS
        assert runner.state == "stopped"
    assert during_backoff == ["reconnecting", "reconnecting"]


async def test_state_is_connecting_until_the_first_connection_opens() -> None:
    sink, fake = Sink(), FakeTime()
    async with ReplayServer([Script(expect=SUBSCRIBE, send=SESSION[:1])]) as server:
        runner = make_runner(server, sink, fake, idle_timeout_s=5.0)
        seen: list[str] = []
        real_factory = runner._factory

        def factory() -> CoinbaseProtocol:
            seen.append(runner.state)  # asked just before each connection is opened
            return real_factory()  # type: ignore[return-value]

        runner._factory = factory
        async with running(runner):
            await wait_until(lambda: runner.connected)
        assert seen == ["connecting"]
