"""API-key authentication for the gateways: the key from the request, checked by the core, cached briefly.

The key comes from ``X-API-Key`` or ``Authorization: Bearer``. The core's
KeyService decides; the answer is cached in the process for
``CACHE_TTL_S`` (an unknown key for ``NEGATIVE_TTL_S``), so a revoked key
stops working everywhere within that time. The cache is keyed by the key's
SHA-256, never the key itself, and bounded. Requests that miss at the same
time share one lookup: 10,000 WebSocket clients connecting with one key, or
a busy key's entry expiring under load, ask the core once, not once each.

**Grace during an outage.** When the core cannot answer a lookup (UNAVAILABLE
or its deadline: the core down, or PostgreSQL stalled behind it), a key the
core confirmed valid within the last ``grace_s`` (``PERSEUS_KEY_GRACE_S``,
60 s by default) keeps working from the cache: a database stall must not turn
every authenticated read into a 503 five seconds in. Only an *unanswered*
lookup is forgiven; an answer "unknown or revoked" is final at once. While the
outage lasts, a key in grace is served without waiting and one lookup at a
time is retried in the background, so the first answer after the core is back
(a revocation included) takes effect on the next request. A key the core has
not confirmed within the grace, or never, gets 503 "the API key cannot be
checked now". ``grace_s=0`` turns this off.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sanic import Request

from gateways.common.errors import ApiError, Forbidden, ServiceUnavailable, Unauthorized
from perseus.marketdata.v1 import key_service_pb2

logger = logging.getLogger(__name__)

CACHE_TTL_S = 5.0
NEGATIVE_TTL_S = 1.0
DEFAULT_GRACE_S = 60.0
MAX_CACHED_KEYS = 10_000
MAX_KEY_LENGTH = 256
PRIVILEGED_TIERS = frozenset({key_service_pb2.KEY_TIER_INTERNAL, key_service_pb2.KEY_TIER_ADMIN})
KEY_UNCHECKABLE = "the API key cannot be checked now (the key service did not answer); try again later"

Lookup = Callable[[str], Awaitable[key_service_pb2.ApiKey | None]]


def presented_key(request: Request[Any, Any]) -> str:
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


@dataclass(slots=True)
class _Entry:
    expires: float
    api_key: key_service_pb2.ApiKey | None
    confirmed: float  # when the core last said this key is valid (positive entries)
    unanswered: bool = False  # the last lookup went unanswered: served within the grace without waiting


class KeyCache:
    """Answers "whose key is this?" through ``lookup`` (the core), remembering answers briefly."""

    def __init__(
        self, lookup: Lookup, *, clock: Callable[[], float] = time.monotonic, grace_s: float = DEFAULT_GRACE_S
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._grace_s = grace_s
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._pending: dict[bytes, asyncio.Task[key_service_pb2.ApiKey | None]] = {}
        self._outage = False

    async def authenticate(self, key: str) -> key_service_pb2.ApiKey:
        digest = hashlib.sha256(key.encode()).digest()
        entry = self._entries.get(digest)
        now = self._clock()
        if entry is not None and entry.expires > now:
            api_key = entry.api_key
        elif entry is not None and entry.unanswered and self._in_grace(entry, now):
            self._lookup_task(digest, key)  # asked again in the background; the cached answer serves meanwhile
            api_key = entry.api_key
        else:
            lookup = self._lookup_task(digest, key)
            api_key = await asyncio.shield(lookup)  # a waiter that gives up does not cancel the others' lookup
        if api_key is None:
            raise Unauthorized("invalid or revoked API key")
        return api_key

    def _lookup_task(self, digest: bytes, key: str) -> asyncio.Task[key_service_pb2.ApiKey | None]:
        lookup = self._pending.get(digest)
        if lookup is None or lookup.done():  # a finished one waits for its callback to leave: not reused
            lookup = self._pending[digest] = asyncio.create_task(self._look_up(digest, key))
            lookup.add_done_callback(lambda done: _forget(self._pending, digest, done))
        return lookup

    def _in_grace(self, entry: _Entry, now: float) -> bool:
        return entry.api_key is not None and now < entry.confirmed + self._grace_s

    async def _look_up(self, digest: bytes, key: str) -> key_service_pb2.ApiKey | None:
        try:
            api_key = await self._lookup(key)
        except ServiceUnavailable as exc:  # unanswered (UNAVAILABLE, deadline): not an answer about the key
            return self._unanswered(digest, exc)
        if self._outage:
            self._outage = False
            logger.warning("the core answers key lookups again")
        now = self._clock()
        ttl = CACHE_TTL_S if api_key is not None else NEGATIVE_TTL_S
        self._entries[digest] = _Entry(now + ttl, api_key, confirmed=now if api_key is not None else 0.0)
        self._entries.move_to_end(digest)
        while len(self._entries) > MAX_CACHED_KEYS:
            self._entries.popitem(last=False)
        return api_key

    def _unanswered(self, digest: bytes, exc: ApiError) -> key_service_pb2.ApiKey:
        if not self._outage:
            self._outage = True
            logger.warning(
                "the core does not answer key lookups (%s); keys confirmed within %g s keep working",
                exc.message,
                self._grace_s,
            )
        entry = self._entries.get(digest)
        if entry is None or not self._in_grace(entry, self._clock()):
            raise ServiceUnavailable(KEY_UNCHECKABLE) from exc
        entry.unanswered = True
        assert entry.api_key is not None
        return entry.api_key


def _forget(
    pending: dict[bytes, asyncio.Task[key_service_pb2.ApiKey | None]],
    digest: bytes,
    done: asyncio.Task[key_service_pb2.ApiKey | None],
) -> None:
    if pending.get(digest) is done:  # not a newer lookup of the same key started since
        del pending[digest]
    if not done.cancelled():
        done.exception()  # retrieved here: every waiter may have given up already


def require_privileged(api_key: key_service_pb2.ApiKey) -> None:
    if api_key.tier not in PRIVILEGED_TIERS:
        raise Forbidden("this route needs an internal or admin key")


def is_unauthenticated(error: ApiError) -> bool:
    return isinstance(error, Unauthorized)
