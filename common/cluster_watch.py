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

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

__all__ = ["ClusterWatch", "describe"]

logger = logging.getLogger(__name__)

POLL_S = 1.0
ASK_TIMEOUT_S = 1.0
DOWN_FLAGS = frozenset({"fail", "fail?"})


class ClusterWatch:
    """The state of a Redis Cluster as seen through ``client``; ``problem`` is None while every slot is served."""

    def __init__(self, client: RedisCluster, *, poll_s: float = POLL_S) -> None:
        self._client = client
        self._poll_s = poll_s
        self.problem: str | None = None  # a slot is not served: /health says Redis is down
        self.warning: str | None = None  # a node is down, every slot still served (a replica, most often)
        self._logged: tuple[str | None, str | None] = (None, None)

    async def check(self) -> None:
        """Ask the cluster once and log the line for what changed since the last check (nothing if nothing)."""
        try:
            self.problem, self.warning = await self._ask()
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            self.problem, self.warning = f"Redis Cluster: no node answers ({type(exc).__name__}); retrying", None
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
        """Check every ``poll_s`` until cancelled (a supervised task of the process)."""
        while True:
            await self.check()
            await asyncio.sleep(self._poll_s)

    async def ping(self) -> None:
        """The Redis probe: ``ConnectionError`` naming the problem while a slot is not served, else ``PING``."""
        if self.problem is not None:
            raise ConnectionError(self.problem)
        await self._client.ping()

    async def _ask(self) -> tuple[str | None, str | None]:
        if not self._client.get_nodes():
            await self._client.initialize()  # a client nothing has used yet knows no node
        last: BaseException | None = None
        for node in self._client.get_nodes():  # the first that answers; a dead one is skipped
            try:
                async with asyncio.timeout(ASK_TIMEOUT_S):
                    info = await self._client.execute_command("CLUSTER INFO", target_nodes=node)
                    nodes = await self._client.execute_command("CLUSTER NODES", target_nodes=node)
            except (RedisError, OSError, TimeoutError) as exc:
                last = exc
                continue
            return describe(info, nodes)
        raise last if last is not None else ConnectionError("no node known")


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
