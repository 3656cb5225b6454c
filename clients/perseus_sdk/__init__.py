"""The Perseus Python SDK.

The gRPC client is generated from ``proto/`` by betterproto2 (``make gen``)
into ``perseus_sdk._generated``; this module is its curated public surface.

    async with perseus_sdk.connect("127.0.0.1:50051", token=service_token) as channel:
        market = perseus_sdk.MarketDataServiceStub(channel)
        reply = await market.list_exchanges(perseus_sdk.ListExchangesRequest())

The core asks for a service credential (its ``PERSEUS_SERVICE_TOKEN``, and/or a client certificate:
``tls_ca``, ``tls_cert``, ``tls_key``); a core on loopback with none configured takes calls without one.

The WebSocket gateway's stream, reconnected and resumed (``perseus_sdk.stream``):

    async with perseus_sdk.LiveStream("ws://127.0.0.1:8001", api_key) as stream:
        await stream.subscribe("prices:BTC-USD")
        async for item in stream:  # LiveEvent, or SeqGap where events are gone for good
            ...

The REST gateway, with retries and cursors followed (``perseus_sdk.rest``):

    async with perseus_sdk.RestClient("http://127.0.0.1:8000", api_key) as rest:
        candles = await rest.candles("coinbase", "BTC-USD", timeframe="1m")  # list[perseus_sdk.models.Candle]

Alert webhooks, checked on the receiving side (``perseus_sdk.webhooks``):

    ok = perseus_sdk.verify_signature(raw_body, headers["X-Perseus-Signature"], secret)

``perseus_sdk.models`` holds the REST answers' types (``Candle``, ``TradeSignal``…);
they share names with the gRPC messages above, so they are not re-exported here.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.events import SendRequest, listen

from perseus_sdk._generated.perseus.marketdata.v1 import (
    ApiKey,
    AuthenticateKeyRequest,
    AuthenticateKeyResponse,
    Candle,
    ConsensusPrice,
    DependencyState,
    Exchange,
    ExchangeStatus,
    FeedError,
    GetCandlesRequest,
    GetCandlesResponse,
    GetConsensusRequest,
    GetConsensusResponse,
    GetIndicatorRequest,
    GetIndicatorResponse,
    GetLatestPricesRequest,
    GetLatestPricesResponse,
    GetPriceRangeRequest,
    GetPriceRangeResponse,
    GetSignalRequest,
    GetSignalResponse,
    GetStatusRequest,
    GetStatusResponse,
    IngestPricesRequest,
    IngestPricesResponse,
    IngestServiceStub,
    IngestStatus,
    KeyServiceStub,
    KeyTier,
    LatestPrice,
    ListAlertsRequest,
    ListAlertsResponse,
    ListExchangesRequest,
    ListExchangesResponse,
    ListSymbolsRequest,
    ListSymbolsResponse,
    MacdV,
    MarketDataServiceStub,
    MomentumStage,
    PriceBucket,
    PriceFeed,
    ResumeGap,
    RuntimeMode,
    SignalDirection,
    SignalStrength,
    StreamEvent,
    StreamServiceStub,
    Subscribed,
    SubscribeRequest,
    SubscribeResponse,
    Symbol,
    Timeframe,
    TradeSignal,
    ValueZone,
)
from perseus_sdk.rest import ApiError, RateLimit, RestClient
from perseus_sdk.stream import LiveEvent, LiveStream, ReplayedEvent, SeqGap, StreamClosed, StreamRefused, replay
from perseus_sdk.webhooks import verify_signature

__all__ = [
    "ApiError",
    "ApiKey",
    "AuthenticateKeyRequest",
    "AuthenticateKeyResponse",
    "Candle",
    "ConsensusPrice",
    "DependencyState",
    "Exchange",
    "ExchangeStatus",
    "FeedError",
    "GetCandlesRequest",
    "GetCandlesResponse",
    "GetConsensusRequest",
    "GetConsensusResponse",
    "GetIndicatorRequest",
    "GetIndicatorResponse",
    "GetLatestPricesRequest",
    "GetLatestPricesResponse",
    "GetPriceRangeRequest",
    "GetPriceRangeResponse",
    "GetSignalRequest",
    "GetSignalResponse",
    "GetStatusRequest",
    "GetStatusResponse",
    "IngestPricesRequest",
    "IngestPricesResponse",
    "IngestServiceStub",
    "IngestStatus",
    "KeyServiceStub",
    "KeyTier",
    "LatestPrice",
    "ListAlertsRequest",
    "ListAlertsResponse",
    "ListExchangesRequest",
    "ListExchangesResponse",
    "ListSymbolsRequest",
    "ListSymbolsResponse",
    "LiveEvent",
    "LiveStream",
    "MacdV",
    "MarketDataServiceStub",
    "MomentumStage",
    "PriceBucket",
    "PriceFeed",
    "RateLimit",
    "ReplayedEvent",
    "RestClient",
    "ResumeGap",
    "RuntimeMode",
    "SeqGap",
    "SignalDirection",
    "SignalStrength",
    "StreamClosed",
    "StreamEvent",
    "StreamRefused",
    "StreamServiceStub",
    "SubscribeRequest",
    "SubscribeResponse",
    "Subscribed",
    "Symbol",
    "Timeframe",
    "TradeSignal",
    "ValueZone",
    "connect",
    "replay",
    "tls_context",
    "verify_signature",
]


DEFAULT_KEEPALIVE_S = 30.0
KEEPALIVE_TIMEOUT_S = 10.0


def channel_config(keepalive_s: float = DEFAULT_KEEPALIVE_S) -> Configuration:
    """The SDK's side of the core's keepalive agreement.

    Ping every ``keepalive_s``, also on an idle channel and with no limit on
    pings without data, so a dead connection is noticed on an idle stream.
    The core permits pings from half its ``PERSEUS_GRPC_KEEPALIVE_S`` (30 s by
    default) on; ping faster than that and it answers GOAWAY
    ``too_many_pings``, so ``keepalive_s`` should be at least that half.
    """
    return Configuration(
        _keepalive_time=keepalive_s,
        _keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        _keepalive_permit_without_calls=True,
        _http2_max_pings_without_data=0,
        _http2_min_sent_ping_interval_without_data=keepalive_s / 2,  # the timer may fire a hair early
    )


def tls_context(ca: str | None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """TLS to a core whose certificate ``ca`` signed (None: the system's CAs), presenting the client certificate
    ``cert`` (and its ``key``, unless ``cert`` holds it) to a core that asks for one (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])  # gRPC is HTTP/2
    return context


