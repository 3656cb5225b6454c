"""API-key authentication for the gateways: the key from the request, checked by the core, cached briefly.

The key comes from ``X-API-Key`` or ``Authorization: Bearer``. The core's
KeyService decides; the answer is cached in the process for
``CACHE_TTL_S`` (an unknown key for ``NEGATIVE_TTL_S``), so a revoked key
stops working everywhere within that time. The cache is keyed by the key's
SHA-256, never the key itself, and bounded. Requests that miss at the same
time share one lookup: 10,000 WebSocket clients connecting with one key, or
a busy key's entry expiring under load, ask the core once, not once each.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from sanic import Request

from gateways.common.errors import ApiError, Forbidden, Unauthorized
from perseus.marketdata.v1 import key_service_pb2

CACHE_TTL_S = 5.0
NEGATIVE_TTL_S = 1.0
MAX_CACHED_KEYS = 10_000
MAX_KEY_LENGTH = 256
PRIVILEGED_TIERS = frozenset({key_service_pb2.KEY_TIER_INTERNAL, key_service_pb2.KEY_TIER_ADMIN})

Lookup = Callable[[str], Awaitable[key_service_pb2.ApiKey | None]]


def presented_key(request: Request) -> str:  # type: ignore[type-arg]
    """The key a request carries, or raise Unauthorized."""
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        key = value.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise Unauthorized("an API key is required: send X-API-Key or Authorization: Bearer")
    if len(key) > MAX_KEY_LENGTH or not key.isascii():
        raise Unauthorized("invalid API key")
    return key


class KeyCache:
    """Answers "whose key is this?" through ``lookup`` (the core), remembering answers briefly."""

    def __init__(self, lookup: Lookup, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, key_service_pb2.ApiKey | None]] = OrderedDict()
        self._pending: dict[bytes, asyncio.Task[key_service_pb2.ApiKey | None]] = {}

    async def authenticate(self, key: str) -> key_service_pb2.ApiKey:
        digest = hashlib.sha256(key.encode()).digest()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > self._clock():
            api_key = cached[1]
        else:
            lookup = self._pending.get(digest)
            if lookup is None:
                lookup = self._pending[digest] = asyncio.create_task(self._look_up(digest, key))
                lookup.add_done_callback(lambda done: _forget(self._pending, digest, done))
            api_key = await asyncio.shield(lookup)  # a waiter that gives up does not cancel the others' lookup
        if api_key is None:
            raise Unauthorized("invalid or revoked API key")
        return api_key

    async def _look_up(self, digest: bytes, key: str) -> key_service_pb2.ApiKey | None:
        api_key = await self._lookup(key)
        ttl = CACHE_TTL_S if api_key is not None else NEGATIVE_TTL_S
        self._entries[digest] = (self._clock() + ttl, api_key)
        self._entries.move_to_end(digest)
        while len(self._entries) > MAX_CACHED_KEYS:
            self._entries.popitem(last=False)
        return api_key


def _forget(
    pending: dict[bytes, asyncio.Task[key_service_pb2.ApiKey | None]],
    digest: bytes,
    done: asyncio.Task[key_service_pb2.ApiKey | None],
) -> None:
    pending.pop(digest, None)
    if not done.cancelled():
        done.exception()  # retrieved here: every waiter may have given up already


def require_privileged(api_key: key_service_pb2.ApiKey) -> None:
    if api_key.tier not in PRIVILEGED_TIERS:
        raise Forbidden("this route needs an internal or admin key")


def is_unauthenticated(error: ApiError) -> bool:
    return isinstance(error, Unauthorized)
