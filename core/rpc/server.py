"""The one wiring function of the gRPC server: servicers, health and reflection, every call observed and,
with a service token configured, authenticated (``core.rpc.auth``)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import _async as aio_reflection, reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from common import telemetry
from core.rpc.auth import ServiceAuth
from core.rpc.export_servicer import SERVICE_NAME as EXPORT_SERVICE, ExportServicer, export_service_handler
from core.rpc.interceptors import CallLogging, CallMetrics, Concern, ObservedServer, RequestIds
from core.rpc.replay_servicer import SERVICE_NAME as REPLAY_SERVICE, ReplayServicer, replay_service_handler
from core.rpc.servicers import IngestServicer, KeyServicer, MarketDataServicer
from core.rpc.stream_servicer import StreamServicer, stream_service_handler
from core.rpc.webhook_servicer import WebhookServicer
from core.rpc.wire import to_wire
from core.settings import DEFAULT_GRPC_KEEPALIVE_S, CoreCredentials
from perseus.marketdata.v1 import (
    ingest_service_pb2,
    ingest_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    market_data_service_pb2,
    stream_service_pb2,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_PING_STRIKES = 2  # gRPC's default, stated: pings faster than the agreed interval are still refused
MARKET_DATA_SERVICE = market_data_service_pb2.DESCRIPTOR.services_by_name["MarketDataService"]
SERVICE_NAMES = (
    MARKET_DATA_SERVICE.full_name,
    ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
    key_service_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    stream_service_pb2.DESCRIPTOR.services_by_name["StreamService"].full_name,
    webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    EXPORT_SERVICE,
    REPLAY_SERVICE,
)


@dataclass(frozen=True, slots=True)
class Servicers:
    market_data: MarketDataServicer
    ingest: IngestServicer
    keys: KeyServicer
    streams: StreamServicer
    webhooks: WebhookServicer | None = None  # alert webhooks (issue 21); None: not offered
    export: ExportServicer | None = None  # bulk export (issue 21); None: the service is not offered
    replay: ReplayServicer | None = None  # replay of stored history (issue 21); None: not offered


@dataclass(slots=True)
class CoreServer:
    server: aio.Server
    health: health.aio.HealthServicer

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Graceful stop: health turns NOT_SERVING, then in-flight calls drain for ``grace_s``."""
        await self.set_serving(False)
        await self.server.stop(grace_s)


def unary_service_handler(service: ServiceDescriptor, servicer: object) -> grpc.GenericRpcHandler:
    """The unary methods of ``service`` on ``servicer``; a method may answer with wire bytes it built
    (see ``core.rpc.wire``), which the generated ``add_…_to_server`` would refuse."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=message_factory.GetMessageClass(method.input_type).FromString,
            response_serializer=to_wire,
        )
        for method in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def keepalive_options(keepalive_s: float) -> list[tuple[str, int]]:
    """The server side of the keepalive agreement with the core's clients (gateways, SDK).

    The clients ping every ``keepalive_s`` (``PERSEUS_GRPC_KEEPALIVE_S``), on
    idle streams and idle channels alike. gRPC's default server policy takes
    any ping within 5 minutes of the last one, with no data in between, as a
    strike, and answers the third strike with GOAWAY ``too_many_pings``,
    which cancels every call on the connection: a gateway's idle Multiplex
    stream died after about 3 minutes. So the server accepts pings from half
    the clients' interval on (the margin covers timer jitter), with or without
    calls; a peer pinging faster than that still earns strikes.

    The key is ``grpc.http2.min_ping_interval_without_data_ms``: it is what
    gRPC's ``GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS`` stands
    for. The macro's name spelled as a key is silently ignored (unknown keys
    are), and the default policy stays, which tests/integration/test_keepalive.py
    would show.
    """
    return [
        ("grpc.http2.min_ping_interval_without_data_ms", max(1, int(keepalive_s * 1000 / 2))),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ]


def build_server(
    servicers: Servicers,
    registry: CollectorRegistry,
    *,
    keepalive_s: float = DEFAULT_GRPC_KEEPALIVE_S,
    auth: ServiceAuth | None = None,
    reflection_on: bool = False,
    reuse_port: bool = False,
) -> CoreServer:
    """The core's server: every service, each call observed and, with ``auth``, asked for its credential
    (health excepted); server reflection only when ``reflection_on`` (``PERSEUS_CORE_REFLECTION``);
    ``reuse_port``: the port is shared with the other workers of one ``perseus core`` (``SO_REUSEPORT``)."""
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # off by default: a second core on a taken port must fail, not silently split traffic; on for
            # the PERSEUS_CORE_WORKERS of one supervisor, which share the port on purpose
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            *keepalive_options(keepalive_s),
        ],
    )
    guard = auth.check_for if auth is not None and auth.enabled else None
    concerns: list[Concern] = [RequestIds(), CallLogging(), CallMetrics(registry)]
    if telemetry.enabled:  # first: its span is current while the others run (core.rpc.tracing)
        from core.rpc.tracing import CallTracing

        concerns.insert(0, CallTracing())
    observed = ObservedServer(server, concerns, guard=guard)
    observed.add_generic_rpc_handlers(
        (
            unary_service_handler(MARKET_DATA_SERVICE, servicers.market_data),
            stream_service_handler(servicers.streams),
        )
    )
    if servicers.export is not None:
        observed.add_generic_rpc_handlers((export_service_handler(servicers.export),))
    if servicers.replay is not None:
        observed.add_generic_rpc_handlers((replay_service_handler(servicers.replay),))
    ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(servicers.ingest, observed)
    key_service_pb2_grpc.add_KeyServiceServicer_to_server(servicers.keys, observed)
    if servicers.webhooks is not None:
        webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server(servicers.webhooks, observed)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, observed)
    if reflection_on:
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflected = (*SERVICE_NAMES, health_name, reflection.SERVICE_NAME)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            aio_reflection.ReflectionServicer(reflected), observed
        )
    return CoreServer(server, health_servicer)


INGEST_SERVICE = ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
KEY_SERVICE = key_service_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name


def service_auth(credentials: CoreCredentials) -> ServiceAuth:
    """The token check of ``credentials``: the accepted tokens, and the restricted services' own lists."""
    restricted = {
        service: allowed
        for service, allowed in (
            (INGEST_SERVICE, credentials.ingest_tokens),
            (KEY_SERVICE, credentials.key_service_tokens),
        )
        if allowed is not None
    }
    return ServiceAuth(credentials.tokens, restricted)


def server_credentials(credentials: CoreCredentials) -> grpc.ServerCredentials | None:
    """TLS for the core's port when its certificate is configured; with ``PERSEUS_CORE_TLS_CLIENT_CA`` every
    connection must present a client certificate that CA signed (mutual TLS). None: plaintext."""
    if not credentials.tls_cert:
        return None

    def read(path: str) -> bytes:
        with open(path, "rb") as file:
            return file.read()

    client_ca = read(credentials.tls_client_ca) if credentials.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(read(credentials.tls_key), read(credentials.tls_cert))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
