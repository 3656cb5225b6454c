"""The door of every public REST route: who is asking (the key), what they ask, can they afford it (limit).

:func:`admit` authenticates the request's key through the cached
:class:`~gateways.common.auth.KeyCache` (401 first), parses the operation's
parameters (then 400), spends the request's cost from the key's shared limit
(then 429; :func:`limit_of`: internal keys have this gateway's limit, admin
keys none) and leaves the ``X-RateLimit-*`` headers on ``request.ctx`` for
:func:`add_limit_headers`, the response middleware, to put on whatever response follows (errors included).
Responses that no key paid for (open routes, a missing key) carry the
"not limited" values, all three 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sanic import HTTPResponse

from gateways.common.auth import client_address, presented_key
from gateways.common.errors import RateLimitExceeded
from gateways.rest.context import RestRequest
from gateways.rest.limiter import Command
from gateways.rest.operations import Operation, path_values
from gateways.rest.ratelimit import BASE_COST, NOT_LIMITED, UNLIMITED
from perseus.marketdata.v1 import key_service_pb2

Cost = Callable[[dict[str, Any]], int]


def flat_cost(values: dict[str, Any]) -> int:
    return BASE_COST


async def admit(request: RestRequest, operation: Operation, cost: Cost = flat_cost) -> dict[str, Any]:
    """The operation's parameter values, once this key may make this request: 401, then 400, then 429."""
    api_key = await authenticate(request)
    values = parameters(request, operation)
    await spend(request, api_key, cost(values))
    return values


async def authenticate(request: RestRequest) -> key_service_pb2.ApiKey:
    keys = request.app.ctx.services.keys
    return await keys.authenticate(presented_key(request), client=lambda: client_address(request))


def parameters(request: RestRequest, operation: Operation) -> dict[str, Any]:
    # Blank values kept: `?exchange=` is a 400 (empty), not the same as leaving `exchange` out.
    return operation.values(path_values(request.match_info), dict(request.get_args(keep_blank_values=True)))


async def spend(
    request: RestRequest, api_key: key_service_pb2.ApiKey, cost: int, *, also: Command | None = None
) -> Any:
    """Spend ``cost`` of the key's limit (429 when it does not fit); the reply of ``also``, or NOT_READ."""
    limiter = request.app.ctx.services.limiter
    decision, read = await limiter.spend(api_key.id, limit_of(request, api_key), cost, also=also)
    request.ctx.rate_headers = decision.headers()
    limiter.usage.record(api_key.id, api_key.name, tier_name(api_key.tier), decision)  # the ops view's top keys
    if not decision.allowed:
        raise RateLimitExceeded(
            decision.retry_after_s(time.time()),
            f"rate limit of {decision.limit} units per minute exceeded; this request costs {cost}",
        )
    return read


def tier_name(tier: int) -> str:
    """``free``, ``pro``, ``internal`` or ``admin`` (from ``KEY_TIER_FREE`` and so on)."""
    return key_service_pb2.KeyTier.Name(tier).removeprefix("KEY_TIER_").lower()


def limit_of(request: RestRequest, api_key: key_service_pb2.ApiKey) -> int:
    """Units per minute of ``api_key``: its tier's (from the core), but an internal key's is this gateway's
    ``PERSEUS_INTERNAL_REQUESTS_PER_MINUTE`` (seed 004: 5,000) and an admin key is never limited."""
    if api_key.tier == key_service_pb2.KEY_TIER_INTERNAL:
        return request.app.ctx.settings.internal_requests_per_minute
    if api_key.tier == key_service_pb2.KEY_TIER_ADMIN:
        return UNLIMITED
    return api_key.rate_limit_per_minute


_NOT_LIMITED_HEADERS = NOT_LIMITED.headers()


async def add_limit_headers(request: RestRequest, response: HTTPResponse) -> None:
    headers = getattr(request.ctx, "rate_headers", None) or _NOT_LIMITED_HEADERS
    response.headers.update(headers)
