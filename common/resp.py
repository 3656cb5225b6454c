"""Raw RESP connections to Redis: opened with redis-py's parameters, replies parsed by hiredis in C.

Two users: the core's stream hub (one long-lived subscribed connection,
read by one task), and :class:`AutoPipeline` (a :class:`Pipeline`) for many
concurrent calls: the REST gateway's (the rate limiter and the candle probe)
and the core's adapters' (publishes, latest prices, candle windows, stream
history, the indicator waves of a thousand commands). redis-py's asyncio
pipeline reads each reply through several Python calls (about 18 µs a reply);
here a reply costs one ``gets()`` (1,000 ``MGET`` of six keys: 18-20 ms
through redis-py, 4-6 ms here, measured on this machine).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection  # not redis.connection's: the asyncio one is no subclass

CONNECT_TIMEOUT_S = 3.0
READ_BYTES = 256 * 1024


async def open_connection(
    params: Mapping[str, Any], *, tls: bool, client_name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection set up as redis-py would (TLS, ``AUTH`` with the ACL user, ``CLIENT SETNAME``,
    ``SELECT``), within ``CONNECT_TIMEOUT_S``. ``params`` are redis-py's: ``parse_url`` or a pool's
    ``connection_kwargs``, so the ``ssl_*`` parameters of a ``rediss://`` URL apply here as they do to
    redis-py's own connections (:func:`ssl_context`).

    A TLS failure (the server's certificate not signed by a trusted CA or not for this address, a client
    certificate refused or missing) raises ``ConnectionError`` naming the address and the reason.
    """
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        if params.get("path"):
            reader, writer = await asyncio.open_unix_connection(params["path"])
        else:
            context = ssl_context(params) if tls else None
            try:
                reader, writer = await asyncio.open_connection(params["host"], params["port"], ssl=context)
            except ssl.SSLError as exc:
                raise ConnectionError(_tls_problem(params, exc)) from exc
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
                try:
                    reply = await next_reply(reader, parser)
                except ssl.SSLError as exc:  # TLS 1.3: a refused client certificate shows on the first read
                    raise ConnectionError(_tls_problem(params, exc)) from exc
                except ConnectionError as exc:
                    if not tls:
                        raise
                    # or as a reset without an alert (Redis closes the socket once its check fails)
                    raise ConnectionError(
                        f"Redis at {params.get('host')}:{params.get('port')} closed the TLS connection before "
                        f"answering ({exc}): most likely it requires a client certificate it was not given or "
                        "does not trust"
                    ) from exc
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"Redis refused the connection setup of {client_name}: {reply}")
        except BaseException:
            writer.close()
            raise
    return reader, writer


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def ssl_context(params: Mapping[str, Any]) -> ssl.SSLContext:
    """The TLS context redis-py's ``SSLConnection`` would build from the same ``ssl_*`` parameters.

    The same defaults: the system's CAs plus ``ssl_ca_certs`` / ``ssl_ca_path`` / ``ssl_ca_data``, the
    server's certificate required and its name (or IP address) checked against the host connected to, a
    client certificate from ``ssl_certfile`` / ``ssl_keyfile`` when given. Built per connection, as redis-py
    does, so renewed files are read by the next connection.
    """
    reqs = params.get("ssl_cert_reqs")
    cert_reqs = _CERT_REQS[reqs.lower()] if isinstance(reqs, str) else ssl.CERT_REQUIRED if reqs is None else reqs
    context = ssl.create_default_context()
    context.check_hostname = cert_reqs != ssl.CERT_NONE and _flag(params.get("ssl_check_hostname", True))
    context.verify_mode = cert_reqs
    if params.get("ssl_certfile"):
        context.load_cert_chain(
            certfile=params["ssl_certfile"], keyfile=params.get("ssl_keyfile"), password=params.get("ssl_password")
        )
    if params.get("ssl_ca_certs") or params.get("ssl_ca_path") or params.get("ssl_ca_data"):
        context.load_verify_locations(
            cafile=params.get("ssl_ca_certs"), capath=params.get("ssl_ca_path"), cadata=params.get("ssl_ca_data")
        )
    if params.get("ssl_min_version") is not None:
        context.minimum_version = ssl.TLSVersion(int(params["ssl_min_version"]))
    if params.get("ssl_ciphers"):
        context.set_ciphers(params["ssl_ciphers"])
    return context


