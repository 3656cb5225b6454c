"""The one table from domain errors to gRPC status codes, applied at the edge."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import grpc
from grpc import aio
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

from core.domain.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StorageUnavailable,
    StreamFellBehind,
    Unavailable,
)

logger = logging.getLogger(__name__)

STATUS_FOR_ERROR: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    StreamFellBehind: grpc.StatusCode.RESOURCE_EXHAUSTED,  # a stream's reader did not keep up: resume
}

# Driver errors that mean "a store is down", should one get past its adapter (adapters raise
# StorageUnavailable): UNAVAILABLE, which the caller may retry, never INTERNAL (a 500 at the REST edge).
DRIVER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)

Servicer = TypeVar("Servicer")
Handler = Callable[[Servicer, Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


def status_for(error: DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_FOR_ERROR:
            return STATUS_FOR_ERROR[cls]
    return grpc.StatusCode.INTERNAL


DEFAULT_MAX_CALL_S = 10.0
# Trailing metadata of a failed call naming why, machine-readable (e.g. ``warming_up``), when the error has one.
REASON_METADATA_KEY = "perseus-reason"
# Trailing metadata of an UNAVAILABLE naming the store that failed (``postgres`` or ``redis``; seed 004's
# DATABASE_ERROR and CACHE_ERROR), which the gateways put in the error's ``details.dependency``.
DEPENDENCY_METADATA_KEY = "perseus-dependency"
DEPENDENCY_NAMES = {"postgresql": "postgres", "postgres": "postgres", "redis": "redis"}


def failed_dependency(exc: BaseException) -> str | None:
    """Which store an UNAVAILABLE is about: a StorageUnavailable's, or the driver's (None when unknown)."""
    if isinstance(exc, StorageUnavailable):
        return DEPENDENCY_NAMES.get(exc.dependency)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return "redis"
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | asyncpg.CannotConnectNowError):
        return "postgres"
    return None


def _trailing(exc: BaseException) -> tuple[tuple[str, str], ...]:
    reason = getattr(exc, "error_reason", None)
    trailing = ((REASON_METADATA_KEY, reason),) if isinstance(reason, str) else ()
    dependency = failed_dependency(exc)
    return (*trailing, (DEPENDENCY_METADATA_KEY, dependency)) if dependency is not None else trailing


def translates_errors(method: Handler[Servicer]) -> Handler[Servicer]:
    """Abort a unary servicer method with the mapped status when it raises a DomainError.

    Every call has a deadline: the caller's, capped by the servicer's
    ``max_call_s`` (a caller that sent none gets the cap), and a call that
    outlives it ends with DEADLINE_EXCEEDED naming the method, never a hang on
    a stalled store. Driver errors for Redis and PostgreSQL
    (:data:`DRIVER_UNAVAILABLE`) become UNAVAILABLE; anything else is logged with its traceback and the caller
    sees INTERNAL with a safe message.
    """

    @functools.wraps(method)
    async def wrapper(self: Servicer, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        cap = getattr(self, "max_call_s", DEFAULT_MAX_CALL_S)
        remaining = context.time_remaining()
        try:
            if remaining is not None and remaining <= cap:
                # grpc itself cancels the handler at the caller's deadline: no timer of ours needed
                return await method(self, request, context)
            async with asyncio.timeout(cap):
                return await method(self, request, context)
        except TimeoutError:
            message = f"{method.__name__} did not finish within {cap:.3g} s"
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, message)
        except DomainError as exc:
            await context.abort(status_for(exc), str(exc), trailing_metadata=_trailing(exc))
        except DRIVER_UNAVAILABLE as exc:
            logger.warning("dependency unavailable in %s: %s", method.__name__, exc)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "a storage dependency is unavailable; retry",
                trailing_metadata=_trailing(exc),
            )

    return wrapper
