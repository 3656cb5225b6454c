"""The gateways' error contract: codes, exception classes, one handler, gRPC mapping.

Every error a client sees has the CONTRACT body
``{"error": {"code", "message", "details", "request_id"}, "status": N}``.
:data:`ERROR_STATUS` is the one table from code to HTTP status; the exception
classes take their status from it. :class:`ContractErrorHandler` is the one
place where any exception (ours, Sanic's routing and protocol errors, gRPC
errors, bugs) becomes that body; a 500 never carries exception text.
:func:`error_from_rpc` translates a failed call to the core at that edge.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import grpc
from sanic import HTTPResponse, Request
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler

from gateways.common.http import REQUEST_ID_HEADER, json_response, request_id_of

logger = logging.getLogger(__name__)

MAX_RPC_MESSAGE_LENGTH = 300
RPC_REASON_KEY = "perseus-reason"  # trailing metadata of a core error: goes to details.reason (core/rpc/status.py)
# trailing metadata of the core's UNAVAILABLE naming the store that failed: goes to details.dependency
RPC_DEPENDENCY_KEY = "perseus-dependency"
DEPENDENCIES = frozenset({"postgres", "redis"})
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
RETRY_AFTER_HEADER = "Retry-After"


class ErrorCode(enum.StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    # Not in CONTRACT.md's table, which is silent on a wrong method: HTTP says 405 with `Allow`.
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


ERROR_STATUS: Mapping[ErrorCode, int] = MappingProxyType(
    {
        ErrorCode.VALIDATION_ERROR: 400,
        ErrorCode.UNAUTHORIZED: 401,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.NOT_FOUND: 404,
        ErrorCode.METHOD_NOT_ALLOWED: 405,
        ErrorCode.PAYLOAD_TOO_LARGE: 413,
        ErrorCode.RATE_LIMIT_EXCEEDED: 429,
        ErrorCode.SERVICE_UNAVAILABLE: 503,
        ErrorCode.INTERNAL_ERROR: 500,
    }
)
CODE_FOR_STATUS: Mapping[int, ErrorCode] = MappingProxyType({status: code for code, status in ERROR_STATUS.items()})

DEFAULT_MESSAGES: Mapping[ErrorCode, str] = MappingProxyType(
    {
        ErrorCode.VALIDATION_ERROR: "the request is not valid",
        ErrorCode.UNAUTHORIZED: "a valid API key is required",
        ErrorCode.FORBIDDEN: "this API key may not use this resource",
        ErrorCode.NOT_FOUND: "not found",
        ErrorCode.METHOD_NOT_ALLOWED: "method not allowed",
        ErrorCode.PAYLOAD_TOO_LARGE: "the request body is too large",
        ErrorCode.RATE_LIMIT_EXCEEDED: "rate limit exceeded",
        ErrorCode.SERVICE_UNAVAILABLE: "the service is temporarily unavailable, try again later",
        ErrorCode.INTERNAL_ERROR: "internal error",
    }
)

RPC_ERROR_CODES: Mapping[grpc.StatusCode, ErrorCode] = MappingProxyType(
    {
        grpc.StatusCode.UNAVAILABLE: ErrorCode.SERVICE_UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED: ErrorCode.SERVICE_UNAVAILABLE,
        grpc.StatusCode.NOT_FOUND: ErrorCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.VALIDATION_ERROR,
        grpc.StatusCode.UNAUTHENTICATED: ErrorCode.UNAUTHORIZED,
        grpc.StatusCode.PERMISSION_DENIED: ErrorCode.FORBIDDEN,
        # e.g. ingest sent to a read-only pw-host instance: not allowed here, whoever asks
        grpc.StatusCode.FAILED_PRECONDITION: ErrorCode.FORBIDDEN,
        grpc.StatusCode.OUT_OF_RANGE: ErrorCode.VALIDATION_ERROR,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.RATE_LIMIT_EXCEEDED,
    }
)
# The core's own message is shown only for these (they name the caller's bad value);
# for the others it may describe internals, so clients get the default message.
RPC_CODES_WITH_CLIENT_MESSAGE = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


class ApiError(SanicException):
    """An error a client may see: a contract code, a safe message and optional details."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR
    status_code = ERROR_STATUS[ErrorCode.INTERNAL_ERROR]
    quiet = False  # Sanic logs the traceback of an error that is not quiet: only of an internal error

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status_code = ERROR_STATUS[cls.code]
        cls.quiet = cls.code is not ErrorCode.INTERNAL_ERROR

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or DEFAULT_MESSAGES[self.code], self.status_code, headers=dict(headers or {}))
        self.details: dict[str, object] = dict(details or {})


