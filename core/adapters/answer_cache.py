"""Whole answers kept in Redis for a while (seed 004: price ranges for 5 minutes, consensus for 60 s).

An answer is stored as the serialized response message under a key made from the method and the request's
deterministic serialization (``<prefix>answers:<method>:<sha256>``), with a TTL; a hit is that message parsed
back, so a cached answer is the very message an uncached call produced. Redis failing (down, frozen, an error
reply) is a miss and a skipped write, never the call's failure: the answer is then computed as without a cache.

Each kind counts its ``hits`` and ``misses`` (``perseus_cache_requests_total{cache}``).
"""

from __future__ import annotations

import collections
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from common import resp
from core.adapters.redis_client import REDIS_DOWN_ERRORS, call, first_error

logger = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT", bound=Message)
PUT_TIMEOUT_S = 0.25
GET_TIMEOUT_S = 0.25
CACHE_DOWN: tuple[type[BaseException], ...] = (*REDIS_DOWN_ERRORS, TimeoutError)


class AnswerCache:
    def __init__(self, pipeline: resp.Pipeline, prefix: str) -> None:
        self._pipeline = pipeline
        self._prefix = prefix
        self.hits: collections.Counter[str] = collections.Counter()
        self.misses: collections.Counter[str] = collections.Counter()

    def counts(self, kind: str) -> Callable[[], tuple[int, int]]:
        return lambda: (self.hits[kind], self.misses[kind])

    def key(self, kind: str, request: Message) -> str:
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        return f"{self._prefix}answers:{kind}:{digest}"

    async def answer(
        self,
        kind: str,
        request: Message,
        response_type: type[ResponseT],
        compute: Callable[[], Awaitable[ResponseT]],
        *,
        ttl_s: int,
    ) -> ResponseT:
        """The kept answer to ``request``, else ``compute()``'s, kept for ``ttl_s``."""
        key = self.key(kind, request)
        kept = await self._get(key)
        if kept is not None:
            self.hits[kind] += 1
            return response_type.FromString(kept)
        self.misses[kind] += 1
        response = await compute()
        await self._put(key, response.SerializeToString(), ttl_s)
        return response

    async def _get(self, key: str) -> bytes | None:
        try:
            [reply] = await call(self._pipeline, ("GET", key), timeout_s=GET_TIMEOUT_S)
        except CACHE_DOWN as exc:
            logger.debug("answer cache: read skipped (%s)", type(exc).__name__)
            return None
        return reply if isinstance(reply, bytes) else None

    async def _put(self, key: str, value: bytes, ttl_s: int) -> None:
        try:
            replies = await call(self._pipeline, ("SET", key, value, "EX", str(ttl_s)), timeout_s=PUT_TIMEOUT_S)
        except CACHE_DOWN as exc:
            logger.debug("answer cache: write skipped (%s)", type(exc).__name__)
            return
        if (error := first_error(replies)) is not None:
            logger.debug("answer cache: write refused (%s)", error)
