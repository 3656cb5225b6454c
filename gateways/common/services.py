"""The collaborators of a gateway's handlers, built once when the server starts and closed when it stops.

:class:`GatewayServices` holds what both gateways use: the core client, the API-key cache, the Redis client
(and the mode it was built for) and the supervisor of the gateway's long-lived tasks. Each gateway extends
it with its own (the REST gateway's limiter and caches, the WebSocket gateway's streaming runtime), so a
handler reads one typed object, ``app.ctx.services``, whose fields always exist: nothing is optional,
nothing is asserted.

Why at server start and not when the app is built: the clients belong to the server's event loop, and a
gateway whose core is down must still start (``/health`` reports it), so opening the core client never fails.
Redis is asked once here whether it is a cluster (:func:`common.redis_clients.open_mode`): the runner has
just checked that it answers, and a gateway cannot pick its clients without the answer, so a Redis gone in
between fails the start with :class:`RedisUnreachable` (one line, exit 2, like the runner's own check).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from common.cluster_watch import ClusterWatch
from common.redis_clients import RedisClient, open_mode, redis_py
from common.redis_mode import RedisMode
from common.supervise import TaskSupervisor
from gateways.common.auth import KeyCache
from gateways.common.core_client import CoreClient
from gateways.common.health import REDIS_PING_TIMEOUT_S
from gateways.common.settings import GatewaySettings

logger = logging.getLogger(__name__)

REDIS_CONNECT_TIMEOUT_S = 1.0
REDIS_COMMAND_TIMEOUT_S = 2.0
TASKS_STOP_S = 1.0


class RedisUnreachable(Exception):
    """Redis did not say whether it is a cluster when the gateway started (its message is the line to print)."""


@dataclass(frozen=True, slots=True)
class GatewayServices:
    core: CoreClient
    keys: KeyCache
    redis: RedisClient  # redis-py's client for single commands: Redis or RedisCluster, by redis_mode
    redis_mode: RedisMode
    tasks: TaskSupervisor  # the gateway's long-lived tasks: restarted, and shown by /health when down
    # /health's Redis probe: PING, and on a cluster whether every slot is served (ClusterWatch)
    redis_ping: Callable[[], Awaitable[object]]

    @classmethod
    async def open(cls, settings: GatewaySettings) -> GatewayServices:
        """Connect (lazily: a core that is down now is reported by /health, not fatal; Redis is asked its mode,
        :class:`RedisUnreachable` when it does not answer)."""
        try:
            mode = await open_mode(settings.redis_url)
        except (OSError, RedisError, RedisClusterException) as exc:
            raise RedisUnreachable(f"PERSEUS_REDIS_URL: cannot reach Redis ({type(exc).__name__})") from exc
        redis = redis_py(
            settings.redis_url,
            mode,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_COMMAND_TIMEOUT_S,
            health_check_interval=30,
        )
        try:
            async with asyncio.timeout(REDIS_PING_TIMEOUT_S):
                await redis.ping()
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            logger.warning("Redis is not reachable yet; /health reports it down (%s)", type(exc).__name__)
        tasks = TaskSupervisor()
        redis_ping: Callable[[], Awaitable[object]] = redis.ping
        if isinstance(redis, RedisCluster):  # another node down must not stop the start: said once, and in /health
            watch = ClusterWatch(settings.redis_url, redis)
            await watch.check()  # said before serving; its connections are opened again by run
            await watch.aclose()
            tasks.spawn("redis-cluster-watch", watch.run)
            redis_ping = watch.ping
        core = CoreClient.connect(
            settings.core_addr,
            deadline_s=settings.core_deadline_s,
            keepalive_s=settings.grpc_keepalive_s,
            token=settings.service_token,
            tls=settings.core_tls,
            connections=settings.core_connections,
        )
        keys = KeyCache(core.lookup_key, grace_s=settings.key_grace_s, bad_keys_per_minute=settings.bad_keys_per_minute)
        return cls(core=core, keys=keys, redis=redis, redis_mode=mode, tasks=tasks, redis_ping=redis_ping)

    def shared(self) -> dict[str, Any]:
        """The shared fields by name, for a gateway's subclass built on top of them."""
        return {f.name: getattr(self, f.name) for f in fields(GatewayServices)}

    async def aclose(self) -> None:
        """The tasks first (none may use a client after), then the core client, then Redis."""
        await self.tasks.aclose(timeout_s=TASKS_STOP_S)
        try:
            await self.core.close()
        finally:
            await self.redis.aclose()
