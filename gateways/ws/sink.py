"""One client's outbound side: frames written straight to its transport, with the slow-client rule.

The hub hands every client of a channel the same encoded frame; writing it is
one ``transport.write`` (no task, no await, no per-client encoding). The
transport's write buffer is the client's bounded queue: above
``SKIP_BYTES`` events are skipped (the client sees a ``seq`` gap), above
``CLOSE_BYTES``, or when it stays behind for the grace period, the client is
closed with 4009. Closing never waits for the client: the close frame is
queued and the transport aborted shortly after, so a client that stopped
reading cannot hold memory or a task.

Liveness is the runtime's one heartbeat job, not a task per connection: each
round writes the ``heartbeat`` message and a protocol ping as one write
(:meth:`ClientSink.ping`), and a connection whose pong has not come back
``PERSEUS_WS_PING_TIMEOUT_S`` later is failed with 1011 (:meth:`ClientSink.check_pong`).
The ping waits in Sanic's own ``pings`` table, which its pong handling
acknowledges and its connection teardown aborts (sanic==25.12.1).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from websockets.protocol import State

from gateways.ws.limits import Send, SlowClientRule
from gateways.ws.protocol import CloseCode

logger = logging.getLogger(__name__)

ABORT_AFTER_CLOSE_S = 5.0
# The kernel's send buffer per connection, fixed instead of auto-tuned (up to 4 MiB each): it bounds
# kernel memory per client and lets the write buffer, which the rule reads, notice a stalled reader.
SOCKET_SEND_BUFFER_BYTES = 64 * 1024


class ClientSink:
    __slots__ = (
        "_abort", "_rule", "_skip_bytes", "_transport", "_ws", "close_code", "closing", "lagging_since", "skipped",
    )  # fmt: skip

    def __init__(self, ws: Any, rule: SlowClientRule) -> None:
        self._ws = ws
        self._transport = ws.io_proto.transport
        self._rule = rule
        self._skip_bytes = rule.skip_bytes
        self.lagging_since: float | None = None
        self.skipped = 0
        self.closing = False
        self.close_code: int | None = None
        self._abort: asyncio.TimerHandle | None = None
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER_BYTES)
            except OSError:  # not a TCP socket (tests, unix sockets): keep the default
                pass

    @property
    def gone(self) -> bool:
        """The connection is closed or closing: nothing more reaches the client."""
        return bool(self._transport.is_closing())

    @property
    def buffered(self) -> int:
        return int(self._transport.get_write_buffer_size())

    def deliver(self, frames: bytes, now: float, count: int = 1) -> None:
        if self.closing:
            return
        buffered = self._transport.get_write_buffer_size()
        if buffered <= self._skip_bytes:  # the hot path: one call, one write
            self._transport.write(frames)
            self.lagging_since = None
            return
        decision = self._rule.decide(buffered, self.lagging_since, now)
        if decision is Send.SKIP:
            self.skipped += count
            if self.lagging_since is None:
                self.lagging_since = now
        else:
            self.fail(CloseCode.TOO_SLOW, "too slow: events were skipped and the client did not catch up")

    def send(self, frame: bytes) -> None:
        if not self.closing and self._ws.ws_proto.state is State.OPEN:
            self._transport.write(frame)

    def ping(self, frames: bytes, payload: bytes) -> bool:
        """Write ``frames`` (ending with a protocol ping carrying ``payload``) and await its pong; False if the
        connection is closing (nothing written)."""
        if self.closing or self._ws.ws_proto.state is not State.OPEN:
            return False
        pings = self._ws.pings
        if payload not in pings:
            pings[payload] = asyncio.get_running_loop().create_future()
        self._transport.write(frames)
        return True

    def check_pong(self, payload: bytes) -> bool:
        """After the ping timeout: True if the ping carrying ``payload`` was answered; otherwise the connection
        is failed with 1011, as a websocket server's keepalive does."""
        if self.closing or self.gone or payload not in self._ws.pings:
            return True
        self.closing = True
        self.close_code = CloseCode.NO_PONG
        self._ws.fail_connection(CloseCode.NO_PONG)
        return False

    def fail(self, code: int, reason: str) -> None:
        """Queue a close frame now and abort the TCP connection if the client does not answer it."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        proto = self._ws.ws_proto
        if proto.state is State.OPEN:
            proto.send_close(code, reason)
            for data in proto.data_to_send():
                if data:
                    self._transport.write(data)
        loop = asyncio.get_running_loop()
        self._abort = loop.call_later(ABORT_AFTER_CLOSE_S, self._transport.abort)

    def closed(self) -> None:
        """The connection is over: stop writing (the abort timer stays, it is harmless)."""
        self.closing = True
