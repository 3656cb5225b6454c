"""Reading venue frames exactly: pure helpers shared by the venue protocols.

Numbers never pass through a binary float: JSON is parsed with ``parse_float=Decimal``
(``NaN`` and ``Infinity`` are refused), and decimal fields are read straight from
their text. Each helper raises :class:`VenueError` (non-fatal) naming the venue and
the field it could not read; what a venue accepts (decimal strings, JSON numbers or
both; the timestamp grammar) is a parameter, so each venue keeps its documented
format. :func:`parse_timestamp_ms`, the timestamp parser beneath the field reader,
raises ``ValueError``.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from core.adapters.venues.base import VenueError

MS_DIGITS = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:Z|([+-])(\d{2}):(\d{2}))")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in frame")


def load_object(frame: str | bytes, venue: str) -> dict[str, Any]:
    """A frame's JSON object, with every non-integer number as an exact ``Decimal`` (``NaN``/``Infinity`` refused)."""
    try:
        message = json.loads(frame, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise VenueError(f"unreadable {venue} frame: {exc}") from exc
    if not isinstance(message, dict):
        raise VenueError(f"{venue} frame is not a JSON object: {type(message).__name__}")
    return message


def decimal_field(
    payload: Mapping[str, Any],
    key: str,
    venue: str,
    *,
    positive: bool = True,
    strings: bool = True,
    numbers: bool = True,
) -> Decimal:
    """A finite decimal, positive (or non-negative for volumes: ``positive=False``), read exactly from a
    decimal string (``strings``) and/or a JSON number parsed by :func:`loads` (``numbers``)."""
    raw = payload.get(key)
    if isinstance(raw, bool) or not (
        (strings and isinstance(raw, str)) or (numbers and isinstance(raw, int | Decimal))
    ):
        kind = "decimal string" if strings else "number"
        raise VenueError(f"{venue} field {key!r} is not a {kind}: {raw!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise VenueError(f"{venue} field {key!r} is not a decimal: {raw!r}") from exc
    if not value.is_finite() or value < 0 or (positive and value == 0):
        raise VenueError(f"{venue} field {key!r} is out of range: {raw!r}")
    return value


def integer_field(payload: Mapping[str, Any], key: str, venue: str) -> int:
    """A JSON integer (a boolean is not one)."""
    raw = payload.get(key)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise VenueError(f"{venue} field {key!r} is not an integer: {raw!r}")
    return raw


def parse_timestamp_ms(text: str, *, strict: bool = True) -> int:
    """UTC epoch milliseconds of an ISO-8601 timestamp with a zone, such as ``2023-09-25T07:50:10.123456Z``;
    digits below the millisecond are truncated, never rounded. ``strict``: exactly
    ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`` with up to nine fraction digits (nanoseconds);
    otherwise any zoned form ``datetime.fromisoformat`` reads. Raises ``ValueError``."""
    if not strict:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError(f"not a zoned timestamp: {text!r}")
        return (moment - _EPOCH) // _MILLISECOND
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(f"not an ISO-8601 UTC timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)  # validates the ranges
    seconds = calendar.timegm(moment.utctimetuple())
    sign, offset_h, offset_m = match.group(8, 9, 10)
    if sign is not None:
        offset = int(offset_h) * 3600 + int(offset_m) * 60
        seconds -= offset if sign == "+" else -offset
    fraction = (match.group(7) or "")[:MS_DIGITS].ljust(MS_DIGITS, "0")
    return seconds * 1000 + int(fraction)


def timestamp_field(payload: Mapping[str, Any], key: str, venue: str, *, strict: bool = True) -> int:
    """UTC epoch milliseconds of a timestamp string, as :func:`parse_timestamp_ms` reads it."""
    raw = payload.get(key)
    try:
        if isinstance(raw, str):
            return parse_timestamp_ms(raw, strict=strict)
    except ValueError:
        pass
    raise VenueError(f"{venue} field {key!r} is not an ISO-8601 UTC timestamp: {raw!r}")
