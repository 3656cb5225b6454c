"""The core's Redis clients: redis-py's asyncio client for single commands, the raw RESP pipeline for the rest.

The mode (one server or a Redis Cluster) is asked of the server once at startup
(:func:`common.redis_clients.open_mode`); :func:`redis_client` then builds
``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster`` (:data:`RedisClient`)
for single commands and single ``Script`` calls, which both route alike, and
:func:`common.redis_clients.pipeline` the one :class:`~common.resp.Pipeline`
the adapters share for everything they send in bulk (see :func:`call`).

redis-py's asyncio connection packs every command in Python; its sync
connection already uses ``hiredis.pack_command`` when hiredis is installed.
:class:`HiredisPackingConnection` packs them in C (measured with
``make bench-ingest`` when the hot paths still went through redis-py).

Every command has a socket timeout (:data:`COMMAND_TIMEOUT_S`): redis-py's
default is 5 s, so a frozen Redis (SIGSTOP, a stuck host: the TCP connection
stays up, no reply comes) held each command 5 s and a read past its caller's
deadline. The core sends no blocking commands (``BLPOP``, ``XREAD BLOCK``) on
this client, and the stream hub's subscribed connection is a raw one of its
own (``common/resp.py``), so no command of ours legitimately waits that long.
A Redis that is down (refused) fails at once; redis-py does not retry it.
The pipeline has no socket timeout: :func:`call` bounds each wait the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import (
    ClusterError,
    ConnectionError as RedisConnectionError,
    DataError,
    RedisClusterException,
    RedisError,
    TimeoutError as RedisTimeoutError,
)

from common import resp, telemetry
from common.redis_clients import RedisClient, redis_py
from common.redis_mode import RedisMode
from core.domain.errors import StorageUnavailable

__all__ = [
    "COMMAND_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "REDIS_DOWN_ERRORS",
    "REDIS_ERRORS",
    "HiredisPackingConnection",
    "RedisClient",
    "call",
    "call_or_unavailable",
    "first_error",
    "redis_client",
]

CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 2.0
# What "Redis is down or frozen" looks like from redis-py (refused, reset, timed out: BusyLoadingError is a
# ConnectionError too), from its cluster client (CLUSTERDOWN, no node reachable, a slot nobody serves), from the
# raw pipeline (ConnectionError, ClusterUnavailable: OSErrors) and from an ``asyncio.timeout`` of our own. An
# error reply (ResponseError, a ReplyError value) is not here: that is a bug, not an outage.
REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    RedisClusterException,
    OSError,
    TimeoutError,
)
# Any failure of a Redis call, error replies included: what an adapter turns into ``StorageUnavailable``.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)


class HiredisPackingConnection(aioredis.Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        # hiredis's stub types the command as a one-element tuple; it packs any length.
        command: tuple[Any, ...] = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
        try:
            return [hiredis.pack_command(command)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


def redis_client(url: str, mode: RedisMode) -> RedisClient:
    """A client for ``url`` in ``mode`` (TCP URLs use the hiredis packer; ``unix://`` and TLS keep redis-py's)."""
    return redis_py(
        url,
        mode,
        socket_timeout=COMMAND_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=30,
        connection_class=HiredisPackingConnection,
    )


async def call(pipeline: resp.Pipeline, *commands: resp.Command, timeout_s: float = COMMAND_TIMEOUT_S) -> list[Any]:
    """The replies to ``commands`` through the shared pipeline, within ``timeout_s`` (``TimeoutError``).

    Why the adapters send their bulk through a :class:`~common.resp.Pipeline` and not a redis-py pipeline:
    redis-py's cluster pipeline refuses ``EVALSHA``, and the publish, latest-price and candle-window writes
    are pipelines of script calls. The plain reads (stream sequences and history, latest prices, indicator
    states) would work on either, but one mechanism for both modes is simpler to reason about and to test,
    and it is the faster one: the calls of one loop turn share a write, replies are parsed by hiredis, and a
    registered script is sent by SHA alone (redis-py's pipeline asks ``SCRIPT EXISTS`` first, a round trip
    per pipeline). Error replies come back as values: see :func:`first_error`.

    With traces on (:mod:`common.telemetry`) each call is one client span, named after its first command as
    redis-py's instrumentation names its own (``EVALSHA``, ``MGET``).
    """
    if telemetry.enabled:
        return await _traced_call(pipeline, commands, timeout_s)
    async with asyncio.timeout(timeout_s):
        return await pipeline.call(*commands)


async def _traced_call(pipeline: resp.Pipeline, commands: tuple[resp.Command, ...], timeout_s: float) -> list[Any]:
    from opentelemetry.trace import SpanKind

    first = commands[0][0] if commands else "PIPELINE"
    name = first.decode() if isinstance(first, bytes) else str(first)
    attributes: dict[str, str | int] = {
        "db.system.name": "redis",
        "db.operation.name": name,
        "db.operation.batch.size": len(commands),
    }
    with telemetry.tracer().start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
        async with asyncio.timeout(timeout_s):
            return await pipeline.call(*commands)


async def call_or_unavailable(pipeline: resp.Pipeline, commands: list[resp.Command], what: str) -> list[Any]:
    """:func:`call`, every failure raised as ``StorageUnavailable("redis", "<what> (<why>)")``: Redis down or
    frozen, or an error reply among the replies (after all of them came: the other commands did run)."""
    try:
        replies = await call(pipeline, *commands)
    except REDIS_DOWN_ERRORS as exc:
        raise StorageUnavailable("redis", f"{what} ({type(exc).__name__}: {exc})") from exc
    error = first_error(replies)
    if error is not None:
        raise StorageUnavailable("redis", f"{what} (ReplyError: {error})")
    return replies


def first_error(replies: list[Any]) -> resp.ReplyError | None:
    """The first error reply among ``replies`` (``WRONGTYPE``, ``OOM``, a script's error), if any."""
    for reply in replies:
        if isinstance(reply, resp.ReplyError):
            return reply
    return None


# redis-py 8 types a reply for every client at once: ``bytes | str`` (str with decode_responses=True) and
# either RESP version's shape. The clients made above decode nothing and speak RESP2, so their replies are
# bytes; these say so to mypy. Casts, not isinstance checks: a read path pays one call, no check per item.


def reply_bytes(reply: bytes | str | None) -> bytes | None:
    """A bulk string reply (``GET``, ``HGET``, an element of ``MGET``)."""
    return cast("bytes | None", reply)


def reply_members(reply: object) -> list[bytes]:
    """The members of a sorted-set range read without scores."""
    return cast("list[bytes]", reply)


def reply_scored(reply: object) -> list[tuple[bytes, float]]:
    """The ``(member, score)`` pairs of a range read ``withscores=True``."""
    return cast("list[tuple[bytes, float]]", reply)


def reply_entries(reply: object) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The ``(id, fields)`` entries of ``XRANGE``."""
    return cast("list[tuple[bytes, dict[bytes, bytes]]]", reply)
