"""A scripted local WebSocket server that replays exchange frames to a venue client in tests.

One :class:`Script` per connection, in order: the server waits for the client
frames in ``expect`` (checked, recorded), sends ``send`` (frames, with optional
:class:`Pause` between them), then ends with ``then``::

    Close(code=1000, reason="")   close handshake with that code
    Drop()                        abort the TCP connection, no close frame
    Hang()                        stay silent (no data, no server pings) until the client leaves
    Reject(status=503)            refuse the opening handshake with an HTTP status (a failed connect)

Connections beyond the list get ``fallback`` (by default ``Script(then=Reject())``).
Usage::

    async with ReplayServer([Script(expect=[{"type": "subscribe", ...}], send=lines, then=Drop()),
                             Script(expect=[subscribe], then=Hang())]) as server:
        ...connect to server.url...
        await server.wait_connections(2)
        assert server.connections[1].received == [...]   # every frame the client sent, per connection
    # leaving the block raises AssertionError if an expectation failed (also: server.check())

An expected frame is a ``Mapping`` (the frame's JSON must equal it), a ``str`` or
``bytes`` (exact), or a predicate ``Callable[[str | bytes], bool]``. A mismatch,
or no frame within ``expect_timeout_s``, is recorded in ``server.failures`` and
the connection is closed with 1008. :func:`load_frames` reads a ``.jsonl``
fixture (one frame a line, blank lines skipped); :func:`wait_until` polls a
condition. The server never pings, so ``Hang`` is truly silent; it still answers
the client's pings, as a stalled feed would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

HOST = "127.0.0.1"
DEFAULT_EXPECT_TIMEOUT_S = 5.0
DEFAULT_WAIT_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.005
POLICY_VIOLATION = 1008

Frame = str | bytes
Expected = Mapping[str, Any] | str | bytes | Callable[[Frame], bool]


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait this long before sending the next frame."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Close:
    code: int = 1000
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Drop:
    """Abort the TCP connection: the client sees no close frame."""


@dataclass(frozen=True, slots=True)
class Hang:
    """Send nothing more; keep reading (and recording) until the client goes away."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the opening handshake with this HTTP status."""

    status: int = 503


Action = Close | Drop | Hang | Reject


@dataclass(frozen=True, slots=True)
class Script:
    expect: Sequence[Expected] = ()
    send: Sequence[Frame | Pause] = ()
    then: Action = field(default_factory=Hang)


@dataclass(slots=True)
class ConnectionLog:
    """What happened on one connection (rejected ones included)."""

    index: int
    script: Script
    received: list[Frame] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set when the server side has finished


def load_frames(path: str | Path) -> list[str]:
    """The frames of a ``.jsonl`` fixture, one a line, blank lines skipped."""
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


async def wait_until(condition: Callable[[], bool], within_s: float = DEFAULT_WAIT_TIMEOUT_S) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` after ``within_s`` seconds."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - polls any condition, tests only
            await asyncio.sleep(POLL_INTERVAL_S)


def _matches(expected: Expected, frame: Frame) -> bool:
    if isinstance(expected, Mapping):
        try:
            return bool(json.loads(frame) == expected)
        except ValueError:
            return False
    if isinstance(expected, str | bytes):
        return frame == expected
    return bool(expected(frame))


class ReplayServer:
    def __init__(
        self,
        scripts: Sequence[Script],
        *,
        fallback: Script | None = None,
        expect_timeout_s: float = DEFAULT_EXPECT_TIMEOUT_S,
    ) -> None:
        self._scripts = list(scripts)
        self._fallback = fallback if fallback is not None else Script(then=Reject())
        self._expect_timeout_s = expect_timeout_s
        self._server: Server | None = None
        self._by_connection: dict[ServerConnection, ConnectionLog] = {}
        self.connections: list[ConnectionLog] = []
        self.failures: list[str] = []
        self.url = ""

    async def start(self) -> ReplayServer:
        self._server = await serve(self._handle, HOST, 0, process_request=self._process_request, ping_interval=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://{HOST}:{port}"
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ReplayServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
        if exc_type is None:
            self.check()

    def check(self) -> None:
        """Raise ``AssertionError`` listing every expectation that failed."""
        if self.failures:
            raise AssertionError("replay server: " + "; ".join(self.failures))

    async def wait_connections(self, count: int, within_s: float = DEFAULT_WAIT_TIMEOUT_S) -> None:
        """Wait until ``count`` connections (rejected ones included) have arrived."""
        await wait_until(lambda: len(self.connections) >= count, within_s)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        index = len(self.connections)
        script = self._scripts[index] if index < len(self._scripts) else self._fallback
        log = ConnectionLog(index, script)
        self.connections.append(log)
        if isinstance(script.then, Reject):
            log.done.set()
            return Response(script.then.status, "Rejected", Headers(), b"")
        self._by_connection[connection] = log
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        log = self._by_connection.pop(connection)
        inbox: asyncio.Queue[Frame] = asyncio.Queue()
        reader = asyncio.create_task(self._read(connection, log, inbox))
        try:
            await self._play(connection, log, inbox, reader)
        except ConnectionClosed:
            pass  # the client went away mid-script
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            log.done.set()

    @staticmethod
    async def _read(connection: ServerConnection, log: ConnectionLog, inbox: asyncio.Queue[Frame]) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in connection:
                log.received.append(frame)
                inbox.put_nowait(frame)

    async def _play(
        self, connection: ServerConnection, log: ConnectionLog, inbox: asyncio.Queue[Frame], reader: asyncio.Task[None]
    ) -> None:
        for position, expected in enumerate(log.script.expect):
            try:
                async with asyncio.timeout(self._expect_timeout_s):
                    frame = await inbox.get()
            except TimeoutError:
                self.failures.append(f"connection {log.index}: no client frame #{position} within the timeout")
                await connection.close(POLICY_VIOLATION, "expected a frame")
                return
            if not _matches(expected, frame):
                self.failures.append(f"connection {log.index}: client frame #{position} unexpected: {frame!r}")
                await connection.close(POLICY_VIOLATION, "unexpected frame")
                return
        for item in log.script.send:
            if isinstance(item, Pause):
                await asyncio.sleep(item.seconds)
            else:
                await connection.send(item)
        action = log.script.then
        if isinstance(action, Close):
            await connection.close(action.code, action.reason)
        elif isinstance(action, Drop):
            connection.transport.abort()
        await reader  # Hang (and the others, briefly): until the client's side is gone
