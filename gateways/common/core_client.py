"""The gateways' one connection to the gRPC core: a ``grpc.aio`` channel and its stubs.

A :class:`CoreClient` is created in ``before_server_start`` (so the channel
belongs to the server's loop) and closed in ``after_server_stop``. Creating it
does not connect: a gateway starts, and answers ``/health`` with 503, while the
core is down. Every call carries a deadline (the settings' default unless the
caller asks for a shorter one) and the request's ``x-request-id`` as metadata.
A failed call is translated here, once, into the gateways' ``ApiError``.

Several cores (``PERSEUS_CORE_ADDR=h1:p1,h2:p2`` or ``dns:///name:port``) share the one channel: grpc's own
``round_robin`` policy spreads calls over the cores whose gRPC health (``grpc.health.v1``, checked by the
channel itself) is SERVING, so a core that dies or starts shutting down gets no new call, and a call lost
with its connection is tried again on another (see :meth:`CoreClient.unary`). With no core ready a call
fails at once with UNAVAILABLE (503), never waits for one. See docs/design/many-cores.md.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

import grpc
from grpc import aio

from common import telemetry
from gateways.common.errors import ApiError, ServiceUnavailable, Unauthorized, error_from_rpc
from gateways.common.settings import CoreTls
from perseus.marketdata.v1 import (
    export_service_pb2_grpc,
    ingest_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    market_data_service_pb2,
    market_data_service_pb2_grpc,
    replay_service_pb2_grpc,
    stream_service_pb2_grpc,
    webhook_service_pb2_grpc,
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
# The export channel's flow control (issue 21): a fixed window per stream (no BDP probe growing it), so at most
# about this many bytes of an export wait in the gateway while its client is slower than the core.
EXPORT_WINDOW_BYTES = 1 << 20
EXPORT_CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", EXPORT_WINDOW_BYTES),
    ("grpc.max_receive_message_length", 16 << 20),
)


def channel_options(keepalive_s: float = DEFAULT_KEEPALIVE_S) -> tuple[tuple[str, int | str], ...]:
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
        ("grpc.service_config", SERVICE_CONFIG),
    )


# The core serves grpc.health.v1 per service (core.rpc.server); the gateways' channel watches this one, which
# turns NOT_SERVING with the others when a core begins to stop.
HEALTH_SERVICE = market_data_service_pb2.DESCRIPTOR.services_by_name["MarketDataService"].full_name
GET_CANDLES_METHOD = f"/{HEALTH_SERVICE}/GetCandles"
SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": HEALTH_SERVICE}}
)


def channel_target(addr: str) -> str:
    """The grpc target for ``PERSEUS_CORE_ADDR`` (already checked by ``common.settings.core_targets``).

    ``dns:///name:port`` and a single ``host:port`` go to grpc's DNS resolver as they are, which re-resolves
    the name when connections fail (every record of the name is a core). A list becomes grpc's static
    ``ipv4:``/``ipv6:`` target; a host name in a list is resolved here, once, to its addresses (a name whose
    records change belongs in a ``dns:`` target). Should no address resolve, the first item is kept as given:
    the gateway starts anyway, and ``/health`` reports the core down.
    """
    items = addr.split(",")
    if addr.startswith("dns:") or len(items) == 1:
        return addr
    v4: list[str] = []
    v6: list[str] = []
    for item in items:
        host, _, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        for ip in _addresses(host):
            bucket, shown = (v6, f"[{ip}]:{port}") if ":" in ip else (v4, f"{ip}:{port}")
            if shown not in bucket:
                bucket.append(shown)
    if not v4 and not v6:
        logger.warning("no address of PERSEUS_CORE_ADDR resolves; trying %s", items[0])
        return items[0]
    if v4 and v6:  # grpc's static targets take one family: IPv4, which every loopback and most LANs have
        logger.warning("PERSEUS_CORE_ADDR mixes IPv4 and IPv6 cores; only the IPv4 ones are used")
    return f"ipv4:{','.join(v4)}" if v4 else f"ipv6:{','.join(v6)}"


def _addresses(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        logger.warning("core host %s does not resolve (%s); left out", host, exc)
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def channel_credentials(tls: CoreTls) -> grpc.ChannelCredentials:
    """TLS to the core, trusting ``tls.ca``; presenting ``tls``'s client certificate when it has one."""

    def read(path: str) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as file:
            return file.read()

    return grpc.ssl_channel_credentials(read(tls.ca), read(tls.client_key), read(tls.client_cert))


