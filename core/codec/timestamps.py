"""Epoch milliseconds ↔ ``google.protobuf.Timestamp``: the one conversion every message and event uses.

:func:`set_ms` fills a Timestamp field in place, which on the hot paths (a
``price_update`` per tick, a candle per stored row) is much cheaper than
building a Timestamp and copying it into its parent; :func:`ms_timestamp` is
the same conversion for the places that need a message of their own. The
result is what ``Timestamp.FromMilliseconds`` gives, byte for byte (floor
division, so times before 1970 keep non-negative nanos).
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

MS_PER_S = 1000
NS_PER_MS = 1_000_000


def set_ms(target: Timestamp, ms: int) -> Timestamp:
    """Fill ``target`` (a Timestamp field of a message, or one of its own) with ``ms``; returns it."""
    target.seconds = ms // MS_PER_S
    target.nanos = (ms % MS_PER_S) * NS_PER_MS
    return target


def ms_timestamp(ms: int) -> Timestamp:
    return set_ms(Timestamp(), ms)


def timestamp_ms(message: Message, field: str) -> int | None:
    """The epoch milliseconds of ``message.field``; None when the field is not set."""
    if not message.HasField(field):
        return None
    value: Timestamp = getattr(message, field)
    return value.seconds * MS_PER_S + value.nanos // NS_PER_MS


def datetime_timestamp(value: datetime | None) -> Timestamp | None:
    """A stored time (a directory's heartbeat, a key's creation) as a Timestamp; None stays unset."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts
