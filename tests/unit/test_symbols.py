"""Canonical symbols: BTC-USD from any accepted spelling, a clear ValueError for anything else."""

from __future__ import annotations

import pytest

from core.domain.errors import InvalidArgument
from core.domain.symbols import (
    MAX_ASSET_LENGTH,
    InvalidSymbol,
    canonical_symbol,
    is_canonical_symbol,
    split_symbol,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BTC-USD", "BTC-USD"),
        ("BTC/USD", "BTC-USD"),
        ("btc/usd", "BTC-USD"),
        ("btc-usd", "BTC-USD"),
        ("Eth-Usdt", "ETH-USDT"),
        ("  sol/usd \n", "SOL-USD"),
        ("1INCH-USD", "1INCH-USD"),
        ("A-B", "A-B"),
        ("X" * MAX_ASSET_LENGTH + "/" + "9" * MAX_ASSET_LENGTH, "X" * MAX_ASSET_LENGTH + "-" + "9" * MAX_ASSET_LENGTH),
    ],
)
def test_accepted_spellings_become_canonical(text: str, expected: str) -> None:
    assert canonical_symbol(text) == expected
    assert canonical_symbol(canonical_symbol(text)) == expected  # idempotent
    assert is_canonical_symbol(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "BTC",
        "BTCUSD",
        "BTC-",
        "-USD",
        "/",
        "BTC--USD",
        "BTC-USD-EUR",
        "BTC/USD/EUR",
        "BTC-/USD",
        "BTC_USD",
        "BTC USD",
        "BTC- USD",
        "BT C-USD",
        "BTC.X-USD",
        "BTC:USD",
        "{BTC}-USD",
        "BTC-USD*",
        "X" * (MAX_ASSET_LENGTH + 1) + "-USD",
        "BTC-" + "Y" * (MAX_ASSET_LENGTH + 1),
        "b\u0131t-usd",  # dotless i upper-cases to an ASCII "I": still not ASCII input
        "ÉTH-USD",
        "BTC-USD\x00",
        "B" * 10_000,
    ],
)
def test_garbage_is_rejected_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="symbol") as info:
        canonical_symbol(text)
    assert isinstance(info.value, InvalidSymbol)
    assert isinstance(info.value, InvalidArgument)  # the gRPC edge maps it to INVALID_ARGUMENT
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 200  # a huge input is not echoed whole


def test_a_non_string_is_rejected_cleanly() -> None:
    with pytest.raises(InvalidSymbol, match="string"):
        canonical_symbol(None)  # type: ignore[arg-type]


def test_split_returns_upper_case_base_and_quote() -> None:
    assert split_symbol("eth/btc") == ("ETH", "BTC")
    assert split_symbol("ETH-BTC") == ("ETH", "BTC")


@pytest.mark.parametrize("text", ["BTC/USD", "btc-usd", "BTC-USD ", "BTC"])
def test_only_the_exact_canonical_form_is_canonical(text: str) -> None:
    assert not is_canonical_symbol(text)