class ValidationFailed(ApiError):
    code = ErrorCode.VALIDATION_ERROR


class Unauthorized(ApiError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ApiError):
    code = ErrorCode.FORBIDDEN


class NotFound(ApiError):
    code = ErrorCode.NOT_FOUND


class MethodNotAllowed(ApiError):
    code = ErrorCode.METHOD_NOT_ALLOWED


class PayloadTooLarge(ApiError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class RateLimitExceeded(ApiError):
    """429 with ``Retry-After`` in whole seconds, as the contract requires."""

    code = ErrorCode.RATE_LIMIT_EXCEEDED

    def __init__(
        self, retry_after_s: int, message: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, headers={**(headers or {}), RETRY_AFTER_HEADER: str(max(1, retry_after_s))})
        self.retry_after_s = max(1, retry_after_s)


class ServiceUnavailable(ApiError):
    code = ErrorCode.SERVICE_UNAVAILABLE


class InternalError(ApiError):
    code = ErrorCode.INTERNAL_ERROR


_CLASS_FOR_CODE: Mapping[ErrorCode, type[ApiError]] = MappingProxyType(
    {
        cls.code: cls
        for cls in (
            ValidationFailed,
            Unauthorized,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            PayloadTooLarge,
            RateLimitExceeded,
            ServiceUnavailable,
            InternalError,
        )
    }
)


def error_body(
    code: ErrorCode, message: str, *, request_id: str, details: Mapping[str, object] | None = None
) -> dict[str, object]:
    """The CONTRACT error body."""
    return {
        "error": {"code": code.value, "message": message, "details": dict(details or {}), "request_id": request_id},
        "status": ERROR_STATUS[code],
    }


def error_from_rpc(exc: grpc.RpcError) -> ApiError:
    """Translate a failed call to the core; the core's text is kept only where it is the caller's business."""
    status = _rpc_code(exc)
    code = RPC_ERROR_CODES.get(status, ErrorCode.INTERNAL_ERROR)
    message = None
    extra: dict[str, object] = {}
    if status in RPC_CODES_WITH_CLIENT_MESSAGE:
        details = getattr(exc, "details", None)
        text = details() if callable(details) else None
        if isinstance(text, str) and text.strip():
            message = " ".join(text.split())[:MAX_RPC_MESSAGE_LENGTH]
        if (reason := _rpc_reason(exc)) is not None:
            extra["reason"] = reason
    if status == grpc.StatusCode.UNAVAILABLE and (dependency := _rpc_dependency(exc)) is not None:
        extra["dependency"] = dependency  # seed 004's DATABASE_ERROR / CACHE_ERROR, as SERVICE_UNAVAILABLE
    error_class = _CLASS_FOR_CODE[code]
    if error_class is RateLimitExceeded:
        return RateLimitExceeded(1, message)
    return error_class(message, details=extra)


def _rpc_reason(exc: grpc.RpcError) -> str | None:
    """The core's machine-readable reason (trailing metadata ``perseus-reason``, e.g. ``warming_up``), if any."""
    value = _trailing_value(exc, RPC_REASON_KEY)
    return value if value is not None and _REASON.fullmatch(value) else None


def _rpc_dependency(exc: grpc.RpcError) -> str | None:
    """The store the core's UNAVAILABLE is about (trailing metadata ``perseus-dependency``), if a known one."""
    value = _trailing_value(exc, RPC_DEPENDENCY_KEY)
    return value if value in DEPENDENCIES else None


def _trailing_value(exc: grpc.RpcError, wanted: str) -> str | None:
    trailing = getattr(exc, "trailing_metadata", None)
    try:
        metadata = trailing() if callable(trailing) else None
    except Exception:  # a channel-level failure may carry no metadata at all
        return None
    for key, value in metadata or ():
        if key == wanted and isinstance(value, str):
            return value
    return None


def to_api_error(exc: BaseException) -> ApiError:
    """Any exception as the error a client gets; unknown exceptions become a bare 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, grpc.RpcError):
        return error_from_rpc(exc)
    if isinstance(exc, SanicException):
        return _from_sanic(exc)
    return InternalError()


def _from_sanic(exc: SanicException) -> ApiError:
    status = int(exc.status_code)
    code = CODE_FOR_STATUS.get(status)
    if code is None:
        code = ErrorCode.VALIDATION_ERROR if 400 <= status < 500 else ErrorCode.INTERNAL_ERROR
    message = str(exc.message) if status < 500 and exc.message else None
    headers = {k: str(v) for k, v in (exc.headers or {}).items()}
    if code is ErrorCode.RATE_LIMIT_EXCEEDED:
        return RateLimitExceeded(int(headers.pop(RETRY_AFTER_HEADER, "1") or 1), message, headers=headers)
    error_class = _CLASS_FOR_CODE[code]
    return error_class(message, headers=headers)


def _rpc_code(exc: grpc.RpcError) -> grpc.StatusCode:
    code = getattr(exc, "code", None)
    status = code() if callable(code) else None
    return status if isinstance(status, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


class ContractErrorHandler(ErrorHandler):
    """The one error handler: every exception becomes the CONTRACT body with the request's id."""

    def default(self, request: Request[Any, Any], exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):
            # The client closed its connection before the answer (a load tool stopping, a browser leaving):
            # nobody reads what is written here and nothing failed on our side, so no 500 and no ERROR line
            # (they were hundreds at the end of every `make bench-rest` run); the metrics count it as 499.
            logger.debug(
                "request cancelled: the client closed the connection", extra={"fields": {"path": request.path}}
            )
            return HTTPResponse(status=CLIENT_CLOSED_REQUEST)
        error = to_api_error(exception)
        request_id = request_id_of(request)
        _log(request, exception, error)
        headers = {**error.headers, REQUEST_ID_HEADER: request_id}
        if error.status_code == ERROR_STATUS[ErrorCode.METHOD_NOT_ALLOWED] and ALLOW_HEADER not in headers:
            headers[ALLOW_HEADER] = ", ".join(allowed_methods(request))
        body = error_body(error.code, str(error.message), request_id=request_id, details=error.details)
        return json_response(body, status=error.status_code, headers=headers)


def allowed_methods(request: Request[Any, Any]) -> list[str]:
    """The methods the request's path has a route for: a 405 must list them in ``Allow`` (RFC 9110).

    Sanic's router drops them from the 405 of a path with parameters (only a
    static path's carries them), so they are found again by asking the router."""
    host = request.headers.getone("host", None)
    found = []
    for method in _METHODS:
        try:
            request.app.router.get(request.path, method, host)
        except SanicException:
            continue
        found.append(method)
    return found


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away first
ALLOW_HEADER = "Allow"


def _log(request: Request[Any, Any], exception: Exception, error: ApiError) -> None:
    fields = {"method": request.method, "path": request.path, "status": error.status_code, "code": error.code.value}
    if error.status_code < 500:
        logger.debug("request refused: %s", error.message, extra={"fields": fields})
    elif error is exception or isinstance(exception, grpc.RpcError):
        # A known failure (the core is down, say): no traceback, but the cause for operators.
        cause = exception.__cause__ or exception
        logger.warning("request failed: %s", _describe(cause), extra={"fields": fields})
    else:
        logger.error("unhandled error", exc_info=exception, extra={"fields": fields})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"core answered {_rpc_code(exc).name}"
    return type(exc).__name__
