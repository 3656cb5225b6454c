"""The core's Redis client: redis-py's asyncio client, packing commands with hiredis.

redis-py's asyncio connection packs every command in Python; its sync
connection already uses ``hiredis.pack_command`` when hiredis is installed.
The core's hot paths send hundreds of commands per ingest batch, and packing
them in C cuts a large share of the core's CPU per feed (measured with
``make bench-ingest``). Everything else is redis-py unchanged.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import DataError

CONNECT_TIMEOUT_S = 3.0


class HiredisPackingConnection(aioredis.Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args))]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


def redis_client(url: str) -> aioredis.Redis:
    """A client for ``url`` (TCP URLs use the hiredis packer; ``unix://`` keeps redis-py's own)."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, health_check_interval=30)
    if client.connection_pool.connection_class is aioredis.Connection:
        client.connection_pool.connection_class = HiredisPackingConnection
    return client
