"""One gateway process's streaming runtime: the core stream, the hub, and each client connection's life.

:class:`WsRuntime` is built with the gateway's services when the server
starts (:meth:`WsRuntime.build`: the hub, the core stream, the connection
counter and its Redis pool, wired once) and started once the server runs.
:meth:`WsRuntime.serve` is one
connection, in order: the key (``?apiKey=``, ``X-API-Key``, or for browsers a
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
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any

from redis.exceptions import RedisClusterException, RedisError
from sanic import Request
from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from common import runtime as gc_policy
from common.redis_clients import RedisClient, redis_py
from common.supervise import TaskSupervisor
from gateways.common.auth import KeyCache
from gateways.common.errors import ApiError, Unauthorized
from gateways.common.services import GatewayServices
from gateways.ws import protocol, subprotocols
from gateways.ws.connections import ConnectionCounter
from gateways.ws.hub import Client, Hub, Join
from gateways.ws.limits import MessageRateLimit, SlowClientRule, Verdict
from gateways.ws.protocol import CloseCode, ErrorCode, Subscribe, Unsubscribe
from gateways.ws.settings import WsSettings
from gateways.ws.sink import ClientSink
from gateways.ws.upstream import Outbox, Upstream

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
API_KEY_HEADER = "x-api-key"


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
    ) -> None:
        self.settings = settings
        self.rule = SlowClientRule(grace_s=settings.slow_client_s)
        self.upstream = upstream
        self.counter = counter
        self._redis = redis  # the counter's own pool: closed by stop()
        self._keys = keys
        self._tasks = tasks
        self.sinks: set[ClientSink] = set()
        self._holders: dict[str, set[ClientSink]] = {}  # presented key → its open connections
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
        upstream = Upstream(services.core.streams, Hub(outbox.put), outbox)
        redis = redis_py(
            redis_url,
            services.redis_mode,
            socket_timeout=REDIS_WAIT_S,
            socket_connect_timeout=REDIS_WAIT_S,
            max_connections=REDIS_CONNECTIONS,
            blocking=True,
        )
        counter = ConnectionCounter(redis, prefix=redis_prefix, lease_s=settings.lease_s)
        return cls(settings, keys=services.keys, tasks=services.tasks, upstream=upstream, counter=counter, redis=redis)

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
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            frame = protocol.text_frame(protocol.heartbeat_message(now))
            sinks = list(self.sinks)
            for start in range(0, len(sinks), HEARTBEAT_CHUNK):  # let events through between chunks
                for sink in sinks[start : start + HEARTBEAT_CHUNK]:
                    sink.send(frame)
                await asyncio.sleep(0)

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
        """Freeze new long-lived objects; reclaim frozen garbage once as many clients left as are connected."""
        while True:
            await asyncio.sleep(GC_CHECK_S)
            if self._closed_since_full > max(1_000, len(self.sinks)):
                self._closed_since_full = self._opened_since_freeze = 0
                gc_policy.collect_frozen()
            elif self._opened_since_freeze >= GC_REFREEZE_AFTER:
                self._opened_since_freeze = 0
                gc_policy.refreeze()

    # --- one connection -----------------------------------------------------------------------

    async def serve(self, request: Request[Any, Any], ws: Any) -> None:
        key = (request.args.get(API_KEY_PARAM) or request.headers.get(API_KEY_HEADER) or "").strip()
        in_subprotocol = subprotocols.keys_offered(request)
        if len(in_subprotocol) > 1 or (key and in_subprotocol and in_subprotocol != {key}):
            await _close(ws, CloseCode.INVALID_KEY, "two different API keys were sent; send one")
            return
        key = key or next(iter(in_subprotocol), "")
        if not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
            await _close(
                ws, CloseCode.INVALID_KEY, "a valid API key is required: ?apiKey=, X-API-Key or subprotocol key.<KEY>"
            )
            return
        try:
            api_key = await self._keys.authenticate(key)
        except Unauthorized:
            await _close(ws, CloseCode.INVALID_KEY, "invalid or revoked API key")
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
        self._opened_since_freeze += 1
        try:
            await self._read(ws, client)
        finally:
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

    async def _read(self, ws: Any, client: Client) -> None:
        sink = client.sink
        assert isinstance(sink, ClientSink)
        rate = MessageRateLimit(self.settings.messages_per_s, self.settings.message_burst)
        while not sink.closing:
            try:
                frame = await ws.recv()
            except (ConnectionClosed, WebsocketClosed):
                return
            if frame is None:
                if ws.ws_proto.state is State.CLOSED:
                    return
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
                await self._subscribe(client, message)
            elif isinstance(message, Unsubscribe):
                self.upstream.hub.unsubscribe(client, message.channels)
            else:
                sink.send(_error(message.code, message.message))

    async def _subscribe(self, client: Client, message: Subscribe) -> None:
        hub, sink = self.upstream.hub, client.sink
        adding = {c for c in message.channels.values() if c not in client.channels}
        if len(client.channels) + len(adding) > protocol.MAX_SUBSCRIPTIONS_PER_CONNECTION:
            limit = protocol.MAX_SUBSCRIPTIONS_PER_CONNECTION
            sink.send(_error(ErrorCode.SUBSCRIPTION_LIMIT, f"a connection holds at most {limit} subscriptions"))
            return
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
        elif result is not None:
            await self._catch_up(client, result)

    async def _catch_up(self, client: Client, join: Join) -> None:
        """Write the join's backlog at the pace the client reads it, then put it on the live routes."""
        sink = client.sink
        assert isinstance(sink, ClientSink)
        behind_since: float | None = None
        while join.backlog and not sink.closing:
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


def _error(code: ErrorCode, message: str) -> bytes:
    return protocol.text_frame(protocol.error_message(code, message))


async def _close(ws: Any, code: int, reason: str) -> None:
    with contextlib.suppress(ConnectionClosed, WebsocketClosed, TimeoutError):
        async with asyncio.timeout(2.0):
            await ws.close(code=code, reason=reason)
