"""Raw RESP connections to Redis: opened with redis-py's parameters, replies parsed by hiredis in C.

Two users: the stream hub (one long-lived subscribed connection, read by one
task) and :class:`BulkPipeline`, for waves of a thousand plain commands.
redis-py's asyncio pipeline reads each reply through several Python calls
(about 18 µs a reply); here a reply costs one ``gets()`` (1,000 ``MGET`` of
six keys: 18-20 ms through redis-py, 4-6 ms here, measured on this machine).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.connection import SSLConnection
from redis.exceptions import ResponseError

CONNECT_TIMEOUT_S = 3.0
BULK_TIMEOUT_S = 5.0
READ_BYTES = 256 * 1024


async def open_connection(
    params: Mapping[str, Any], *, tls: bool, client_name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection set up as redis-py would (``AUTH``, ``CLIENT SETNAME``, ``SELECT``), within
    ``CONNECT_TIMEOUT_S``. ``params`` are redis-py's: ``parse_url`` or a pool's ``connection_kwargs``."""
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        if params.get("path"):
            reader, writer = await asyncio.open_unix_connection(params["path"])
        else:
            context = ssl.create_default_context() if tls else None
            reader, writer = await asyncio.open_connection(params["host"], params["port"], ssl=context)
        try:
            setup: list[tuple[Any, ...]] = []
            if params.get("password") is not None:
                auth = (params["username"], params["password"]) if params.get("username") else (params["password"],)
                setup.append(("AUTH", *auth))
            setup.append(("CLIENT", "SETNAME", client_name))
            if int(params.get("db") or 0):
                setup.append(("SELECT", int(params["db"])))
            for command in setup:
                writer.write(hiredis.pack_command(command))
            parser = hiredis.Reader()
            for _ in setup:
                reply = await next_reply(reader, parser)
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"Redis refused the connection setup of {client_name}: {reply}")
        except BaseException:
            writer.close()
            raise
    return reader, writer


async def next_reply(reader: asyncio.StreamReader, parser: hiredis.Reader) -> Any:
    while (reply := parser.gets()) is False:
        data = await reader.read(READ_BYTES)
        if not data:
            raise ConnectionError("Redis closed the connection")
        parser.feed(data)
    return reply


class BulkPipeline:
    """One connection for pipelines of plain commands (no transactions, no pub/sub), one at a time.

    Opened on first use and again after any failure: a pipeline that fails or
    is cancelled midway leaves replies unread, so its connection is dropped.
    A reply that is a Redis error raises ``ResponseError`` after all replies
    are read; connection problems raise ``ConnectionError``/``OSError`` and a
    pipeline that takes longer than ``BULK_TIMEOUT_S`` ``TimeoutError``.
    """

    def __init__(self, params: Mapping[str, Any], *, tls: bool, client_name: str) -> None:
        self._params = dict(params)
        self._tls = tls
        self._client_name = client_name
        self._lock = asyncio.Lock()
        self._connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    @classmethod
    def beside(cls, client: aioredis.Redis, client_name: str) -> BulkPipeline:
        """A pipeline to the server, database and credentials of ``client``."""
        pool = client.connection_pool
        return cls(
            pool.connection_kwargs, tls=issubclass(pool.connection_class, SSLConnection), client_name=client_name
        )

    async def execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        if not commands:
            return []
        async with self._lock:
            try:
                async with asyncio.timeout(BULK_TIMEOUT_S):
                    if self._connection is None:
                        self._connection = await open_connection(
                            self._params, tls=self._tls, client_name=self._client_name
                        )
                    reader, writer = self._connection
                    writer.write(b"".join([hiredis.pack_command(command) for command in commands]))
                    replies = await _replies(reader, len(commands))
            except BaseException:
                self._drop()
                raise
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise ResponseError(str(reply))
        return replies

    async def aclose(self) -> None:
        async with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection[1].close()
            self._connection = None


async def _replies(reader: asyncio.StreamReader, count: int) -> list[Any]:
    parser = hiredis.Reader()  # a fresh one per pipeline: nothing of an earlier one can be left in it
    replies: list[Any] = []
    gets = parser.gets
    while len(replies) < count:
        data = await reader.read(READ_BYTES)
        if not data:
            raise ConnectionError("Redis closed the connection")
        parser.feed(data)
        while len(replies) < count and (reply := gets()) is not False:
            replies.append(reply)
    return replies
