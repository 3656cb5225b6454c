"""One gateway process's streaming runtime: the core stream, the hub, and each client connection's life.

:class:`WsRuntime` is built with the gateway's services when the server
starts (:meth:`WsRuntime.build`: the hub, the core stream, the connection
counter and its Redis pool, wired once) and started once the server runs.
:meth:`WsRuntime.serve` is one
connection, in order: the connection caps of the gateway and of the client's address (1013, 4008; before
the key is looked at, so they cost nothing), the key (``?apiKey=``, ``X-API-Key``, or for browsers a
``key.<KEY>`` subprotocol beside ``perseus.v1``: ``subprotocols.py``; 4001), a
connection slot in Redis (4008), then every frame from the first one, each
checked against the message rate (4029) and answered in order. Frames that
arrive while the key is checked wait in the websocket's own buffer, so none is
lost. Background tasks: the core stream, the heartbeat to every client, the
connection-slot refresh (which also reconciles the slots after a Redis
outage: ``connections.py``), the key recheck (an open connection whose key was
revoked closes with 4001 within seconds, like a REST request would be
refused; an outage of the core closes nothing) and the GC policy. They run
under the gateway's :class:`~common.supervise.TaskSupervisor` (``services.tasks``):
one that ends is logged, restarted with backoff and shown degraded until it
runs again; all stop on stop.

A subscribe is checked before it reaches the hub: the per-connection and per-key channel budgets
(``SUBSCRIPTION_LIMIT``; a key's distinct channels on this gateway are counted across its connections), then
each new channel's symbol against the core's lists (``symbols.py``; ``INVALID_CHANNEL``). A subscribe with
``resume`` fetches its replay on a stream of its own (:meth:`WsRuntime._replay`), never on the shared one, at
most ``PERSEUS_WS_RESUMES_PER_KEY`` at once per key; the core replays at most 5,000 events per request (the
rest is a ``resume_gap``), and a client that leaves cancels its replay stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
from grpc import aio
from redis.exceptions import RedisClusterException, RedisError
from sanic import Request
from sanic.compat import Header
from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from common import runtime as gc_policy, telemetry
from common.projection import to_public
from common.redis_clients import RedisClient, redis_py
from common.supervise import TaskSupervisor
from gateways.common import tracing
from gateways.common.auth import PRIVILEGED_TIERS, KeyCache
from gateways.common.errors import ApiError, RateLimitExceeded, Unauthorized
from gateways.common.services import GatewayServices
from gateways.ws import protocol, subprotocols
from gateways.ws.channels import EVERY_PRICE, EVERY_PRICE_CANONICAL
from gateways.ws.connections import ConnectionCounter
from gateways.ws.hub import Client, Hub, Join
from gateways.ws.limits import MessageRateLimit, SlowClientRule, Verdict
from gateways.ws.protocol import CloseCode, ErrorCode, Replay, StopReplay, Subscribe, Unsubscribe
from gateways.ws.settings import WsSettings
from gateways.ws.sink import ClientSink
from gateways.ws.symbols import SymbolDirectory
from gateways.ws.upstream import Outbox, Upstream
from perseus.marketdata.v1 import market_data_service_pb2 as md, replay_service_pb2, replay_service_pb2_grpc

logger = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 10.0
REDIS_CONNECTIONS = 32
REDIS_WAIT_S = 5.0
CATCH_UP_POLL_S = 0.005
GC_CHECK_S = 5.0
STOP_TIMEOUT_S = 2.0
# 10,000 writes at once would stall the loop for tens of milliseconds: the heartbeat goes out in chunks.
HEARTBEAT_CHUNK = 500
GC_REFREEZE_AFTER = 200  # new connections since the last freeze
KEY_RECHECK_CHUNK = 100  # keys checked concurrently per recheck round
MAX_KEY_LENGTH = 256
UNLIMITED_CONNECTIONS = 2**31 - 1
API_KEY_PARAM = "apiKey"
SEED_KEY_PARAM = "key"  # seed 004's ?key=
API_KEY_HEADER = "x-api-key"
AUTH_TIMEOUT_S = 5.0  # seed 004: without a key on the upgrade, {"action":"auth","key":…} within this, or 4001
# A close reason is at most 123 bytes (RFC 6455): a longer one would fail the close (1000 instead of 4001).
NO_KEY = "an API key is required: ?apiKey=, ?key=, X-API-Key, subprotocol key.<KEY>, or a first message "
NO_KEY += '{"action":"auth","key":…}'
RESUME_WAIT_S = 10.0  # how long a resume waits for one of its key's replay slots before RATE_LIMITED
SYMBOLS_TIMEOUT_S = 2.0  # a core that cannot list the symbols within this does not hold subscriptions up


@dataclass(slots=True)
class KeyState:
    """What one API key holds on this gateway, across its connections: its distinct channels (each counted
    once per connection holding it) and its replay slots."""

    resumes: asyncio.Semaphore
    privileged: bool = False  # an internal or admin key: price_updates:all
    connections: int = 0
    replays: int = 0  # history replays playing (PERSEUS_WS_REPLAYS_PER_KEY)
    channels: Counter[str] = field(default_factory=Counter)

    def hold(self, canonicals: Iterable[str]) -> None:
        for canonical in canonicals:
            self.channels[canonical] += 1

    def drop(self, canonicals: Iterable[str]) -> None:
        for canonical in canonicals:
            left = self.channels[canonical] - 1
            if left > 0:
                self.channels[canonical] = left
            else:
                del self.channels[canonical]


@dataclass(slots=True)
class ReplayRun:
    """One connection's history replay: its request, the events sent so far, and the task that plays it."""

    request: Replay
    task: asyncio.Task[None] | None = None
    sent: int = 0


