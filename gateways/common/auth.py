"""API-key authentication for the gateways: the key from the request, checked by the core, cached briefly.

The key comes from ``X-API-Key`` or ``Authorization: Bearer``. The core's
KeyService decides; the answer is cached in the process for
``CACHE_TTL_S`` (an unknown key for ``NEGATIVE_TTL_S``), so a revoked key
stops working everywhere within that time. The cache is keyed by the key's
SHA-256, never the key itself, and bounded. Requests that miss at the same
time share one lookup: 10,000 WebSocket clients connecting with one key, or
a busy key's entry expiring under load, ask the core once, not once each.

**Junk keys (issue 16).** A key that does not have the shape of a Perseus key
(:data:`KEY_PATTERN`, the core's own: ``pk_<tier>_<32-100 letters, digits, _
or ->``) is refused here, 401, and never reaches the core. Known keys and
unknown keys are cached apart: known ones in an LRU of :data:`MAX_CACHED_KEYS`
(a hit moves a key to the front), unknown ones in a bounded negative cache of
their own (:data:`MAX_UNKNOWN_KEYS`, :data:`NEGATIVE_TTL_S`), so a flood of
junk keys can neither evict a good key nor ask the core about the same junk
key twice within the negative TTL. Callers that pass the ``client`` (the REST
gateway: the request's address) are also limited per client: each lookup the
core answers "unknown" counts once for the client that asked, and a client
that reached ``bad_keys_per_minute`` (``PERSEUS_BAD_KEYS_PER_MINUTE``) in the
current minute gets :class:`RateLimitExceeded` (429 with ``Retry-After``) for
any key this gateway never confirmed (one still in the known keys' LRU, even
past its TTL, is asked about as usual) until the minute ends, without a core
call.
These counters live in the process (one gateway's view), bounded in size.

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
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sanic import Request

from gateways.common.errors import ApiError, Forbidden, RateLimitExceeded, ServiceUnavailable, Unauthorized
from perseus.marketdata.v1 import key_service_pb2

logger = logging.getLogger(__name__)

CACHE_TTL_S = 5.0
NEGATIVE_TTL_S = 60.0
DEFAULT_GRACE_S = 60.0
MAX_CACHED_KEYS = 10_000
MAX_UNKNOWN_KEYS = 10_000
MAX_KEY_LENGTH = 256
# The shape of every key the core can hold (core.adapters.apikeys._KEY_SHAPE; a unit test keeps them equal).
KEY_PATTERN = r"pk_[a-z]{1,8}_[A-Za-z0-9_-]{32,100}"
_KEY = re.compile(KEY_PATTERN)
DEFAULT_BAD_KEYS_PER_MINUTE = 20
BAD_KEYS_WINDOW_S = 60.0
MAX_BAD_KEY_CLIENTS = 100_000
MALFORMED_KEY = "malformed API key: a Perseus key looks like pk_<tier>_<letters and digits>"
PRIVILEGED_TIERS = frozenset({key_service_pb2.KEY_TIER_INTERNAL, key_service_pb2.KEY_TIER_ADMIN})
KEY_UNCHECKABLE = "the API key cannot be checked now (the key service did not answer); try again later"

Lookup = Callable[[str], Awaitable[key_service_pb2.ApiKey | None]]
# Who asks: an address, a function that gives it (called only on a cache miss), or None (not counted).
Client = str | Callable[[], str] | None


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


def client_address(request: Request[Any, Any]) -> str:
    """The address a request came from: the proxy's when one is in front (every client behind it shares it)."""
    return request.remote_addr or request.ip


def well_formed(key: str) -> bool:
    """Whether ``key`` has the shape of a Perseus key (anything else cannot exist in the core)."""
    return _KEY.fullmatch(key) is not None


