"""What every public read route does around its core call: parameters, admission, the call, the body.

:func:`body_of` is the only way a route turns a core reply into a response:
``{"data": …}`` built by :func:`~common.projection.to_public`, so no
route names a field and no internal field can slip through.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from google.protobuf.message import DecodeError, Message
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

    def wire_body(self, items: Sequence[bytes], message_type: type[Message]) -> bytes:
        """:meth:`body` for items given as their wire bytes (:func:`repeated_slices` of a reply): an item
        already memoized is neither parsed nor serialized again; any other is parsed once to be projected."""
        texts = self._texts
        known = texts.get
        parts = [known(raw) for raw in items]
        if None in parts:  # project the items not memoized
            for index, raw in enumerate(items):
                if parts[index] is None:
                    if len(texts) >= self._max_items:
                        texts.clear()
                    parts[index] = texts[raw] = orjson.dumps(self._project(message_type.FromString(raw)))
        return b'{"data":[' + b",".join(parts) + b"]}"  # type: ignore[arg-type]


def repeated_slices(data: bytes, field_number: int) -> list[bytes]:
    """The payloads of every length-delimited ``field_number`` in ``data`` (a serialized message), in order:
    the wire bytes of a repeated message field's items, as the parser would read them. Every other field
    (an unknown one too) is skipped by its wire type; malformed bytes raise :class:`DecodeError`.

    An item under 16 KiB of a field numbered below 16 (a candle in a reply: one key byte, a length of one or
    two bytes) takes the short path; anything else is read field by field."""
    items: list[bytes] = []
    append = items.append
    tag = field_number << 3 | 2 if field_number < 16 else -1
    pos, end = 0, len(data)
    try:
        while pos < end:
            if data[pos] == tag:
                length = data[pos + 1]
                if length < 0x80:
                    pos += 2
                else:
                    high = data[pos + 2]
                    if high >= 0x80:  # 16 KiB or more: the long way
                        length, pos = _varint(data, pos + 1, end)
                    else:
                        length = (length & 0x7F) | high << 7
                        pos += 3
                append(data[pos : pos + length])
                pos += length
                continue
            key = data[pos]
            pos += 1
            if key & 0x80:
                key, pos = _varint(data, pos - 1, end)
            if key < 8:
                raise DecodeError("field number 0")
            if key & 7 == 2:
                length, pos = _varint(data, pos, end)
                if key >> 3 == field_number:
                    append(data[pos : pos + length])
                pos += length
            else:
                pos = _skip(data, pos, key, end)
    except IndexError:
        raise DecodeError("truncated message") from None
    if pos > end:  # an item's length ran past the end (the slice was cut short)
        raise DecodeError("truncated length-delimited field")
    return items


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise DecodeError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _skip(data: bytes, pos: int, key: int, end: int) -> int:
    """The position after the value of a field whose key (not length-delimited) was just read."""
    if key >> 3 == 0:
        raise DecodeError("field number 0")
    wire_type = key & 7
    if wire_type == 0:
        return _varint(data, pos, end)[1]
    if wire_type == 1:
        pos += 8
    elif wire_type == 5:
        pos += 4
    elif wire_type == 3:  # a group: its fields up to the matching end-group key
        while True:
            inner, pos = _varint(data, pos, end)
            if inner & 7 == 4:
                if inner >> 3 != key >> 3:
                    raise DecodeError("mismatched end of group")
                return pos
            if inner & 7 == 2:
                length, pos = _varint(data, pos, end)
                pos += length
                if pos > end:
                    raise DecodeError("truncated length-delimited field")
            else:
                pos = _skip(data, pos, inner, end)
    else:
        raise DecodeError(f"wire type {wire_type}")
    if pos > end:
        raise DecodeError("truncated fixed-width field")
    return pos


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
