"""The core's Redis client: redis-py's asyncio client, packing commands with hiredis.

redis-py's asyncio connection packs every command in Python; its sync
connection already uses ``hiredis.pack_command`` when hiredis is installed.
The core's hot paths send hundreds of commands per ingest batch, and packing
them in C cuts a large share of the core's CPU per feed (measured with
``make bench-ingest``). Everything else is redis-py unchanged.

Every command has a socket timeout (:data:`COMMAND_TIMEOUT_S`): redis-py's
default is 5 s, so a frozen Redis (SIGSTOP, a stuck host: the TCP connection
stays up, no reply comes) held each command 5 s and a read past its caller's
deadline. The core sends no blocking commands (``BLPOP``, ``XREAD BLOCK``) on
this client, and the stream hub's subscribed connection is a raw one of its
own (``common/resp.py``), so no command of ours legitimately waits that long.
A Redis that is down (refused) fails at once; redis-py does not retry it.
"""

from __future__ import annotations

from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError, DataError, TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 2.0
# What "Redis is down or frozen" looks like from redis-py (refused, reset, timed out: BusyLoadingError is a
# ConnectionError too) and from an ``asyncio.timeout`` of our own. An error reply (ResponseError) is not here:
# that is a bug, not an outage.
REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


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


def redis_client(url: str) -> aioredis.Redis:
    """A client for ``url`` (TCP URLs use the hiredis packer; ``unix://`` keeps redis-py's own)."""
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=COMMAND_TIMEOUT_S, health_check_interval=30
    )
    if client.connection_pool.connection_class is aioredis.Connection:
        client.connection_pool.connection_class = HiredisPackingConnection
    return client


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
