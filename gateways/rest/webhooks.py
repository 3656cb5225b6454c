"""Alert webhooks (issue 21): ``/public/v1/webhooks`` and its sub-routes, answered by the core's
WebhookService (docs/guides/webhooks.md, docs/design/webhooks.md).

``POST /public/v1/webhooks`` registers an endpoint; its answer (``201``) is the only one that carries the
signing ``secret``. ``GET`` lists the key's endpoints, ``DELETE /webhooks/{id}`` removes one (``204``),
``GET /webhooks/{id}/deliveries`` is its delivery log and ``POST /webhooks/{id}/test`` sends a signed ping.
A key sees only its own endpoints: another key's id is ``404``. Each call costs one unit of the key's limit.

Bodies are projected like every other route (the ``(visibility)`` whitelist of ``webhook_service.proto``);
the OpenAPI paths are written here too (:func:`openapi_paths`), beside the read operations' generated ones.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import orjson
from sanic import Blueprint, HTTPResponse

from common.projection import descriptor_of, projector
from gateways.common.errors import ERROR_STATUS, ErrorCode, ValidationFailed
from gateways.common.http import request_id_of
from gateways.rest.context import RestRequest
from gateways.rest.guard import authenticate, spend
from gateways.rest.openapi import components
from gateways.rest.ratelimit import BASE_COST
from gateways.rest.reads import raw_json
from perseus.marketdata.v1 import webhook_service_pb2 as pb

blueprint = Blueprint("webhooks", url_prefix="/public/v1")

COLLECTION = "/public/v1/webhooks"
ONE = "/public/v1/webhooks/{id}"
DELIVERIES = "/public/v1/webhooks/{id}/deliveries"
TEST = "/public/v1/webhooks/{id}/test"
PATHS = (COLLECTION, ONE, DELIVERIES, TEST)
SANIC_PATHS = tuple(path.replace("{id}", "<webhook_id>") for path in PATHS)
FILTERS = ("exchange", "symbol", "timeframe", "signal_type")
MAX_BODY_BYTES = 8192
MAX_LOG = 100
DEFAULT_LOG = 50

_webhook = projector(descriptor_of(pb.Webhook))
_delivery = projector(descriptor_of(pb.WebhookDelivery))


async def _call(request: RestRequest, method: str, build: Callable[[], Any]) -> Any:
    """The core's answer to ``method`` for the key that asked: the key first (401), then ``build()`` the
    request (400), then the limit (429), then the call."""
    api_key = await authenticate(request)
    message = build()
    await spend(request, api_key, BASE_COST)
    message.key_id = api_key.id
    core = request.app.ctx.services.core
    return await core.unary(getattr(core.webhooks, method), message, request_id=request_id_of(request))


def _create_request(body: bytes) -> pb.CreateWebhookRequest:
    if len(body) > MAX_BODY_BYTES:
        raise ValidationFailed(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body or b"null")
    except (ValueError, RecursionError):
        raise ValidationFailed("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ValidationFailed('the body must be an object: {"url": "https://…", "symbol": …}')
    unknown = sorted(set(document) - {"url", *FILTERS})
    if unknown:
        raise ValidationFailed(f"unknown field {unknown[0]!r}", details={"field": unknown[0]})
    url = document.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ValidationFailed("`url` is required: the https:// URL to post alerts to", details={"field": "url"})
    message = pb.CreateWebhookRequest(url=url)
    for name in FILTERS:
        value = document.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValidationFailed(f"`{name}` must be a string or null", details={"field": name})
        setattr(message, name, value)
    return message


def _webhook_id(value: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise ValidationFailed("webhook id too long", details={"field": "id"})
    return value


@blueprint.post("/webhooks", name="create_webhook")
async def create_webhook(request: RestRequest) -> HTTPResponse:
    reply: pb.CreateWebhookResponse = await _call(request, "CreateWebhook", lambda: _create_request(request.body))
    data = {**_webhook(reply.webhook), "secret": reply.secret}
    return HTTPResponse(orjson.dumps({"data": data}), status=201, content_type="application/json")


@blueprint.get("/webhooks", name="list_webhooks")
async def list_webhooks(request: RestRequest) -> HTTPResponse:
    reply: pb.ListWebhooksResponse = await _call(request, "ListWebhooks", pb.ListWebhooksRequest)
    return raw_json(orjson.dumps({"data": [_webhook(w) for w in reply.webhooks]}))


@blueprint.delete("/webhooks/<webhook_id>", name="delete_webhook")
async def delete_webhook(request: RestRequest, webhook_id: str) -> HTTPResponse:
    await _call(request, "DeleteWebhook", lambda: pb.DeleteWebhookRequest(id=_webhook_id(webhook_id)))
    return HTTPResponse(status=204)


@blueprint.get("/webhooks/<webhook_id>/deliveries", name="list_webhook_deliveries")
async def list_deliveries(request: RestRequest, webhook_id: str) -> HTTPResponse:
    def build() -> pb.ListWebhookDeliveriesRequest:
        raw = request.args.get("limit", str(DEFAULT_LOG))
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LOG:
            raise ValidationFailed(f"limit must be an integer from 1 to {MAX_LOG}", details={"field": "limit"})
        return pb.ListWebhookDeliveriesRequest(id=_webhook_id(webhook_id), limit=int(raw))

    reply: pb.ListWebhookDeliveriesResponse = await _call(request, "ListWebhookDeliveries", build)
    return raw_json(orjson.dumps({"data": [_delivery(d) for d in reply.deliveries]}))


@blueprint.post("/webhooks/<webhook_id>/test", name="test_webhook")
async def test_webhook(request: RestRequest, webhook_id: str) -> HTTPResponse:
    def build() -> pb.TestWebhookRequest:
        return pb.TestWebhookRequest(id=_webhook_id(webhook_id))

    reply: pb.TestWebhookResponse = await _call(request, "TestWebhook", build)
    return raw_json(orjson.dumps({"data": _delivery(reply.delivery)}))


# ------------------------------------------------------------------------------------------------ OpenAPI


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: ErrorCode) -> dict[str, Any]:
    return {
        str(ERROR_STATUS[code]): {
            "description": code.value,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for code in (ErrorCode.UNAUTHORIZED, ErrorCode.RATE_LIMIT_EXCEEDED, *codes)
    }


def _ok(description: str, schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    body = {"type": "object", "required": ["data"], "properties": {"data": schema}}
    return {status: {"description": description, "content": {"application/json": {"schema": body}}}}


MAX_ID_LENGTH = 64
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": MAX_ID_LENGTH},
    "description": "Webhook id",
}
_FILTER_TEXT = "Only alerts with this {} (omit or null: any)"
_CREATE_BODY = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {
            "type": "string",
            "maxLength": 2048,
            "description": "https:// URL to post to. Private, loopback and link-local hosts are refused unless the"
            " deployment lists them (PERSEUS_WEBHOOK_ALLOW_HOSTS), which also allows http:// to them.",
        },
        **{name: {"type": ["string", "null"], "description": _FILTER_TEXT.format(name)} for name in FILTERS},
    },
}


def openapi_paths() -> dict[str, Any]:
    """The webhook routes' OpenAPI paths (their schemas: :func:`openapi_schemas`)."""
    webhook, delivery = _ref("Webhook"), _ref("WebhookDelivery")
    created = _ref("CreatedWebhook")  # a Webhook and its secret (document_with_webhooks)
    tag = ["webhooks"]
    return {
        COLLECTION: {
            "post": {
                "operationId": "create_webhook",
                "summary": "Register a webhook",
                "description": "Every trade signal matching the filters is posted to `url`, signed with the secret"
                " returned here (once). See the webhooks guide for the signature. Rate-limit cost: 1 unit.",
                "tags": tag,
                "parameters": [],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _CREATE_BODY}}},
                "responses": {
                    **_ok("The new webhook and its secret", created, "201"),
                    **_errors(ErrorCode.VALIDATION_ERROR, ErrorCode.FORBIDDEN),
                },
            },
            "get": {
                "operationId": "list_webhooks",
                "summary": "This key's webhooks",
                "description": "Without their secrets. Rate-limit cost: 1 unit.",
                "tags": tag,
                "parameters": [],
                "responses": {**_ok("The webhooks", {"type": "array", "items": webhook}), **_errors()},
            },
        },
        ONE: {
            "delete": {
                "operationId": "delete_webhook",
                "summary": "Delete a webhook",
                "description": "Its pending deliveries go with it. Rate-limit cost: 1 unit.",
                "tags": tag,
                "parameters": [_ID],
                "responses": {
                    "204": {"description": "Deleted"},
                    **_errors(ErrorCode.VALIDATION_ERROR, ErrorCode.NOT_FOUND),
                },
            }
        },
        DELIVERIES: {
            "get": {
                "operationId": "list_webhook_deliveries",
                "summary": "Delivery log of a webhook",
                "description": "Its newest deliveries, newest first, with their attempts and last answer."
                " Rate-limit cost: 1 unit.",
                "tags": tag,
                "parameters": [
                    _ID,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LOG, "default": DEFAULT_LOG},
                    },
                ],
                "responses": {
                    **_ok("The deliveries", {"type": "array", "items": delivery}),
                    **_errors(ErrorCode.VALIDATION_ERROR, ErrorCode.NOT_FOUND),
                },
            }
        },
        TEST: {
            "post": {
                "operationId": "test_webhook",
                "summary": "Send a signed ping",
                "description": 'Posts `{"type": "ping"}`, signed like every event, now; answers how it went.'
                " Rate-limit cost: 1 unit.",
                "tags": tag,
                "parameters": [_ID],
                "responses": {
                    **_ok("The ping's delivery", delivery),
                    **_errors(ErrorCode.VALIDATION_ERROR, ErrorCode.NOT_FOUND),
                },
            }
        },
    }


def document_with_webhooks(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (the generated OpenAPI) with the webhook paths and the schemas they name."""
    document["paths"].update(openapi_paths())
    schemas = components([descriptor_of(pb.Webhook), descriptor_of(pb.WebhookDelivery)])
    created = copy.deepcopy(schemas["Webhook"])  # the creation answer: a Webhook and its secret
    created["properties"]["secret"] = {"type": "string", "description": "The signing secret: in this answer only"}
    created["required"] = [*created.get("required", []), "secret"]
    schemas["CreatedWebhook"] = created
    document["components"]["schemas"].update(schemas)
    return document
