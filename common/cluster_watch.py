"""What a process says, and /health reports, when nodes of its Redis Cluster are down.

A process learns the cluster from the node ``PERSEUS_REDIS_URL`` names; that node must answer at startup.
Any *other* node may be down then, or go down later: a master whose replica has not taken over yet, a master
and its replica both down (their slots are then uncovered; with ``cluster-require-full-coverage yes``, the
default, every node then answers ``CLUSTERDOWN`` to every keyed command, while ``PING`` still answers), or a
replica. None of that stops a process from starting: everything that does not need Redis is served (reads fall
back to PostgreSQL), and the clients reconnect by themselves when the node is back.

:class:`ClusterWatch` asks one live node ``CLUSTER INFO`` (and ``CLUSTER NODES`` to name what is wrong) every
:data:`POLL_S`, and logs one line per change of what it sees, never one per failed command: e.g.
``Redis Cluster: slots 5461-10921 are not covered (node 127.0.0.1:7001 down?); the cluster refuses every
command until they are; retrying``, then ``Redis Cluster: every slot is served again``. A node that serves no
slot (a replica, or a master whose replica took over) is a warning only: ``Redis Cluster: cannot connect to
node 127.0.0.1:7004 (it serves no slots: every slot is served); retrying``, then ``... every node answers
again``. :meth:`ping` is the Redis probe of ``GetStatus`` and ``/health``: a plain ``PING`` would answer while
the cluster refuses every keyed command.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.exceptions import RedisError

from common import resp
from common.redis_clients import RedisClient, url_params
from common.resp_cluster import ClusterUnavailable

__all__ = ["ClusterWatch", "WatchedPipeline", "describe"]

logger = logging.getLogger(__name__)

POLL_S = 1.0
ASK_TIMEOUT_S = 1.0
DOWN_FLAGS = frozenset({"fail", "fail?"})
# How long the cluster must have refused every command before the shared pipeline stops retrying each call for
# its 2 s (ClusterPipeline's bound) and fails it at once: longer than a failover's moment of cluster_state:fail
FAIL_FAST_AFTER_S = 5.0


class ClusterWatch:
    """The state of the Redis Cluster at ``url``; ``problem`` is None while every slot is served.

    It asks over connections of its own (one per node asked, plain redis-py clients with the URL's credentials
    and TLS): a command of ``client`` that meets a dead node makes redis-py re-read the slot table before its
    next command, which the watch must not cause every second. ``client`` only answers :meth:`ping`.
    """

    def __init__(self, url: str, client: RedisClient, *, poll_s: float = POLL_S) -> None:
        self._params, self._tls = url_params(url)
        self._params["db"] = 0  # a cluster node has database 0 only
        self._client = client
        self._poll_s = poll_s
        self._order: list[str] = [f"{self._params.pop('host', '127.0.0.1')}:{self._params.pop('port', 6379)}"]
        self._nodes: dict[str, aioredis.Redis] = {}
        self.problem: str | None = None  # a slot is not served: /health says Redis is down
        self.warning: str | None = None  # a node is down, every slot still served (a replica, most often)
        self._logged: tuple[str | None, str | None] = (None, None)
        self._refusing_since: float | None = None  # loop time the cluster was first seen refusing every command

    def refusing_for_s(self) -> float:
        """How long the cluster has refused every command (``cluster_state`` not ``ok``, or no node answers)."""
        if self._refusing_since is None:
            return 0.0
        return asyncio.get_running_loop().time() - self._refusing_since

    async def check(self) -> None:
        """Ask the cluster once and log the line for what changed since the last check (nothing if nothing)."""
        try:
            self.problem, self.warning, refusing = await self._ask()
        except (RedisError, OSError, TimeoutError) as exc:
            self.problem, self.warning = f"Redis Cluster: no node answers ({type(exc).__name__}); retrying", None
            refusing = True
        if not refusing:
            self._refusing_since = None
        elif self._refusing_since is None:
            self._refusing_since = asyncio.get_running_loop().time()
        seen = (self.problem, self.warning)
        if seen == self._logged:
            return
        had_problem, had_any = self._logged[0] is not None, self._logged != (None, None)
        self._logged = seen
        if self.problem is not None:
            logger.warning(self.problem)
            return
        if had_problem:
            logger.info("Redis Cluster: every slot is served again")
        if self.warning is not None:
            logger.warning(self.warning)
        elif had_any:
            logger.info("Redis Cluster: every node answers again")

    async def run(self) -> None:
        """Check every ``poll_s`` until cancelled (a supervised task of the process); then close its connections."""
        try:
            while True:
                await self.check()
                await asyncio.sleep(self._poll_s)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.aclose(close_connection_pool=True)

    async def ping(self) -> None:
        """The Redis probe: ``ConnectionError`` naming the problem while a slot is not served, else ``PING``."""
        if self.problem is not None:
            raise ConnectionError(self.problem)
        await self._client.ping()

    async def _ask(self) -> tuple[str | None, str | None, bool]:
        last: BaseException | None = None
        for address in list(self._order):  # the node that answered last first; a dead one is skipped
            try:
                async with asyncio.timeout(ASK_TIMEOUT_S * 2):
                    info = await self._node(address).cluster("INFO")
                    nodes = await self._node(address).cluster("NODES")
            except (RedisError, OSError, TimeoutError) as exc:
                last = exc
                continue
            known = [a.split("@")[0] for a in nodes]
            self._order = [address, *(a for a in dict.fromkeys([*self._order, *known]) if a != address)]
            parsed = _parsed_info(info)
            return (*describe(parsed, nodes), str(parsed.get("cluster_state", "ok")) != "ok")
        raise last if last is not None else ConnectionError("no node known")

    def _node(self, address: str) -> aioredis.Redis:
        client = self._nodes.get(address)
        if client is None:
            host, _, port = address.rpartition(":")
            connection: dict[str, Any] = {"connection_class": SSLConnection} if self._tls else {}
            pool = aioredis.ConnectionPool(
                host=host,
                port=int(port),
                socket_timeout=ASK_TIMEOUT_S,
                socket_connect_timeout=ASK_TIMEOUT_S,
                max_connections=2,
                **connection,
                **self._params,
            )
            client = self._nodes[address] = aioredis.Redis(connection_pool=pool)
        return client


class WatchedPipeline:
    """The core's shared :class:`~common.resp.Pipeline`, failing each call at once (``ClusterUnavailable``
    naming the problem) once the cluster has refused every command for :data:`FAIL_FAST_AFTER_S`.

    ``ClusterPipeline`` retries ``CLUSTERDOWN`` for up to 2 s per call, which is right through a failover but,
    while slots stay uncovered, makes every read that would fall back to PostgreSQL (latest prices) wait out
    its caller's deadline: a REST read answered 503 after 2 s instead of the PostgreSQL row.
    """

    def __init__(self, pipeline: resp.Pipeline, watch: ClusterWatch) -> None:
        self._pipeline = pipeline
        self._watch = watch

    async def call(self, *commands: resp.Command) -> list[Any]:
        if self._watch.refusing_for_s() > FAIL_FAST_AFTER_S:
            raise ClusterUnavailable(self._watch.problem or "the Redis Cluster refuses every command")
        return await self._pipeline.call(*commands)

    def register_script(self, source: str) -> str:
        return self._pipeline.register_script(source)

    def placement(self, key: str | bytes) -> object:
        return self._pipeline.placement(key)

    async def aclose(self) -> None:
        await self._pipeline.aclose()


def _parsed_info(info: Any) -> dict[str, Any]:
    """``CLUSTER INFO`` as a dict: redis-py parses it for the cluster client, not always for a plain one."""
    if isinstance(info, dict):
        return info
    text = info.decode() if isinstance(info, bytes) else str(info)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def describe(info: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> tuple[str | None, str | None]:
    """(problem, warning) from one node's ``CLUSTER INFO`` and ``CLUSTER NODES`` (as redis-py parses them)."""
    owned: list[tuple[int, int]] = []
    down_masters: list[tuple[str, list[tuple[int, int]]]] = []
    down_others: list[str] = []
    for address, node in nodes.items():
        flags = set(str(node.get("flags", "")).split(","))
        slots = [(int(a), int(b)) for a, b in node.get("slots", [])]
        owned.extend(slots)
        if flags & DOWN_FLAGS or (not node.get("connected", True) and "myself" not in flags):
            if slots:
                down_masters.append((address, slots))
            else:  # a replica, or a master whose replica took over: nothing to serve until it is back
                down_others.append(address)
    unassigned = _gaps(owned)
    refuses_all = str(info.get("cluster_state", "ok")) != "ok"
    parts: list[str] = []
    for address, slots in down_masters:
        parts.append(f"slots {_ranges(slots)} are not covered (node {address} down?)")
    if unassigned:
        parts.append(f"slots {_ranges(unassigned)} are assigned to no node")
    if parts or refuses_all:
        consequence = (
            "the cluster refuses every command until they are"
            if refuses_all
            else "commands on them fail until a replica takes over or the node is back"
        )
        what = "; ".join(parts) if parts else "cluster_state is " + str(info.get("cluster_state"))
        return f"Redis Cluster: {what}; {consequence}; retrying", None
    if down_others:
        listed = ", ".join(sorted(down_others))
        return (
            None,
            f"Redis Cluster: cannot connect to node {listed} (it serves no slots: every slot is served); retrying",
        )
    return None, None


def _gaps(owned: list[tuple[int, int]]) -> list[tuple[int, int]]:
    gaps, nxt = [], 0
    for start, end in sorted(owned):
        if start > nxt:
            gaps.append((nxt, start - 1))
        nxt = max(nxt, end + 1)
    if nxt <= 16383:
        gaps.append((nxt, 16383))
    return gaps


def _ranges(slots: list[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in sorted(slots))
