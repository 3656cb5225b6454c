"""Protobuf wire bytes built by hand, for answers whose parts are stored already serialized.

Candles sit in Redis and stream events in their history as serialized
messages; an answer made of them is their concatenation with the right field
tags, never parsed and serialized again. Handlers may therefore return
``bytes``, and :func:`to_wire` (the response serializer of such methods)
passes bytes through and serializes anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field (a message or bytes) with its tag."""
    return varint(field_number << 3 | 2) + varint(len(payload)) + payload


def repeated_field_bytes(field_number: int, messages: Sequence[bytes]) -> bytes:
    """The wire bytes of a repeated message field holding already-serialized ``messages``."""
    tag = varint(field_number << 3 | 2)
    return b"".join(tag + varint(len(m)) + m for m in messages)


def to_wire(response: Any) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()