# The start of the core's message when it refuses the gateway's service credential (core.rpc.auth).
CREDENTIAL_REFUSAL_PREFIX = "service credential"
CREDENTIAL_REFUSED_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def credential_refused(exc: grpc.RpcError) -> bool:
    """Whether the core refused this gateway's service credential (PERSEUS_SERVICE_TOKEN, TLS): not the
    client's fault, so a 503 (with an error logged), never the 401 of an unknown API key."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if not callable(code) or not callable(details) or code() not in CREDENTIAL_REFUSED_CODES:
        return False
    text = details()
    return isinstance(text, str) and text.startswith(CREDENTIAL_REFUSAL_PREFIX)


def api_error(exc: grpc.RpcError) -> ApiError:
    """The :class:`ApiError` of a failed core call (a refused service credential: 503, logged)."""
    return _api_error(exc)


def _api_error(exc: grpc.RpcError) -> ApiError:
    if credential_refused(exc):
        logger.error(
            "the core refused this gateway's service credential (%s): check PERSEUS_SERVICE_TOKEN", exc.details()
        )
        return ServiceUnavailable()
    return error_from_rpc(exc)


def connection_went_away(exc: grpc.RpcError) -> bool:
    """Whether ``exc`` is a call lost with its connection (GOAWAY, reset), which a new connection may serve."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if not callable(code) or not callable(details) or code() != grpc.StatusCode.UNAVAILABLE:
        return False
    text = details()
    return isinstance(text, str) and any(marker in text.lower() for marker in CONNECTION_GONE_MARKERS)