class BadKeyCounter:
    """Unknown keys looked up per client in fixed one-minute windows (this process's view, bounded)."""

    def __init__(self, per_window: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_window = per_window  # 0: not limited
        self._clock = clock
        self._counts: dict[str, tuple[int, int]] = {}  # client -> (window, unknown keys looked up in it)

    def retry_after_s(self, client: str) -> int | None:
        """Whole seconds until ``client`` may look keys up again, or None when it may now."""
        if not self._per_window:
            return None
        now = self._clock()
        window = int(now // BAD_KEYS_WINDOW_S)
        counted = self._counts.get(client)
        if counted is None or counted[0] != window or counted[1] < self._per_window:
            return None
        return max(1, math.ceil((window + 1) * BAD_KEYS_WINDOW_S - now))

    def count(self, client: str) -> None:
        if not self._per_window:
            return
        window = int(self._clock() // BAD_KEYS_WINDOW_S)
        counted = self._counts.get(client)
        used = counted[1] if counted is not None and counted[0] == window else 0
        if len(self._counts) >= MAX_BAD_KEY_CLIENTS and counted is None:
            self._counts = {c: n for c, n in self._counts.items() if n[0] == window}
        self._counts[client] = (window, used + 1)


@dataclass(slots=True)
class _Entry:
    expires: float
    api_key: key_service_pb2.ApiKey  # only known keys have an entry (unknown ones: the negative cache)
    confirmed: float  # when the core last said this key is valid (positive entries)
    unanswered: bool = False  # the last lookup went unanswered: served within the grace without waiting


class KeyCache:
    """Answers "whose key is this?" through ``lookup`` (the core), remembering answers briefly."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        clock: Callable[[], float] = time.monotonic,
        grace_s: float = DEFAULT_GRACE_S,
        bad_keys_per_minute: int = DEFAULT_BAD_KEYS_PER_MINUTE,
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._grace_s = grace_s
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()  # known keys, least recently used first
        self._unknown: OrderedDict[bytes, float] = OrderedDict()  # unknown or revoked keys: until when
        self._pending: dict[bytes, asyncio.Task[key_service_pb2.ApiKey | None]] = {}
        self._bad_keys = BadKeyCounter(bad_keys_per_minute, clock=clock)
        self._outage = False

    async def authenticate(self, key: str, *, client: Client = None) -> key_service_pb2.ApiKey:
        """The core's record of ``key``; Unauthorized (401) for a malformed, unknown or revoked key.

        ``client`` (an address, or a function giving it, called only when the cache cannot answer): unknown
        keys are counted for it, and once it has tried too many this minute a key never confirmed (not in the
        known keys' LRU) raises RateLimitExceeded (429) without asking the core."""
        digest = hashlib.sha256(key.encode()).digest()
        entry = self._entries.get(digest)
        now = self._clock()
        if entry is not None and entry.expires > now:  # only a well-formed key was ever confirmed
            self._entries.move_to_end(digest)
            return entry.api_key
        if not _KEY.fullmatch(key):
            raise Unauthorized(MALFORMED_KEY)
        if callable(client):
            client = client()
        if entry is not None and entry.unanswered and self._in_grace(entry, now):
            self._lookup_task(digest, key, client)  # asked again in the background; the cache serves meanwhile
            api_key: key_service_pb2.ApiKey | None = entry.api_key
        else:
            if entry is None and client is not None and (wait_s := self._bad_keys.retry_after_s(client)) is not None:
                raise RateLimitExceeded(wait_s, "too many unknown API keys from this address; try again later")
            if self._unknown.get(digest, 0.0) > now:
                raise Unauthorized("invalid or revoked API key")
            lookup = self._lookup_task(digest, key, client)
            api_key = await asyncio.shield(lookup)  # a waiter that gives up does not cancel the others' lookup
        if api_key is None:
            raise Unauthorized("invalid or revoked API key")
        return api_key

    def _lookup_task(self, digest: bytes, key: str, client: str | None) -> asyncio.Task[key_service_pb2.ApiKey | None]:
        lookup = self._pending.get(digest)
        if lookup is None or lookup.done():  # a finished one waits for its callback to leave: not reused
            lookup = self._pending[digest] = asyncio.create_task(self._look_up(digest, key, client))
            lookup.add_done_callback(lambda done: _forget(self._pending, digest, done))
        return lookup

    def _in_grace(self, entry: _Entry, now: float) -> bool:
        return now < entry.confirmed + self._grace_s

    async def _look_up(self, digest: bytes, key: str, client: str | None) -> key_service_pb2.ApiKey | None:
        try:
            api_key = await self._lookup(key)
        except ServiceUnavailable as exc:  # unanswered (UNAVAILABLE, deadline): not an answer about the key
            return self._unanswered(digest, exc)
        if self._outage:
            self._outage = False
            logger.warning("the core answers key lookups again")
        now = self._clock()
        if api_key is None:  # unknown or revoked: remembered apart, so junk never evicts a known key
            self._entries.pop(digest, None)
            self._unknown[digest] = now + NEGATIVE_TTL_S
            self._unknown.move_to_end(digest)
            while len(self._unknown) > MAX_UNKNOWN_KEYS:
                self._unknown.popitem(last=False)
            if client is not None:
                self._bad_keys.count(client)
            return None
        self._unknown.pop(digest, None)
        self._entries[digest] = _Entry(now + CACHE_TTL_S, api_key, confirmed=now)
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
