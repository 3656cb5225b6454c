"""What every public read route does around its core call: parameters, admission, the call, the body.

:func:`body_of` is the only way a route turns a core reply into a response:
``{"data": …}`` built by :func:`~common.projection.to_public`, so no
route names a field and no internal field can slip through.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from google.protobuf.message import Message
from sanic import HTTPResponse

from common.projection import projector
from gateways.common.http import JSON_CONTENT_TYPE, request_id_of
from gateways.rest.context import RestRequest
from gateways.rest.operations import Operation


async def call(request: RestRequest, method_name: str, message: Message) -> Any:
    core = request.app.ctx.services.core
    return await core.unary(getattr(core.market_data, method_name), message, request_id=request_id_of(request))


def body_of(items: Message | Iterable[Message], operation: Operation, meta: dict[str, Any] | None = None) -> bytes:
    project = projector(operation.data)
    data: Any = project(items) if isinstance(items, Message) else [project(item) for item in items]
    document: dict[str, Any] = {"data": data}
    if meta is not None:
        document["meta"] = meta
    return orjson.dumps(document)


class ProjectedItems:
    """:func:`body_of` for a list of one message type, with each item's public JSON kept by its serialized
    bytes: the projection is a function of those bytes alone, and the same items come back in many answers
    (a candle is in every read whose range covers it, whatever its ``end`` or ``limit``), so a read that
    misses the body cache still projects only the items not seen lately (issue 18.5: the projection was the
    largest part of the gateway's time on such reads). At most ``max_items`` are kept (about 450 B each for a
    candle); when full, the memo starts again empty. The body is byte for byte :func:`body_of`'s."""

    def __init__(self, operation: Operation, max_items: int) -> None:
        self._project = projector(operation.data)
        self._max_items = max_items
        self._texts: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self._texts)

    def body(self, items: Iterable[Message]) -> bytes:
        texts, parts = self._texts, []
        for item in items:
            raw = item.SerializeToString()
            text = texts.get(raw)
            if text is None:
                if len(texts) >= self._max_items:
                    texts.clear()
                text = texts[raw] = orjson.dumps(self._project(item))
            parts.append(text)
        return b'{"data":[' + b",".join(parts) + b"]}"


LATENCY_MS_SCHEMA: dict[str, Any] = {
    "type": "number",
    "minimum": 0,
    "description": "Milliseconds from the request's arrival at the gateway to this answer",
}


def latency_ms(request: RestRequest) -> float:
    """Milliseconds since the request arrived (``begin_request`` noted it), to the microsecond."""
    started = getattr(request.ctx, "started", None)
    elapsed = time.perf_counter() - started if isinstance(started, float) else 0.0
    return round(max(elapsed, 0.0) * 1000, 3)


def raw_json(body: bytes) -> HTTPResponse:
    return HTTPResponse(body, content_type=JSON_CONTENT_TYPE)


def set_time(message: Message, field: str, ms: int | None) -> None:
    if ms is not None:
        getattr(message, field).FromMilliseconds(ms)