class CoreClient:
    """Owns the channels to the core and the stubs on them: one channel, or with ``more_channels`` (one
    connection each, ``PERSEUS_CORE_CONNECTIONS``) reads and ingest calls rotating over all of them."""

    def __init__(
        self,
        channel: aio.Channel,
        *,
        deadline_s: float,
        token: str = "",
        export_channel: aio.Channel | None = None,
        more_channels: Sequence[aio.Channel] = (),
    ) -> None:
        self._channel = channel
        self._more_channels = tuple(more_channels)
        self._export_channel = export_channel
        self._deadline_s = deadline_s
        # the service credential (PERSEUS_SERVICE_TOKEN's first value), sent with every call; none when unset
        self.auth_metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        channels = (channel, *self._more_channels)
        self._market_data = [market_data_service_pb2_grpc.MarketDataServiceStub(c) for c in channels]
        # GetCandles with its reply left as wire bytes (no response deserializer): the REST gateway walks the
        # repeated candles itself and parses only those it has not projected lately (issue 18.5)
        self._candles_wire: list[aio.UnaryUnaryMultiCallable[market_data_service_pb2.GetCandlesRequest, bytes]] = [
            c.unary_unary(  # registered as the generated stubs register theirs (the typing stubs lack the flag)
                GET_CANDLES_METHOD,
                request_serializer=market_data_service_pb2.GetCandlesRequest.SerializeToString,
                response_deserializer=None,
                _registered_method=True,  # type: ignore[call-arg]
            )
            for c in channels
        ]
        self._ingest = [ingest_service_pb2_grpc.IngestServiceStub(c) for c in channels]
        self._turn = itertools.count()
        self.keys = key_service_pb2_grpc.KeyServiceStub(channel)
        self.streams = stream_service_pb2_grpc.StreamServiceStub(channel)
        self.replay = replay_service_pb2_grpc.ReplayServiceStub(channel)  # history replays (issue 21)
        self.webhooks = webhook_service_pb2_grpc.WebhookServiceStub(channel)
        # bulk export streams on a channel of their own, without BDP probing: its flow-control window stays
        # small, so a client that reads slowly stops the core's cursor instead of filling this gateway's memory
        self.export = export_service_pb2_grpc.ExportServiceStub(export_channel or channel)

    @classmethod
    def connect(
        cls,
        addr: str,
        *,
        deadline_s: float,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        token: str = "",
        tls: CoreTls | None = None,
        connections: int = 1,
    ) -> CoreClient:
        """A client for the core at ``addr``; the channel connects lazily. Call inside the running loop.
        ``token`` goes with every call as ``authorization: Bearer``; ``tls`` makes the channel TLS (with a
        client certificate for mutual TLS when it has one); ``connections`` > 1 opens that many connections for
        reads and ingest calls (``PERSEUS_CORE_CONNECTIONS``)."""
        target, options = channel_target(addr), channel_options(keepalive_s)
        export_options = (*options, *EXPORT_CHANNEL_OPTIONS)

        def open_channel(options: tuple[tuple[str, int | str], ...]) -> aio.Channel:
            if tls is None:
                return aio.insecure_channel(target, options=options)
            return aio.secure_channel(target, channel_credentials(tls), options=options)

        # grpc shares one connection among channels of equal options: each further one gets a pool of its own
        own = (*options, ("grpc.use_local_subchannel_pool", 1))
        return cls(
            open_channel(options),
            deadline_s=deadline_s,
            token=token,
            export_channel=open_channel(export_options),
            more_channels=[open_channel(own) for _ in range(connections - 1)],
        )

    @property
    def market_data(self) -> market_data_service_pb2_grpc.MarketDataServiceStub:
        """The market-data stub of the next connection in turn (the only one by default)."""
        stubs = self._market_data
        return stubs[0] if len(stubs) == 1 else stubs[next(self._turn) % len(stubs)]

    @property
    def candles_wire(self) -> aio.UnaryUnaryMultiCallable[market_data_service_pb2.GetCandlesRequest, bytes]:
        """``GetCandles`` of the next connection in turn, answering the reply's wire bytes unparsed: called
        through :meth:`unary` like any stub method (same deadline, credential, retry, errors and tracing)."""
        calls = self._candles_wire
        return calls[0] if len(calls) == 1 else calls[next(self._turn) % len(calls)]

    @property
    def ingest(self) -> ingest_service_pb2_grpc.IngestServiceStub:
        stubs = self._ingest
        return stubs[0] if len(stubs) == 1 else stubs[next(self._turn) % len(stubs)]

    @property
    def deadline_s(self) -> float:
        return self._deadline_s

    def call_options(self, request_id: str | None, timeout_s: float | None = None) -> dict[str, Any]:
        """Keyword arguments for a stub call: its deadline and the request id metadata."""
        timeout = self._deadline_s if timeout_s is None else min(timeout_s, self._deadline_s)
        metadata: tuple[tuple[str, str], ...] = ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else ()
        metadata = self.auth_metadata + metadata
        if telemetry.enabled:  # the current span's traceparent: the core's span of the call is its child
            metadata += telemetry.outgoing()
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
                raise _api_error(exc) from exc
            logger.info("the core connection went away (%s); retrying the call once", exc.details())
        try:
            return await method(request, **{**options, "timeout": remaining})
        except grpc.RpcError as exc:
            raise _api_error(exc) from exc

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
        """Close the channels, letting calls in flight finish within ``grace_s``."""
        try:
            await self._channel.close(grace_s)
        finally:
            for channel in self._more_channels:
                await channel.close(grace_s)
            if self._export_channel is not None:
                await self._export_channel.close(grace_s)
