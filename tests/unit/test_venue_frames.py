"""Venue frame helpers: the strict ISO-8601 timestamp parser (Coinbase's ``time`` format)."""

from __future__ import annotations

import pytest

from core.adapters.venues.frames import parse_timestamp_ms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-09-25T07:50:09Z", 1_695_628_209_000),
        ("2023-09-25T07:50:09.1Z", 1_695_628_209_100),
        ("2023-09-25T07:50:09.999999999Z", 1_695_628_209_999),  # truncated, never rounded into the next second
        ("2023-09-25T09:50:09.5+02:00", 1_695_628_209_500),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_parse_timestamp_ms(text: str, expected: int) -> None:
    assert parse_timestamp_ms(text) == expected


@pytest.mark.parametrize("text", ["2023-09-25 07:50:09Z", "2023-09-25T07:50:09", "2023-13-01T00:00:00Z", ""])
def test_parse_timestamp_ms_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp_ms(text)
