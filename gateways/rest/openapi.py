"""The OpenAPI 3.1 document of the REST gateway, written from the route declarations and the protos.

Every response schema comes from :func:`~common.projection.public_schema`
of the message the route projects (nested messages as ``$ref`` components),
and every parameter from its :class:`~gateways.rest.params.Param`; nothing
about a field is written here. The document is built once per app and
served as bytes. Pure code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from google.protobuf.descriptor import Descriptor

from common.projection import public_schema
from gateways.common.errors import ERROR_STATUS, ErrorCode
from gateways.rest import ratelimit
from gateways.rest.operations import Operation
from gateways.rest.params import CANONICAL_SYMBOL_PATTERN, CURSOR_PATTERN

OPENAPI_VERSION = "3.1.0"
TITLE = "Perseus market data"
SPEC_PATH = "/public/v1/openapi.json"
DOCS_PATH = "/docs"
ASYNCAPI_PATH = "/public/v1/asyncapi.json"  # the stream's document, as the WebSocket gateway serves it too
ERROR_STATUSES = (
    ErrorCode.VALIDATION_ERROR,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.NOT_FOUND,
    ErrorCode.RATE_LIMIT_EXCEEDED,
    ErrorCode.SERVICE_UNAVAILABLE,
    ErrorCode.INTERNAL_ERROR,
)
_INTEGER_HEADER = {"schema": {"type": "integer", "minimum": 0}}
RESPONSE_HEADERS: dict[str, Any] = {
    "X-Request-ID": {
        "description": "The request's id (the client's, when it sent a sane one)",
        "schema": {"type": "string"},
    },
    ratelimit.LIMIT_HEADER: {"description": "Units per minute of this key; 0: not limited", **_INTEGER_HEADER},
    ratelimit.REMAINING_HEADER: {"description": "Units left in the current minute", **_INTEGER_HEADER},
    ratelimit.RESET_HEADER: {"description": "Epoch second at which the minute ends; 0: not limited", **_INTEGER_HEADER},
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details", "request_id"],
            "properties": {
                "code": {"type": "string", "enum": [code.value for code in ErrorCode]},
                "message": {"type": "string"},
                "details": {"type": "object"},
                "request_id": {"type": "string"},
            },
        },
        "status": {"type": "integer"},
    },
}


def _ref(descriptor: Descriptor) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{descriptor.name}"}


def components(descriptors: Iterable[Descriptor]) -> dict[str, Any]:
    """Schemas of ``descriptors`` and of every message they nest, by message name."""
    schemas: dict[str, Any] = {}
    pending = list(descriptors)
    while pending:
        descriptor = pending.pop()
        if descriptor.name in schemas:
            continue
        found: list[Descriptor] = []

        def ref(nested: Descriptor, found: list[Descriptor] = found) -> dict[str, Any]:
            found.append(nested)
            return _ref(nested)

        schemas[descriptor.name] = _declare_symbol(public_schema(descriptor, ref=ref))
        pending.extend(found)
    return dict(sorted(schemas.items()))


def _declare_symbol(schema: dict[str, Any]) -> dict[str, Any]:
    """A ``symbol`` field is always canonical (``BTC-USD``): the document says so with its pattern."""
    field = schema.get("properties", {}).get("symbol")
    if field == {"type": "string"}:
        field["pattern"] = CANONICAL_SYMBOL_PATTERN
    return schema


HEALTH_PATH = "/health"
_STATES = {"type": "string", "enum": ["up", "down", "unknown"]}
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A gateway's health (docs/design/health.md); the same body with 200 (ok) and 503 (degraded).",
    "required": [
        "status",
        "mode",
        "process",
        "version",
        "uptime_seconds",
        "core_uptime_seconds",
        "services",
        "components",
        "timestamp",
    ],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "mode": {
            "description": "The answering core's runtime mode; null while no core answers",
            "anyOf": [{"type": "string", "enum": ["exchange", "pw-host"]}, {"type": "null"}],
        },
        "process": {"type": "string", "enum": ["rest", "ws"]},
        "version": {"type": "string"},
        "uptime_seconds": {"type": "number", "minimum": 0, "description": "How long this gateway has run"},
        "core_uptime_seconds": {
            "description": "How long the answering core has run; null while no core answers",
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "null"}],
        },
        "services": {
            "type": "object",
            "description": "Each dependency's state",
            "required": ["core", "redis", "postgres"],
            "properties": {"core": _STATES, "redis": _STATES, "postgres": _STATES},
            "additionalProperties": False,
        },
        "components": {
            "type": "object",
            "description": "Each long-lived task, `core:<name>` or `<process>:<name>`",
            "additionalProperties": {"type": "string", "enum": ["up", "degraded"]},
        },
        "exchanges": {
            "type": "object",
            "description": "Exchange mode only: each venue feed of the answering core, by exchange name",
            "additionalProperties": {
                "type": "object",
                "required": ["state", "connected", "last_message_at"],
                "properties": {
                    "state": {
                        "type": "string",
                        "enum": ["connecting", "connected", "reconnecting", "stopped", "unknown"],
                    },
                    "connected": {"type": "boolean"},
                    "last_message_at": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
                },
                "additionalProperties": False,
            },
        },
        "timestamp": {"type": "string", "format": "date-time"},
    },
    "additionalProperties": False,
}


def _health_path() -> dict[str, Any]:
    """``GET /health``: open (no key), never rate-limited, answered from a one-second cache."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}
    headers = {"X-Request-ID": RESPONSE_HEADERS["X-Request-ID"]}
    return {
        "get": {
            "operationId": "getHealth",
            "summary": "Health of the gateway, its core and stores",
            "description": (
                "Status per dependency and component, the core's runtime mode, uptimes and, in exchange mode, "
                "each venue's connection state and last message time. Open (no API key); the answer is cached "
                "for one second."
            ),
            "tags": ["health"],
            "parameters": [],
            "security": [],
            "responses": {
                "200": {
                    "description": "ok: the core answers, every store is up, no task is degraded",
                    "headers": headers,
                    "content": body,
                },
                "503": {"description": "degraded: something above is not", "headers": headers, "content": body},
            },
        }
    }


