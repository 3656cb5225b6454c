"""Canonical trading-pair symbols: ``BTC-USD``, accepted as ``BTC/USD`` or in lower case.

Pure code. Every place that reads a symbol from the outside (REST paths, WS
channels, ingested feeds, exchange adapters) passes it through
:func:`canonical_symbol`, so one pair has exactly one spelling in PostgreSQL,
Redis keys and channel names.
"""

from __future__ import annotations

import re

from core.domain.errors import InvalidArgument

SEPARATOR = "-"
ACCEPTED_SEPARATORS = ("-", "/")
MAX_ASSET_LENGTH = 20
MAX_SYMBOL_LENGTH = 2 * MAX_ASSET_LENGTH + 1
_ASSET = re.compile(rf"[A-Z0-9]{{1,{MAX_ASSET_LENGTH}}}")
CANONICAL_SYMBOL_PATTERN = rf"[A-Z0-9]{{1,{MAX_ASSET_LENGTH}}}-[A-Z0-9]{{1,{MAX_ASSET_LENGTH}}}"
_CANONICAL = re.compile(CANONICAL_SYMBOL_PATTERN)


class InvalidSymbol(InvalidArgument, ValueError):
    """A symbol that is not ``BASE-QUOTE`` (or ``BASE/QUOTE``) of 1-20 letters or digits each."""


def split_symbol(text: str) -> tuple[str, str]:
    """``(base, quote)`` of a symbol in any accepted spelling, upper case.

    Raises :class:`InvalidSymbol` (a ``ValueError``) with a message fit for a client.
    """
    if not isinstance(text, str):
        raise InvalidSymbol(f"symbol must be a string (got {type(text).__name__})")
    value = text.strip()
    shown = value if len(value) <= MAX_SYMBOL_LENGTH else value[:MAX_SYMBOL_LENGTH] + "…"
    if not value:
        raise InvalidSymbol("symbol is empty; expected BASE-QUOTE such as BTC-USD")
    # ASCII first: str.upper() maps some non-ASCII letters onto ASCII ones (dotless i -> "I").
    if not value.isascii() or len(value) > MAX_SYMBOL_LENGTH:
        raise InvalidSymbol(f"malformed symbol {shown!r}; expected BASE-QUOTE such as BTC-USD")
    separators = [ch for ch in value if ch in ACCEPTED_SEPARATORS]
    if len(separators) != 1:
        raise InvalidSymbol(f"malformed symbol {shown!r}; expected exactly one '-' or '/' as in BTC-USD")
    base, _, quote = value.upper().partition(separators[0])
    for part in (base, quote):
        if not _ASSET.fullmatch(part):
            raise InvalidSymbol(
                f"malformed symbol {shown!r}; base and quote must be 1-{MAX_ASSET_LENGTH} letters or digits"
            )
    return base, quote


def canonical_symbol(text: str) -> str:
    """The canonical ``BASE-QUOTE`` form: ``canonical_symbol("btc/usd") == "BTC-USD"``."""
    if isinstance(text, str) and _CANONICAL.fullmatch(text):
        return text  # fast path: already canonical
    base, quote = split_symbol(text)
    return f"{base}{SEPARATOR}{quote}"


def is_canonical_symbol(text: str) -> bool:
    return isinstance(text, str) and _CANONICAL.fullmatch(text) is not None
