"""``WebhookService``: a key's alert webhooks (``core.adapters.webhooks``; docs/design/webhooks.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from core.adapters.webhook_store import Delivery, Endpoint
from core.adapters.webhooks import Filters, Webhooks
from core.rpc.status import translates_errors
from perseus.marketdata.v1 import webhook_service_pb2 as pb, webhook_service_pb2_grpc as pb_grpc

Context = aio.ServicerContext[Any, Any]
PING_MARGIN_S = 0.5  # of the caller's deadline, left for recording the ping and answering


def _set(timestamp: Timestamp, value: datetime | None) -> None:
    if value is not None:
        timestamp.FromDatetime(value)


def webhook_to_pb(endpoint: Endpoint) -> pb.Webhook:
    message = pb.Webhook(
        id=endpoint.public_id,
        url=endpoint.url,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        key_id=endpoint.key_id,
        row_id=endpoint.row_id,
    )
    for name in ("exchange", "symbol", "timeframe", "signal_type"):
        value = getattr(endpoint, name)
        if value is not None:
            setattr(message, name, value)
    _set(message.create_time, endpoint.created_at)
    return message


def delivery_to_pb(delivery: Delivery) -> pb.WebhookDelivery:
    message = pb.WebhookDelivery(
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempts=delivery.attempts,
        last_error=delivery.last_error,
    )
    if delivery.last_status_code is not None:
        message.last_status_code = delivery.last_status_code
    _set(message.create_time, delivery.created_at)
    _set(message.last_attempt_time, delivery.last_attempt_at)
    _set(message.next_attempt_time, delivery.next_attempt_at)
    _set(message.delivered_time, delivery.delivered_at)
    return message


def _optional(request: Any, name: str) -> str | None:
    return str(getattr(request, name)) if request.HasField(name) else None


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    def __init__(self, webhooks: Webhooks) -> None:
        self._webhooks = webhooks

    @translates_errors
    async def CreateWebhook(self, request: pb.CreateWebhookRequest, context: Context) -> pb.CreateWebhookResponse:
        filters = Filters.parse(
            *(_optional(request, name) for name in ("exchange", "symbol", "timeframe", "signal_type"))
        )
        endpoint, secret = await self._webhooks.create(request.key_id, request.url, filters)
        return pb.CreateWebhookResponse(webhook=webhook_to_pb(endpoint), secret=secret)

    @translates_errors
    async def ListWebhooks(self, request: pb.ListWebhooksRequest, context: Context) -> pb.ListWebhooksResponse:
        endpoints = await self._webhooks.endpoints(request.key_id)
        return pb.ListWebhooksResponse(webhooks=[webhook_to_pb(e) for e in endpoints])

    @translates_errors
    async def DeleteWebhook(self, request: pb.DeleteWebhookRequest, context: Context) -> pb.DeleteWebhookResponse:
        await self._webhooks.delete(request.key_id, request.id)
        return pb.DeleteWebhookResponse()

    @translates_errors
    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        deliveries = await self._webhooks.log(request.key_id, request.id, request.limit)
        return pb.ListWebhookDeliveriesResponse(deliveries=[delivery_to_pb(d) for d in deliveries])

    @translates_errors
    async def TestWebhook(self, request: pb.TestWebhookRequest, context: Context) -> pb.TestWebhookResponse:
        remaining = context.time_remaining()  # the ping waits at most what is left of the caller's deadline
        timeout_s = None if remaining is None else max(remaining - PING_MARGIN_S, 0.1)
        delivery = await self._webhooks.ping(request.key_id, request.id, timeout_s)
        return pb.TestWebhookResponse(delivery=delivery_to_pb(delivery))