class WsRuntime:
    def __init__(
        self,
        settings: WsSettings,
        *,
        keys: KeyCache,
        tasks: TaskSupervisor,
        upstream: Upstream,
        counter: ConnectionCounter,
        redis: RedisClient,
        symbols: SymbolDirectory | None = None,
        replay: replay_service_pb2_grpc.ReplayServiceStub | None = None,
        replay_metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.settings = settings
        self._replay_stub = replay  # None: replays are not offered
        self._replay_metadata = replay_metadata  # the service credential (CoreClient.auth_metadata)
        self.rule = SlowClientRule(grace_s=settings.slow_client_s)
        self.upstream = upstream
        self.counter = counter
        self._redis = redis  # the counter's own pool: closed by stop()
        self._keys = keys
        self._tasks = tasks
        self.sinks: set[ClientSink] = set()
        self._holders: dict[str, set[ClientSink]] = {}  # presented key → its open connections
        self._key_states: dict[int, KeyState] = {}  # by key id
        self._addresses: dict[str, int] = {}  # client address → its connections here
        self._admitted = 0  # connections past the caps, authenticated or not yet
        self.symbols = symbols
        self.refused_connections = 0
        self.skipped_closed = 0
        self.slow_closes = 0
        self._opened_since_freeze = 0
        self._closed_since_full = 0

    @classmethod
    def build(cls, settings: WsSettings, services: GatewayServices, *, redis_url: str, redis_prefix: str) -> WsRuntime:
        """Wire the streaming runtime once: the outbox, the hub sending into it, the core stream on both, and
        the connection counter on a Redis client of its own, whose calls wait for a free connection (thousands
        of clients may connect at once): a blocking pool of :data:`REDIS_CONNECTIONS` on one server, a
        ``RedisCluster`` that queues its callers past that many on a cluster (``redis_py(blocking=True)``)."""
        outbox = Outbox()
        upstream = Upstream(services.core.streams, Hub(outbox.put), outbox, metadata=services.core.auth_metadata)
        redis = redis_py(
            redis_url,
            services.redis_mode,
            socket_timeout=REDIS_WAIT_S,
            socket_connect_timeout=REDIS_WAIT_S,
            max_connections=REDIS_CONNECTIONS,
            blocking=True,
        )
        counter = ConnectionCounter(redis, prefix=redis_prefix, lease_s=settings.lease_s)
        core = services.core

        async def fetch() -> tuple[md.ListExchangesResponse, md.ListSymbolsResponse]:
            exchanges = await core.unary(
                core.market_data.ListExchanges, md.ListExchangesRequest(), request_id=None, timeout_s=SYMBOLS_TIMEOUT_S
            )
            symbols = await core.unary(
                core.market_data.ListSymbols, md.ListSymbolsRequest(), request_id=None, timeout_s=SYMBOLS_TIMEOUT_S
            )
            return exchanges, symbols

        return cls(
            settings,
            keys=services.keys,
            tasks=services.tasks,
            upstream=upstream,
            counter=counter,
            redis=redis,
            symbols=SymbolDirectory(fetch),
            replay=core.replay,
            replay_metadata=core.auth_metadata,
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Once the server runs: the background jobs under the gateway's supervisor, then the GC policy."""
        jobs = {
            "ws-upstream": self.upstream.run,
            "ws-heartbeats": self._heartbeats,
            "ws-slot-refresh": self._refresh_slots,
            "ws-key-recheck": self._recheck_keys,
            "ws-gc-policy": self._gc_policy,
        }
        for name, job in jobs.items():
            self._tasks.spawn(name, job)
        gc_policy.tune_gc()

    async def stop(self) -> None:
        for sink in list(self.sinks):
            sink.fail(CloseCode.GOING_AWAY, "the gateway is shutting down")
        # before the Redis client goes: no job may use it after
        stuck = await self._tasks.aclose(timeout_s=STOP_TIMEOUT_S)
        if stuck:
            logger.warning("background tasks did not stop in time: %s", ", ".join(stuck))
        await self._redis.aclose()

    async def _heartbeats(self) -> None:
        """Every heartbeat interval, to every client, one write: the ``heartbeat`` message and a protocol ping
        (one payload per round, encoded once); the clients whose pong is missing ``ping_timeout_s`` later
        are failed with 1011. One job for all connections instead of Sanic's keepalive task per connection
        (``PERSEUS_WS_HEARTBEAT_S`` is also the protocol ping interval, as it was)."""
        loop = asyncio.get_running_loop()
        rounds = itertools.count(1)
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            payload = b"hb%d" % next(rounds)
            frames = protocol.text_frame(protocol.heartbeat_message(now)) + protocol.ping_frame(payload)
            sinks = list(self.sinks)
            pinged: list[ClientSink] = []
            for start in range(0, len(sinks), HEARTBEAT_CHUNK):  # let events through between chunks
                pinged.extend(sink for sink in sinks[start : start + HEARTBEAT_CHUNK] if sink.ping(frames, payload))
                await asyncio.sleep(0)
            loop.call_later(self.settings.ping_timeout_s, _check_pongs, pinged, payload)

    async def _refresh_slots(self) -> None:
        while True:
            await self.counter.wait_for_refresh()
            try:
                await self.counter.refresh()
            except (RedisError, RedisClusterException, OSError) as exc:
                logger.warning("could not refresh connection slots (%s)", type(exc).__name__)

    async def _recheck_keys(self) -> None:
        """Ask again about every key with open connections (the key cache keeps answers a few
        seconds, so a busy key costs one core call per round); close the connections of a revoked one.
        A core that cannot answer now closes nothing: users are not cut off by an outage."""

        async def recheck(key: str) -> None:
            try:
                await self._keys.authenticate(key)
            except Unauthorized:
                for sink in list(self._holders.get(key, ())):
                    sink.fail(CloseCode.INVALID_KEY, "the API key was revoked")
            except ApiError:
                pass

        while True:
            await asyncio.sleep(self.settings.key_recheck_s)
            keys = list(self._holders)
            for start in range(0, len(keys), KEY_RECHECK_CHUNK):
                await asyncio.gather(*(recheck(key) for key in keys[start : start + KEY_RECHECK_CHUNK]))

    async def _gc_policy(self) -> None:
        """Reclaim frozen garbage once as many clients left as are connected."""
        while True:
            await asyncio.sleep(GC_CHECK_S)
            if self._closed_since_full > max(1_000, len(self.sinks)):
                self._closed_since_full = self._opened_since_freeze = 0
                gc_policy.collect_frozen()

    def _opened(self) -> None:
        """Freeze a new connection's objects once ``GC_REFREEZE_AFTER`` have opened, at once: left young
        until a timer, a burst of thousands of connections filled generation 1 with half a million objects
        and its next collection paused the loop for 300 ms, every client's events with it (``make
        bench-ws`` at 10,000 clients). A freeze only moves lists, so it is cheap at any rate."""
        self._opened_since_freeze += 1
        if self._opened_since_freeze >= GC_REFREEZE_AFTER:
            self._opened_since_freeze = 0
            gc_policy.refreeze()

    # --- one connection -----------------------------------------------------------------------

    async def serve(self, request: Request[Any, Any], ws: Any) -> None:
        """One connection: the caps of the gateway and of the client's address first, then :meth:`_serve`."""
        address = request.remote_addr or request.ip  # PERSEUS_TRUSTED_PROXIES: the X-Forwarded-For entry
        cap, per_address = self.settings.max_connections, self.settings.max_connections_per_ip
        if cap and self._admitted >= cap:
            self.refused_connections += 1
            await _close(ws, CloseCode.TRY_AGAIN_LATER, f"the gateway holds its maximum of {cap} connections")
            return
        if per_address and self._addresses.get(address, 0) >= per_address:
            self.refused_connections += 1
            await _close(ws, CloseCode.TOO_MANY_CONNECTIONS, f"this address already has {per_address} connections")
            return
        self._admitted += 1
        self._addresses[address] = self._addresses.get(address, 0) + 1
        try:
            await self._serve(request, ws, address)
        finally:
            self._admitted -= 1
            left = self._addresses[address] - 1
            if left:
                self._addresses[address] = left
            else:
                del self._addresses[address]

    async def _serve(self, request: Request[Any, Any], ws: Any, address: str) -> None:
        given = (
            request.args.get(API_KEY_PARAM) or request.args.get(SEED_KEY_PARAM) or request.headers.get(API_KEY_HEADER)
        )
        key = (given or "").strip()
        in_subprotocol = subprotocols.keys_offered(request)
        if len(in_subprotocol) > 1 or (key and in_subprotocol and in_subprotocol != {key}):
            await _close(ws, CloseCode.INVALID_KEY, "two different API keys were sent; send one")
            return
        key = key or next(iter(in_subprotocol), "") or await _first_message_key(ws)
        if not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
            await _close(ws, CloseCode.INVALID_KEY, NO_KEY)
            return
        try:
            api_key = await self._keys.authenticate(key, client=address)  # unknown keys counted per address
        except Unauthorized:
            await _close(ws, CloseCode.INVALID_KEY, "invalid or revoked API key")
            return
        except RateLimitExceeded as exc:
            await _close(ws, CloseCode.TOO_MANY_MESSAGES, str(exc))
            return
        except ApiError:
            await _close(ws, CloseCode.TRY_AGAIN_LATER, "the key cannot be checked now; try again later")
            return
        limit = api_key.max_connections or UNLIMITED_CONNECTIONS  # 0: the tier has no limit
        try:
            slot = await self.counter.acquire(api_key.id, limit)
        except (RedisError, RedisClusterException, OSError):
            await _close(ws, CloseCode.TRY_AGAIN_LATER, "connections cannot be counted now; try again later")
            return
        if slot is None:
            await _close(ws, CloseCode.TOO_MANY_CONNECTIONS, f"this key already has {limit} connections")
            return
        sink = ClientSink(ws, self.rule)
        client = Client(sink)
        self.sinks.add(sink)
        holders = self._holders.setdefault(key, set())
        holders.add(sink)
        state = self._key_states.get(api_key.id)
        if state is None:
            privileged = api_key.tier in PRIVILEGED_TIERS
            semaphore = asyncio.Semaphore(self.settings.resumes_per_key)
            state = self._key_states[api_key.id] = KeyState(semaphore, privileged)
        state.connections += 1
        self._opened()
        if telemetry.enabled:  # each subscribe's span continues the handshake's traceparent
            tracing.attach_handshake(request)
        _trim_after_handshake(request, ws)
        try:
            await self._read(ws, client, state)
        finally:
            state.drop(client.channels)
            state.connections -= 1
            if not state.connections and self._key_states.get(api_key.id) is state:
                del self._key_states[api_key.id]
            sink.closed()
            self.sinks.discard(sink)
            holders.discard(sink)
            if not holders and self._holders.get(key) is holders:
                del self._holders[key]
            self.skipped_closed += sink.skipped
            self.slow_closes += sink.close_code == CloseCode.TOO_SLOW
            self._closed_since_full += 1
            self.upstream.hub.release(client)
            await self.counter.release(api_key.id, slot)

    async def _read(self, ws: Any, client: Client, state: KeyState) -> None:
        sink = client.sink
        assert isinstance(sink, ClientSink)
        rate = MessageRateLimit(self.settings.messages_per_s, self.settings.message_burst)
        replay: list[ReplayRun] = []  # at most one, playing or just ended
        # Sanic's ws.recv() makes a task and an asyncio.wait per message, alive while it waits (about 1.5 KiB
        # per idle connection): the frame assembler is read directly instead. A close frame or EOF cancels
        # ``recv_cancel``, which then cancels this task, where recv() would have raised (sanic==25.12.1).
        task = asyncio.current_task()
        assert task is not None

        def cancel_reader(_: asyncio.Future[None]) -> None:
            task.cancel()

        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        closed.add_done_callback(cancel_reader)
        ws.recv_cancel = closed
        _drop_unused_buffers(ws)
        try:
            await self._read_frames(ws, client, state, rate, replay)
        finally:
            closed.remove_done_callback(cancel_reader)
            ws.recv_cancel = None
            for run in replay:
                if run.task is not None:
                    run.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await run.task

    async def _read_frames(
        self, ws: Any, client: Client, state: KeyState, rate: MessageRateLimit, replay: list[ReplayRun]
    ) -> None:
        sink = client.sink
        assert isinstance(sink, ClientSink)
        assembler = ws.assembler
        while not sink.closing:
            if ws.ws_proto.state is State.CLOSED:
                return
            frame = await assembler.get()
            if frame is None:
                continue
            verdict = rate.check(time.monotonic())
            if verdict is Verdict.CLOSE:
                sink.fail(CloseCode.TOO_MANY_MESSAGES, "too many messages")
                return
            if verdict is Verdict.REJECT:
                sink.send(_error(ErrorCode.RATE_LIMITED, "too many messages; this one was dropped"))
                continue
            message = protocol.parse_client_message(frame, default_exchange=self.settings.default_exchange)
            if isinstance(message, Subscribe):
                if telemetry.enabled:
                    with tracing.subscribe_span(message.channels):
                        await self._subscribe(client, message, state)
                else:
                    await self._subscribe(client, message, state)
            elif isinstance(message, Unsubscribe):
                held = set(client.channels)
                self.upstream.hub.unsubscribe(client, message.channels)
                state.drop(held.difference(client.channels))
            elif isinstance(message, Replay):
                await self._start_replay(client, message, state, replay)
            elif isinstance(message, StopReplay):
                await self._stop_replay(client, replay)
            else:
                sink.send(_error(message.code, message.message))

    async def _subscribe(self, client: Client, message: Subscribe, state: KeyState) -> None:
        sink = client.sink
        adding = [c for c in dict.fromkeys(message.channels.values()) if c not in client.channels]
        if len(client.channels) + len(adding) > protocol.MAX_SUBSCRIPTIONS_PER_CONNECTION:
            limit = protocol.MAX_SUBSCRIPTIONS_PER_CONNECTION
            sink.send(_error(ErrorCode.SUBSCRIPTION_LIMIT, f"a connection holds at most {limit} subscriptions"))
            return
        budget = self.settings.channels_per_key
        if budget and len(state.channels) + sum(c not in state.channels for c in adding) > budget:
            text = f"this key holds {len(state.channels)} channels on this gateway, at most {budget}"
            sink.send(_error(ErrorCode.SUBSCRIPTION_LIMIT, text))
            return
        names = {canonical: name for name, canonical in message.channels.items()}
        for canonical in adding:
            if canonical == EVERY_PRICE_CANONICAL:
                problem = None if state.privileged else f"{EVERY_PRICE} is for internal and admin keys"
            elif self.symbols is not None:
                _, exchange, symbol, *_ = canonical.split(":")
                problem = await self.symbols.problem(exchange, symbol)
            else:
                continue
            if problem is not None:
                sink.send(_error(ErrorCode.INVALID_CHANNEL, f"invalid channel {names[canonical]!r}: {problem}"))
                return
        state.hold(adding)  # counted while the join is under way, so the key's other connections see them
        try:
            await self._join(client, message, state)
        finally:
            state.drop(c for c in adding if c not in client.channels)

    async def _join(self, client: Client, message: Subscribe, state: KeyState) -> None:
        hub, sink = self.upstream.hub, client.sink
        answer: asyncio.Future[tuple[Join | ErrorCode | None, str]] = asyncio.get_running_loop().create_future()

        def done(result: Join | ErrorCode | None, text: str) -> None:
            if not answer.done():
                answer.set_result((result, text))

        hub.subscribe(client, message.channels, message.resume, done)
        try:
            result, text = await asyncio.wait_for(answer, SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            if client.join is not None:
                hub.refuse(client.join)
            sink.send(_error(ErrorCode.INVALID_MESSAGE, "the stream service did not answer in time; retry"))
            return
        if isinstance(result, ErrorCode):
            sink.send(_error(result, text))
        elif result is not None and result.subscribed:
            await self._catch_up(client, result)
        elif result is not None:  # carried, with a replay to fetch first
            try:
                async with asyncio.timeout(RESUME_WAIT_S):
                    await state.resumes.acquire()
            except TimeoutError:
                hub.refuse(result)
                sink.send(_error(ErrorCode.RATE_LIMITED, "this key's other resumes are still replaying; retry"))
                return
            try:
                if await self._replay(client, result):
                    await self._catch_up(client, result)
            finally:
                state.resumes.release()

    async def _replay(self, client: Client, join: Join) -> bool:
        """Fetch the join's replay on a stream of its own and finish the join; False (the client told, the join
        undone) if the core refused it or did not answer in time. Cancelled (the client left), the call is
        cancelled and the core stops reading history for it."""
        hub = self.upstream.hub
        call = self.upstream.replay_call()
        outcome: bool | tuple[ErrorCode, str] = False
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await call.write(hub.replay_request(join))
                async for response in call:
                    outcome = hub.on_replay(join, response)
                    if outcome is not False:
                        break
        except (aio.AioRpcError, aio.UsageError, TimeoutError) as exc:
            logger.info("a resume replay failed (%s)", type(exc).__name__)
        finally:
            call.cancel()
        if outcome is True:
            hub.finish(join)
            return join.subscribed
        hub.refuse(join)
        code, text = outcome or (ErrorCode.INVALID_MESSAGE, "the stream service did not answer in time; retry")
        client.sink.send(_error(code, text))
        return False

    async def _catch_up(self, client: Client, join: Join) -> None:
        """Write the join's backlog at the pace the client reads it, then put it on the live routes."""
        sink = client.sink
        assert isinstance(sink, ClientSink)
        behind_since: float | None = None
        while join.backlog and not sink.closing and not sink.gone:
            if sink.buffered > self.rule.skip_bytes:
                now = time.monotonic()
                behind_since = behind_since or now
                if now - behind_since > self.rule.grace_s:
                    sink.fail(CloseCode.TOO_SLOW, "too slow to catch up")
                    return
                await asyncio.sleep(CATCH_UP_POLL_S)
                continue
            behind_since = None
            while join.backlog and sink.buffered <= self.rule.skip_bytes:
                sink.send(join.backlog.popleft())
        if not sink.closing:
            self.upstream.hub.attach(client)

    # --- history replays (issue 21) ---------------------------------------------------------

    async def _start_replay(self, client: Client, message: Replay, state: KeyState, replay: list[ReplayRun]) -> None:
        """Check a replay request (one at a time per connection, the range, the key's replays, the channel
        budgets, the symbol) and play it in a task of its own; the connection goes on reading frames."""
        sink = client.sink
        if replay and replay[0].task is not None and not replay[0].task.done():
            sink.send(_error(ErrorCode.INVALID_MESSAGE, "a replay is already playing on this connection; stop_replay"))
            return
        replay.clear()
        if self._replay_stub is None:
            sink.send(_error(ErrorCode.INVALID_MESSAGE, "this gateway does not offer replays"))
            return
        longest = self.settings.replay_max_hours
        if message.end_ms - message.start_ms > longest * 3_600_000:
            sink.send(_error(ErrorCode.INVALID_MESSAGE, f"a replay covers at most {longest} hours"))
            return
        if state.replays >= self.settings.replays_per_key:
            text = f"this key plays its maximum of {self.settings.replays_per_key} replays on this gateway"
            sink.send(_error(ErrorCode.RATE_LIMITED, text))
            return
        canonical = message.canonical
        adding = [] if canonical in client.channels else [canonical]
        if len(client.channels) + len(adding) > protocol.MAX_SUBSCRIPTIONS_PER_CONNECTION:
            limit = protocol.MAX_SUBSCRIPTIONS_PER_CONNECTION
            sink.send(_error(ErrorCode.SUBSCRIPTION_LIMIT, f"a connection holds at most {limit} subscriptions"))
            return
        budget = self.settings.channels_per_key
        if budget and adding and canonical not in state.channels and len(state.channels) + 1 > budget:
            text = f"this key holds {len(state.channels)} channels on this gateway, at most {budget}"
            sink.send(_error(ErrorCode.SUBSCRIPTION_LIMIT, text))
            return
        if self.symbols is not None:
            _, exchange, symbol, *_ = canonical.split(":")
            problem = await self.symbols.problem(exchange, symbol)
            if problem is not None:
                sink.send(_error(ErrorCode.INVALID_CHANNEL, f"invalid channel {message.name!r}: {problem}"))
                return
        run = ReplayRun(message)
        state.replays += 1
        state.hold([canonical])  # the replayed channel counts as held while it plays
        run.task = asyncio.create_task(self._play(client, run, state), name="ws-replay")
        replay.append(run)

    async def _stop_replay(self, client: Client, replay: list[ReplayRun]) -> None:
        run = replay[0] if replay else None
        if run is None or run.task is None or run.task.done():
            client.sink.send(_error(ErrorCode.INVALID_MESSAGE, "no replay is playing on this connection"))
            return
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.task
        stopped = protocol.replay_state_message("replay_stopped", run.request.name, count=run.sent)
        client.sink.send(protocol.text_frame(stopped))

    async def _play(self, client: Client, run: ReplayRun, state: KeyState) -> None:
        """Read the range from the core (its own call, chunk by chunk) and write each event at its original
        time divided by the speed, or at once for ``"max"``, never faster than the client reads (the buffer
        above the slow-client threshold for longer than its grace closes with 4009, like live events)."""
        sink = client.sink
        assert isinstance(sink, ClientSink) and self._replay_stub is not None
        message = run.request
        request = replay_service_pb2.ReplayRequest(channel=message.canonical)
        request.start_time.FromMilliseconds(message.start_ms)
        request.end_time.FromMilliseconds(message.end_ms)
        call = self._replay_stub.Replay(request, metadata=self._replay_metadata)
        loop = asyncio.get_running_loop()
        started = dict(start=message.start_ms, end=message.end_ms, speed=message.speed or "max")
        sink.send(protocol.text_frame(protocol.replay_state_message("replay_started", message.name, **started)))
        first_ms: int | None = None
        began = loop.time()
        try:
            async for response in call:
                frames: list[bytes] = []
                for event in response.events:
                    kind = event.WhichOneof("payload")
                    if kind is None:
                        continue
                    payload = getattr(event, kind)
                    if message.speed is not None:
                        at_ms = payload.timestamp.ToMilliseconds()
                        first_ms = at_ms if first_ms is None else first_ms
                        delay = began + (at_ms - first_ms) / 1000 / message.speed - loop.time()
                        if delay > 0:
                            await self._write(sink, frames, run)
                            await asyncio.sleep(delay)
                    data = orjson.dumps(to_public(payload))
                    frames.append(protocol.text_frame(protocol.replay_event_message(kind, message.name, data)))
                if not await self._write(sink, frames, run):
                    return
            done = protocol.replay_state_message("replay_done", message.name, count=run.sent)
            sink.send(protocol.text_frame(done))
        except aio.AioRpcError as exc:
            logger.info("a history replay failed (%s)", exc.code().name)
            text = exc.details() if exc.code() is grpc.StatusCode.INVALID_ARGUMENT else "history is unavailable now"
            stopped = protocol.replay_state_message("replay_stopped", message.name, count=run.sent, error=text)
            sink.send(protocol.text_frame(stopped))
        except Exception:  # the client is told, never left waiting for a replay_done that cannot come
            logger.exception("a history replay failed")
            text = "the replay failed"
            stopped = protocol.replay_state_message("replay_stopped", message.name, count=run.sent, error=text)
            sink.send(protocol.text_frame(stopped))
        finally:
            call.cancel()
            state.replays -= 1
            state.drop([message.canonical])

    async def _write(self, sink: ClientSink, frames: list[bytes], run: ReplayRun) -> bool:
        """Send ``frames`` (emptied) once the client's buffer has room; False if it closed or fell too far
        behind."""
        behind_since: float | None = None
        while sink.buffered > self.rule.skip_bytes and not sink.closing and not sink.gone:
            now = time.monotonic()
            behind_since = behind_since or now
            if now - behind_since > self.rule.grace_s:
                sink.fail(CloseCode.TOO_SLOW, "too slow to read the replay")
                return False
            await asyncio.sleep(CATCH_UP_POLL_S)
        if sink.closing or sink.gone:
            return False
        if frames:
            sink.send(b"".join(frames))
            run.sent += len(frames)
            frames.clear()
        await asyncio.sleep(0)  # a replay at "max" lets the loop serve everyone else between chunks
        return True


async def _first_message_key(ws: Any) -> str:
    """Seed 004's authentication by message: the key of a first frame ``{"action":"auth","key":"<KEY>"}`` that
    arrives within :data:`AUTH_TIMEOUT_S`; "" for anything else (then 4001)."""
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            frame = await ws.recv()
            while frame is None and ws.ws_proto.state is not State.CLOSED:
                frame = await ws.recv()
    except (TimeoutError, ConnectionClosed, WebsocketClosed):
        return ""
    try:
        message = orjson.loads(frame) if isinstance(frame, str) else None
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(message, dict) or message.get("action") != "auth" or set(message) != {"action", "key"}:
        return ""
    key = message["key"]
    return key.strip() if isinstance(key, str) else ""


def _error(code: ErrorCode, message: str) -> bytes:
    return protocol.text_frame(protocol.error_message(code, message))


async def _close(ws: Any, code: int, reason: str) -> None:
    with contextlib.suppress(ConnectionClosed, WebsocketClosed, TimeoutError):
        async with asyncio.timeout(2.0):
            await ws.close(code=code, reason=reason)


def _check_pongs(pinged: list[ClientSink], payload: bytes) -> None:
    """A heartbeat round's ping timeout: fail (1011) every client that did not answer its ping."""
    for sink in pinged:
        sink.check_pong(payload)


def _drop_unused_buffers(ws: Any) -> None:
    """Two of Sanic's per-connection objects that a websocket never uses once upgraded (sanic==25.12.1), about
    1.5 KiB: its frame assembler's ``completed_queue`` (created, never read or written) and the HTTP protocol's
    ``_data_received`` event (request bodies only; its ``data_received`` skips it when None)."""
    ws.assembler.completed_queue = None
    ws.io_proto._data_received = None


def _trim_after_handshake(request: Request[Any, Any], ws: Any) -> None:
    """What an authenticated connection no longer needs, about 4 KiB of the 22.5 it held (sanic==25.12.1):

    - The handshake request's headers, raw head and parsed query: read once for the key, the subprotocol
      and the traceparent, before this. Sanic keeps the request object for the handler's life (its tasks
      hold it) but reads none of these after the upgrade; its access log uses the URL it saved.
    - The waiter deques of three ``asyncio.Event``: the frame assembler's ``message_complete`` and
      ``message_fetched`` and the protocol's ``_can_write``, each an empty ``collections.deque`` of 760
      bytes that rarely holds more than one waiter. ``Event`` only appends to, removes from and iterates
      ``_waiters``, which a list does as well (64 bytes). A waiter already there (a frame that arrived
      while the key was checked waits for its fetch) is carried over.
    """
    request.headers = Header()
    request.head = b""
    request.parsed_args.clear()
    request.parsed_not_grouped_args.clear()
    assembler = ws.assembler
    for event in (assembler.message_complete, assembler.message_fetched, ws.io_proto._can_write):
        event._waiters = list(event._waiters)
