"""Alert page cursors: they round-trip, hide the internal id, and refuse anything not sealed with the key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest
from hypothesis import given, strategies as st

from core.domain.errors import InvalidArgument
from core.services.indicator_queries import PageTokens

KEY = bytes(range(32))
TOKENS = PageTokens(KEY)


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def text(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@given(st.integers(0, 2**62), st.integers(1, 2**62))
def test_a_token_round_trips(triggered_ms: int, alert_id: int) -> None:
    assert TOKENS.decode(TOKENS.encode(triggered_ms, alert_id)) == (triggered_ms, alert_id)


def test_another_instance_with_the_same_secret_reads_it() -> None:
    assert PageTokens(KEY).decode(TOKENS.encode(1_764_656_460_000, 4242)) == (1_764_656_460_000, 4242)


def test_neither_the_id_nor_the_time_can_be_read_and_each_token_is_fresh() -> None:
    token = TOKENS.encode(1_764_656_460_000, 4242)
    assert struct.pack(">q", 4242) not in raw(token) and struct.pack(">q", 1_764_656_460_000) not in raw(token)
    assert "4242" not in token
    assert TOKENS.encode(1_764_656_460_000, 4242) != token  # a random nonce each time


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "",
        "AAAA",
        "é",
        text(struct.pack(">Bqq", 1, 1, 1)),  # an unsealed version-1 cursor
        text(b"\x03" + bytes(44)),  # the right version and length, sealed with nothing
    ],
)
def test_malformed_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument, match="malformed page_token"):
        TOKENS.decode(token)


@pytest.mark.parametrize("index", range(45))
def test_any_byte_changed_makes_the_token_invalid(index: int) -> None:
    sealed = bytearray(raw(TOKENS.encode(1_000, 7)))
    sealed[index] ^= 1
    with pytest.raises(InvalidArgument, match="malformed page_token"):
        TOKENS.decode(text(bytes(sealed)))


def test_a_truncated_or_extended_token_is_invalid() -> None:
    sealed = raw(TOKENS.encode(1_000, 7))
    for data in (sealed[:-1], sealed[:20], sealed + b"\x00"):
        with pytest.raises(InvalidArgument, match="malformed page_token"):
            TOKENS.decode(text(data))


def test_a_token_of_another_deployment_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="malformed page_token"):
        PageTokens(bytes(32)).decode(TOKENS.encode(1_000, 7))


def test_a_former_xor_pad_cursor_is_refused_as_expired() -> None:
    """Version 2: version, time, id XOR a keyed pad, a 12-byte HMAC; even a genuine one is refused."""
    body = struct.pack(">Bqq", 2, 1_000, 7 ^ 12345)
    old = text(body + hmac.digest(KEY, b"tag" + body, hashlib.sha256)[:12])
    with pytest.raises(InvalidArgument, match=r"expired page_token.*first page"):
        TOKENS.decode(old)