def _flag(value: Any) -> bool:
    """A boolean URL parameter as redis-py reads one (``parse_url`` has already converted its own)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "f", "false", "n", "no")
    return bool(value)


def _tls_problem(params: Mapping[str, Any], exc: ssl.SSLError) -> str:
    where = f"{params.get('host')}:{params.get('port')}"
    if isinstance(exc, ssl.SSLCertVerificationError):  # the server's certificate: its CA, name or dates
        reason = f"certificate verify failed: {exc.verify_message}"
    else:  # the server refused ours (missing, or not signed by a CA it trusts), or no common protocol
        reason = str(exc.reason or exc).replace("_", " ").lower()
    return f"TLS with Redis at {where} failed: {reason} ({type(exc).__name__})"


def params_of(client: aioredis.Redis) -> tuple[Mapping[str, Any], bool]:
    """The connection parameters of a redis-py client and whether it uses TLS."""
    pool = client.connection_pool
    return pool.connection_kwargs, issubclass(pool.connection_class, SSLConnection)


async def next_reply(reader: asyncio.StreamReader, parser: hiredis.Reader) -> Any:
    while (reply := parser.gets()) is False:
        data = await reader.read(READ_BYTES)
        if not data:
            raise ConnectionError("Redis closed the connection")
        parser.feed(data)
    return reply


ReplyError = hiredis.ReplyError  # an error reply (``NOSCRIPT …``, ``WRONGTYPE …``): a value in the replies
STALL_S = 2.0
Command = tuple[Any, ...]
_KEYLESS = frozenset({b"PING", b"SCRIPT", b"INFO", b"CLUSTER", b"TIME", b"ECHO"})


def script_sha(source: str) -> str:
    """The SHA1 ``EVALSHA`` names ``source`` by."""
    return hashlib.sha1(source.encode()).hexdigest()


def key_of(command: Command) -> Any:
    """The key a command is routed by: the first key of ``EVALSHA``/``EVAL``/``FCALL``, else its first
    argument; ``None`` for a command without keys (``PING``, ``SCRIPT LOAD``)."""
    name = command[0].upper() if isinstance(command[0], bytes) else command[0].upper().encode()
    if name in (b"EVALSHA", b"EVAL", b"FCALL", b"FCALL_RO", b"EVALSHA_RO", b"EVAL_RO"):
        return command[3] if int(command[2]) > 0 else None
    if name in _KEYLESS or len(command) < 2:
        return None
    return command[1]


class Pipeline(Protocol):
    """Calls of plain commands, sent with whatever else the loop turn sends: :class:`AutoPipeline` on one
    server, :class:`~common.resp_cluster.ClusterPipeline` on a Redis Cluster (each command to the node owning
    its key's slot; the commands of one call need not share a slot, and are not atomic together).

    Replies come back in order; an error reply is a :data:`ReplyError` value in the list. ``EVALSHA`` of a
    script registered with :meth:`register_script` never answers ``NOSCRIPT``: a server that lost its
    scripts (a restart, a failover to a replica, ``SCRIPT FLUSH``) is sent the script and the call again.
    Connection problems raise ``ConnectionError``/``OSError``; callers bound their wait with a timeout.
    """

    async def call(self, *commands: Command) -> list[Any]: ...

    def register_script(self, source: str) -> str: ...

    def placement(self, key: str | bytes) -> object:
        """Where ``key`` is served now, cheaply (no I/O): a value that changes when the key's slot moves to
        another node (a failover, a resharding). Compared by identity; ``None`` when not known yet. The event
        publisher keys its seq jumps on it (``core.adapters.events.SeqGuard``)."""
        ...

    async def aclose(self) -> None: ...


_ONE_SERVER = object()  # AutoPipeline.placement of every key


def lost_script(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


class AutoPipeline:
    """One connection shared by concurrent callers: what they send in one loop turn leaves in one write.

    Each :meth:`call` queues its commands and waits for exactly their replies
    (Redis answers a connection's commands in order, so a queue of waiters
    pairs them up). The queued commands are written at the end of the loop
    turn, so the 64 requests a busy gateway has in flight share one ``write``
    and a few reads instead of a redis-py pipeline each: about 5 µs of Python
    per call of two commands against 63 µs (64 concurrent callers, measured
    on this machine). ioredis calls this auto-pipelining.

    Error replies come back as :data:`ReplyError` values in the list, not
    raised. A caller that gives up (cancelled, or a timeout of its own) keeps
    its place in the queue and its replies are read and dropped, so nobody is
    handed another's reply. When the connection closes or fails, every
    waiting caller gets ``ConnectionError`` and the next call opens a new
    one; when the oldest reply is ``stall_s`` late, the connection is dropped
    the same way (Redis stuck, or gone without closing).
    """

    def __init__(self, params: Mapping[str, Any], *, tls: bool, client_name: str, stall_s: float = STALL_S) -> None:
        self._params = dict(params)
        self._tls = tls
        self._client_name = client_name
        self._stall_s = stall_s
        self._link: _Link | None = None
        self._opening: asyncio.Task[_Link] | None = None
        self._scripts: dict[str, str] = {}

    @classmethod
    def beside(cls, client: aioredis.Redis, client_name: str) -> AutoPipeline:
        """Calls to the server, database and credentials of ``client``."""
        params, tls = params_of(client)
        return cls(params, tls=tls, client_name=client_name)

    def register_script(self, source: str) -> str:
        """The SHA1 to ``EVALSHA`` ``source`` by; a ``NOSCRIPT`` answer to it loads it and sends the call again."""
        sha = script_sha(source)
        self._scripts[sha] = source
        return sha

    def placement(self, key: str | bytes) -> object:
        """One server serves every key, always: the same object for all."""
        return _ONE_SERVER

    async def call(self, *commands: Command) -> list[Any]:
        """The replies to ``commands``, in order (sent together with whatever else this loop turn sends)."""
        replies = await self._send(commands)
        for reply in replies:
            if lost_script(reply):
                return await self._reload_and_retry(commands, replies)
        return replies

    def submit(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """The replies to ``commands`` as a future, the commands queued now, in the caller's loop turn.

        For a caller that sends to several pipelines at once and waits on all (a cluster's nodes): each
        pipeline's batch joins what its connection sends this turn, with no task per pipeline. While the
        connection is open the future is the connection's own; otherwise a task opens one. Unlike :meth:`call`,
        ``NOSCRIPT`` answers are left in the replies: :meth:`reload_lost_scripts` deals with them.
        """
        link = self._link
        if link is not None and not link.closed and not link.late(self._stall_s):
            return link.send(commands)
        return asyncio.ensure_future(self._send(commands))

    async def reload_lost_scripts(self, commands: Sequence[Command], replies: list[Any]) -> list[Any]:
        """``replies`` to ``commands`` (from :meth:`submit`) with each ``NOSCRIPT`` answer to a registered
        script replaced by the answer after the script was loaded (what :meth:`call` does by itself)."""
        for reply in replies:
            if lost_script(reply):
                return await self._reload_and_retry(commands, replies)
        return replies

    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        link = self._link
        if link is not None and link.late(self._stall_s):
            link.close(f"Redis has not answered for {self._stall_s:g} s")
        if link is None or link.closed:
            link = await self._open()
        return await link.send(commands)

    async def _reload_and_retry(self, commands: Sequence[Command], replies: list[Any]) -> list[Any]:
        """Load the scripts the server lost, then send again the calls of them (only those: the others ran)."""
        lost = [i for i, reply in enumerate(replies) if lost_script(reply) and _sha_of(commands[i]) in self._scripts]
        if not lost:
            return replies
        shas = {_sha_of(commands[i]) for i in lost}
        await self._send([("SCRIPT", "LOAD", self._scripts[sha]) for sha in shas])
        again = await self._send([commands[i] for i in lost])
        for i, reply in zip(lost, again, strict=True):
            replies[i] = reply
        return replies

    async def aclose(self) -> None:
        opening, self._opening = self._opening, None
        if opening is not None:  # a connection being opened (or opened, its callback still due) is closed too
            opening.remove_done_callback(self._opened)
            opening.cancel()
            opening.add_done_callback(_close_opened)
        if self._link is not None:
            self._link.close("the pipeline was closed")
            self._link = None

    async def _open(self) -> _Link:
        """The new connection; concurrent callers share one attempt (and its error)."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._connect())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    async def _connect(self) -> _Link:
        return _Link(*await open_connection(self._params, tls=self._tls, client_name=self._client_name))

    def _opened(self, task: asyncio.Task[_Link]) -> None:
        self._opening = None
        if not task.cancelled() and task.exception() is None:  # an error went to the callers waiting on it
            self._link = task.result()


def _close_opened(task: asyncio.Future[_Link]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close("the pipeline was closed")


def _sha_of(command: Command) -> str:
    sha = command[1] if command[0] in ("EVALSHA", b"EVALSHA", "evalsha") else ""
    return sha.decode() if isinstance(sha, bytes) else str(sha)


class _Link:
    """One open connection of an :class:`AutoPipeline`: the write buffer, the waiters and the reader task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._waiting: deque[tuple[asyncio.Future[list[Any]], int, float]] = deque()
        self.closed = False
        self._reader = self._loop.create_task(self._read(reader))

    def send(self, commands: Sequence[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.extend([hiredis.pack_command(command) for command in commands])
        self._waiting.append((future, len(commands), time.monotonic()))
        return future

    def late(self, stall_s: float) -> bool:
        return bool(self._waiting) and time.monotonic() - self._waiting[0][2] > stall_s

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        if self._reader is not asyncio.current_task():
            self._reader.cancel()
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(ConnectionError(reason))

    def _flush(self) -> None:
        if not self.closed:
            self._writer.write(b"".join(self._out))
        self._out.clear()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader()
        gets, waiting = parser.gets, self._waiting
        replies: list[Any] = []
        try:
            while True:
                data = await reader.read(READ_BYTES)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                parser.feed(data)
                while (reply := gets()) is not False:
                    replies.append(reply)
                    future, count, _ = waiting[0]
                    if len(replies) == count:
                        waiting.popleft()
                        if not future.done():
                            future.set_result(replies)
                        replies = []
        except Exception as exc:  # the connection, or a reply nobody asked for (IndexError): it is unusable
            self.close(f"the Redis connection failed: {exc!r}")