def _body_schema(operation: Operation) -> dict[str, Any]:
    item = _ref(operation.data)
    properties: dict[str, Any] = {"data": {"type": "array", "items": item} if operation.many else item}
    required = ["data"]
    if operation.paged:
        properties["meta"] = {
            "type": "object",
            "required": ["next_cursor", "limit"],
            "properties": {
                "next_cursor": {"anyOf": [{"type": "string", "pattern": CURSOR_PATTERN}, {"type": "null"}]},
                "limit": {"type": "integer"},
            },
            "additionalProperties": False,
        }
        required.append("meta")
    elif operation.meta:
        properties["meta"] = {
            "type": "object",
            "required": [name for name, _ in operation.meta],
            "properties": dict(operation.meta),
            "additionalProperties": False,
        }
        required.append("meta")
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


def _error_response(code: ErrorCode) -> dict[str, Any]:
    headers = dict(RESPONSE_HEADERS)
    if code is ErrorCode.RATE_LIMIT_EXCEEDED:
        headers["Retry-After"] = {"description": "Seconds until the limit resets", "required": True, **_INTEGER_HEADER}
    return {
        "description": code.value,
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _content(operation: Operation) -> dict[str, Any]:
    if not operation.streamed:
        return {"application/json": {"schema": _body_schema(operation)}}
    line = f"One item per line, each the public {operation.data.name} (see components)"
    return {media: {"schema": {"type": "string", "description": line}} for media in operation.streamed}


def _operation(operation: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": operation.summary,
            "headers": RESPONSE_HEADERS,
            "content": _content(operation),
        }
    }
    for code in ERROR_STATUSES:
        responses[str(ERROR_STATUS[code])] = _error_response(code)
    return {
        "operationId": operation.name,
        "summary": operation.summary,
        "description": f"{operation.description}\n\nRate-limit cost: {operation.cost} unit(s).",
        "tags": [operation.tag],
        "parameters": [param.openapi() for param in operation.params],
        "responses": responses,
    }


def openapi_document(operations: Iterable[Operation], *, version: str) -> dict[str, Any]:
    operations = list(operations)
    paths: dict[str, Any] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation)
    schemas = components(op.data for op in operations)
    schemas["Error"] = ERROR_SCHEMA
    schemas["Health"] = HEALTH_SCHEMA
    paths[HEALTH_PATH] = _health_path()
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": version,
            "description": (
                "Public market data: candles, trade signals, prices and consensus. Every body is"
                ' `{"data": …}` (pages add `meta`); prices and volumes are decimal strings; times are'
                " ISO-8601 UTC. Send your key as `X-API-Key` or `Authorization: Bearer`. Limits are per key"
                " and minute (free 1000, pro 10000 units); each route's cost is in its description."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def openapi_bytes(operations: Iterable[Operation], *, version: str) -> bytes:
    return orjson.dumps(openapi_document(operations, version=version), option=orjson.OPT_INDENT_2)
