"""Alert page cursors: they round-trip, hide the internal id, and refuse anything not made with the key."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import given, strategies as st

from core.domain.errors import InvalidArgument
from core.services.indicator_queries import PageTokens

KEY = bytes(range(32))
TOKENS = PageTokens(KEY)


@given(st.integers(0, 2**62), st.integers(1, 2**62))
def test_a_token_round_trips(triggered_ms: int, alert_id: int) -> None:
    assert TOKENS.decode(TOKENS.encode(triggered_ms, alert_id)) == (triggered_ms, alert_id)


def test_the_id_cannot_be_read_from_the_token() -> None:
    token = TOKENS.encode(1_764_656_460_000, 4242)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert struct.pack(">q", 4242) not in raw
    assert "4242" not in token
    assert TOKENS.encode(1_764_656_460_000, 4242) != TOKENS.encode(1_764_656_460_000, 4243)


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "",
        "AAAA",
        base64.urlsafe_b64encode(struct.pack(">Bqq", 1, 1, 1)).decode(),  # an unsealed version-1 cursor
    ],
)
def test_malformed_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument, match="malformed page_token"):
        TOKENS.decode(token)


def test_a_tampered_or_foreign_token_is_invalid() -> None:
    token = TOKENS.encode(1_000, 7)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[10] ^= 1
    with pytest.raises(InvalidArgument):
        TOKENS.decode(base64.urlsafe_b64encode(bytes(raw)).decode())
    with pytest.raises(InvalidArgument):
        PageTokens(bytes(32)).decode(token)
