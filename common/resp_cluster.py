"""Redis Cluster routing for the raw RESP paths: which node owns a key's slot, asked of the cluster itself.

:class:`SlotMap` holds the slot → master table that ``CLUSTER SLOTS`` reports, learned from any node that
answers (the seed the URL names first, then every node seen before), and the connection parameters for each
node: the seed's credentials, TLS and client settings with the node's host and port. It is refreshed at
start, after a ``MOVED`` reply, and when a node stops answering (a failover in progress); the users of the
table (:class:`~common.resp_cluster.ClusterPipeline`, the core's stream hub) decide when.

A cluster whose slots are not all covered is an error with the missing ranges in its message: Perseus never
guesses where a key lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.crc import key_slot

from common import resp

logger = logging.getLogger(__name__)

SLOTS = 16384
REFRESH_TIMEOUT_S = 3.0

__all__ = ["SLOTS", "ClusterUnavailable", "Node", "SlotMap", "slot_of"]


class ClusterUnavailable(ConnectionError):
    """No node answered ``CLUSTER SLOTS``, or the slots they report are not all covered."""


@dataclass(frozen=True, slots=True, order=True)
class Node:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def slot_of(key: bytes | str) -> int:
    """The cluster slot of ``key`` (its hash tag's, when it has one)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


class SlotMap:
    """The slot → master table of one cluster, and the connection parameters of its nodes."""

    def __init__(self, seed_params: Mapping[str, Any], *, tls: bool, client_name: str) -> None:
        self._seed_params = {k: v for k, v in seed_params.items() if k != "db"}  # a cluster has database 0 only
        self.tls = tls
        self._client_name = client_name
        self._seed = Node(str(seed_params.get("host", "127.0.0.1")), int(seed_params.get("port", 6379)))
        self._owners: list[Node] = []  # indexed by slot, empty until the first refresh
        self._known: dict[Node, None] = {self._seed: None}  # every node seen, seed first (ordered set)
        self._refreshing: asyncio.Task[None] | None = None
        self.epoch = 0  # bumped by every refresh that changed an owner

    @property
    def ready(self) -> bool:
        return bool(self._owners)

    def owner(self, slot: int) -> Node:
        """The master serving ``slot`` (:meth:`refresh` must have succeeded once)."""
        return self._owners[slot]

    def owner_of(self, key: bytes | str) -> Node:
        return self._owners[slot_of(key)]

    def masters(self) -> list[Node]:
        return sorted(set(self._owners))

    def params(self, node: Node) -> dict[str, Any]:
        """Connection parameters for ``node``: the seed's, with the node's address."""
        return {**self._seed_params, "host": node.host, "port": node.port}

    def moved(self, slot: int, node: Node) -> None:
        """Record a ``MOVED`` answer at once (a full :meth:`refresh` should follow)."""
        if self._owners and self._owners[slot] != node:
            self._owners[slot] = node
            self._known.setdefault(node, None)
            self.epoch += 1

    async def refresh(self) -> None:
        """Ask the cluster for its slot table; concurrent callers share one attempt (and its error)."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh())
            self._refreshing.add_done_callback(self._refreshed)
        await asyncio.shield(self._refreshing)

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved: the callers got it

    async def _refresh(self) -> None:
        problems: list[str] = []
        for node in list(self._known):
            try:
                reply = await self._ask(node)
            except (OSError, TimeoutError, ConnectionError, hiredis.HiredisError) as exc:
                problems.append(f"{node}: {type(exc).__name__}: {exc}")
                continue
            if isinstance(reply, hiredis.ReplyError):
                problems.append(f"{node}: {reply}")
                continue
            owners = self._table(node, reply)
            if owners != self._owners:
                self.epoch += 1
            self._owners = owners
            return
        raise ClusterUnavailable("no Redis Cluster node answered CLUSTER SLOTS (" + "; ".join(problems) + ")")

    async def _ask(self, node: Node) -> Any:
        async with asyncio.timeout(REFRESH_TIMEOUT_S):
            reader, writer = await resp.open_connection(self.params(node), tls=self.tls, client_name=self._client_name)
            try:
                command: tuple[Any, ...] = ("CLUSTER", "SLOTS")  # hiredis's stub: a one-element tuple
                writer.write(hiredis.pack_command(command))
                return await resp.next_reply(reader, hiredis.Reader())
            finally:
                writer.close()

    def _table(self, asked: Node, reply: Sequence[Any]) -> list[Node]:
        owners: list[Node | None] = [None] * SLOTS
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            # An empty or "?" host means "the address you reached me on" (cluster-preferred-endpoint-type).
            node = Node(host if host and host != "?" else asked.host, int(master[1]))
            self._known.setdefault(node, None)
            for replica in entry[3:]:
                replica_host = replica[0].decode() if isinstance(replica[0], bytes) else str(replica[0])
                self._known.setdefault(Node(replica_host or asked.host, int(replica[1])), None)
            owners[start : end + 1] = [node] * (end - start + 1)
        missing = _ranges([slot for slot, owner in enumerate(owners) if owner is None])
        if missing:
            raise ClusterUnavailable(f"the Redis Cluster does not cover slots {missing} (asked {asked})")
        return [owner for owner in owners if owner is not None]


def _ranges(slots: list[int]) -> str:
    """``0-99, 200`` for the sorted ``slots`` (at most 5 ranges shown)."""
    ranges: list[str] = []
    start = previous = None
    for slot in [*slots, None]:
        if slot is not None and previous is not None and slot == previous + 1:
            previous = slot
            continue
        if start is not None:
            ranges.append(f"{start}-{previous}" if previous != start else str(start))
        start = previous = slot
    shown = ", ".join(ranges[:5])
    return shown + (f" and {len(ranges) - 5} more ranges" if len(ranges) > 5 else "")
