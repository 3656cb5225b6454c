"""HTTP primitives both gateways share: the request id of a request and orjson responses.

A request keeps the ``X-Request-ID`` its client sent when that value is sane
(short, printable, no separators that could forge a header or a log field);
otherwise it gets a fresh one. The id is decided once per request and kept on
``request.ctx``, so middleware, handlers and the error handler all agree.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from sanic import HTTPResponse, Request

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
JSON_CONTENT_TYPE = "application/json"

_SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{{0,{MAX_REQUEST_ID_LENGTH - 1}}}", re.ASCII)


def clean_request_id(value: str | None) -> str | None:
    """``value`` when it is safe to echo back, else None."""
    if value is None:
        return None
    value = value.strip()
    return value if _SANE_REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_of(request: Request[Any, Any]) -> str:
    """The request's id: the client's when sane, else a new one; the same on every call."""
    known = getattr(request.ctx, "request_id", None)
    if isinstance(known, str):
        return known
    request_id = clean_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    request.ctx.request_id = request_id
    return request_id


def json_response(body: object, *, status: int = 200, headers: Mapping[str, str] | None = None) -> HTTPResponse:
    """A JSON response serialized with orjson (UTC datetimes, no float surprises)."""
    return HTTPResponse(
        orjson.dumps(body, option=orjson.OPT_UTC_Z),
        status=status,
        headers=dict(headers or {}),
        content_type=JSON_CONTENT_TYPE,
    )