@asynccontextmanager
async def connect(
    addr: str,
    *,
    token: str | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls: ssl.SSLContext | None = None,
    keepalive_s: float = DEFAULT_KEEPALIVE_S,
) -> AsyncIterator[Channel]:
    """An async gRPC channel to a Perseus core at ``host:port``, closed on exit; it pings every ``keepalive_s``.

    ``token`` (the core's service token, one value of its ``PERSEUS_SERVICE_TOKEN``) goes with every call as
    ``authorization: Bearer <token>``. ``tls_ca`` (a PEM file) makes the channel TLS, trusting that CA;
    ``tls_cert``/``tls_key`` add a client certificate for a core that asks for one. ``tls`` takes a ready
    ``ssl.SSLContext`` instead (it must offer the ``h2`` ALPN protocol).
    """
    host, _, port = addr.rpartition(":")
    if tls is None and (tls_ca or tls_cert):
        tls = tls_context(tls_ca, tls_cert, tls_key)
    channel = Channel(host=host.strip("[]"), port=int(port), ssl=tls, config=channel_config(keepalive_s))
    if token:
        authorization = f"Bearer {token}"

        async def send_token(event: SendRequest) -> None:
            event.metadata["authorization"] = authorization

        listen(channel, SendRequest, send_token)
    try:
        yield channel
    finally:
        channel.close()
