"""The gateways' one connection to the gRPC core: a ``grpc.aio`` channel and its stubs.

A :class:`CoreClient` is created in ``before_server_start`` (so the channel
belongs to the server's loop) and closed in ``after_server_stop``. Creating it
does not connect: a gateway starts, and answers ``/health`` with 503, while the
core is down. Every call carries a deadline (the settings' default unless the
caller asks for a shorter one) and the request's ``x-request-id`` as metadata.
A failed call is translated here, once, into the gateways' ``ApiError``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from grpc import aio

from gateways.common.errors import Unauthorized, error_from_rpc
from perseus.marketdata.v1 import (
    ingest_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    market_data_service_pb2,
    market_data_service_pb2_grpc,
    stream_service_pb2_grpc,
)

logger = logging.getLogger(__name__)

REQUEST_ID_METADATA_KEY = "x-request-id"
CLOSE_GRACE_S = 1.0
DEFAULT_KEEPALIVE_S = 30.0
KEEPALIVE_TIMEOUT_S = 10.0
# What grpc reports, with UNAVAILABLE, for a call lost because its connection went away: a GOAWAY
# (``too_many_pings``, or a core stopping: "Cancelling all calls"), or a socket that broke under it.
# "failed to connect" (no core at all) is not among them: that fails fast, as before.
CONNECTION_GONE_MARKERS = (
    "goaway",
    "too many pings",
    "cancelling all calls",
    "broken pipe",
    "connection reset",
    "socket closed",
)
MIN_RETRY_S = 0.01  # less than this left of the deadline: a second attempt could not finish anyway


def channel_options(keepalive_s: float = DEFAULT_KEEPALIVE_S) -> tuple[tuple[str, int], ...]:
    """The gateways' channel options.

    Reconnect quickly once the core is back: the default backoff grows to
    120 s, during which every call would fail fast with UNAVAILABLE. Ping
    every ``keepalive_s`` (``PERSEUS_GRPC_KEEPALIVE_S``), also with no call
    open and with no limit on pings without data, so a dead core is noticed on
    an idle stream; the core's server permits exactly that
    (``core.rpc.server.keepalive_options``, from the same variable).
    """
    return (
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.keepalive_time_ms", max(1, int(keepalive_s * 1000))),
        ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    )


def connection_went_away(exc: grpc.RpcError) -> bool:
    """Whether ``exc`` is a call lost with its connection (GOAWAY, reset), which a new connection may serve."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if not callable(code) or not callable(details) or code() != grpc.StatusCode.UNAVAILABLE:
        return False
    text = details()
    return isinstance(text, str) and any(marker in text.lower() for marker in CONNECTION_GONE_MARKERS)


class CoreClient:
    """Owns one channel to the core and the stubs on it."""

    def __init__(self, channel: aio.Channel, *, deadline_s: float) -> None:
        self._channel = channel
        self._deadline_s = deadline_s
        self.market_data = market_data_service_pb2_grpc.MarketDataServiceStub(channel)
        self.ingest = ingest_service_pb2_grpc.IngestServiceStub(channel)
        self.keys = key_service_pb2_grpc.KeyServiceStub(channel)
        self.streams = stream_service_pb2_grpc.StreamServiceStub(channel)

    @classmethod
    def connect(cls, addr: str, *, deadline_s: float, keepalive_s: float = DEFAULT_KEEPALIVE_S) -> CoreClient:
        """A client for the core at ``addr``; the channel connects lazily. Call inside the running loop."""
        return cls(aio.insecure_channel(addr, options=channel_options(keepalive_s)), deadline_s=deadline_s)

    @property
    def deadline_s(self) -> float:
        return self._deadline_s

    def call_options(self, request_id: str | None, timeout_s: float | None = None) -> dict[str, Any]:
        """Keyword arguments for a stub call: its deadline and the request id metadata."""
        timeout = self._deadline_s if timeout_s is None else min(timeout_s, self._deadline_s)
        metadata = ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else ()
        return {"timeout": timeout, "metadata": metadata}

    async def unary(self, method: Any, request: Any, *, request_id: str | None, timeout_s: float | None = None) -> Any:
        """Call a unary stub ``method``; a failure raises the matching :class:`ApiError`.

        A call lost because its connection went away (a GOAWAY, a reset: see
        :func:`connection_went_away`) is sent once more on a new connection,
        within what is left of the same deadline, so the client never sees the
        core drop a connection. Every call the gateways make is safe to repeat:
        reads, key checks, and ingest batches, which are idempotent.
        """
        options = self.call_options(request_id, timeout_s)
        deadline = time.monotonic() + options["timeout"]
        try:
            return await method(request, **options)
        except grpc.RpcError as exc:
            remaining = deadline - time.monotonic()
            if not connection_went_away(exc) or remaining < MIN_RETRY_S:
                raise error_from_rpc(exc) from exc
            logger.info("the core connection went away (%s); retrying the call once", exc.details())
        try:
            return await method(request, **{**options, "timeout": remaining})
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    async def get_status(
        self, *, request_id: str | None = None, timeout_s: float | None = None
    ) -> market_data_service_pb2.GetStatusResponse:
        response: market_data_service_pb2.GetStatusResponse = await self.unary(
            self.market_data.GetStatus,
            market_data_service_pb2.GetStatusRequest(),
            request_id=request_id,
            timeout_s=timeout_s,
        )
        return response

    async def lookup_key(self, key: str) -> key_service_pb2.ApiKey | None:
        """The core's record of ``key``, or None when it is unknown or revoked."""
        try:
            reply: key_service_pb2.AuthenticateKeyResponse = await self.unary(
                self.keys.AuthenticateKey, key_service_pb2.AuthenticateKeyRequest(key=key), request_id=None
            )
        except Unauthorized:
            return None
        return reply.api_key

    async def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Close the channel, letting calls in flight finish within ``grace_s``."""
        await self._channel.close(grace_s)
