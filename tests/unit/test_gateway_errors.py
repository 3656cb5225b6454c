"""The gateways' error contract: the code table, exception classes, gRPC mapping and the one handler.

Pure: the handler is driven with a stand-in request (headers, ctx, method, path),
no server and no event loop.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import orjson
import pytest
from grpc import aio
from sanic import exceptions as sanic_exceptions
from sanic.compat import Header

from gateways.common import errors
from gateways.common.errors import (
    ERROR_STATUS,
    ApiError,
    ContractErrorHandler,
    ErrorCode,
    RateLimitExceeded,
    error_body,
    error_from_rpc,
    to_api_error,
)
from gateways.common.http import clean_request_id, request_id_of

CONTRACT_TABLE = {
    "VALIDATION_ERROR": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMIT_EXCEEDED": 429,
    "SERVICE_UNAVAILABLE": 503,
    "INTERNAL_ERROR": 500,
}


def rpc_error(code: grpc.StatusCode, details: str = "") -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=details)


def fake_request(headers: dict[str, str] | None = None) -> Any:
    return SimpleNamespace(ctx=SimpleNamespace(), headers=Header(headers or {}), method="GET", path="/x")


def handle(exc: Exception, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    response = ContractErrorHandler().default(fake_request(headers), exc)
    return response.status, orjson.loads(response.body), response.headers


# --- the table ---------------------------------------------------------------------------------


def test_the_table_holds_the_contract_codes_and_statuses() -> None:
    table = {code.value: status for code, status in ERROR_STATUS.items()}
    assert table.items() >= CONTRACT_TABLE.items()
    # The one addition, where the contract is silent: a wrong method on a known path.
    assert set(table) - set(CONTRACT_TABLE) == {"METHOD_NOT_ALLOWED"}
    assert table["METHOD_NOT_ALLOWED"] == 405


@pytest.mark.parametrize("error_class", ApiError.__subclasses__())
def test_each_exception_class_takes_its_status_from_the_table(error_class: type[ApiError]) -> None:
    error = error_class(7) if error_class is RateLimitExceeded else error_class()
    assert error.status_code == ERROR_STATUS[error_class.code]
    assert error.message  # a default message for every code
    assert error.quiet is (error_class.code is not ErrorCode.INTERNAL_ERROR)


def test_every_code_has_a_class() -> None:
    assert {cls.code for cls in ApiError.__subclasses__()} == set(ErrorCode)


def test_error_body_shape() -> None:
    body = error_body(ErrorCode.NOT_FOUND, "no such symbol", request_id="r1", details={"symbol": "X"})
    assert body == {
        "error": {"code": "NOT_FOUND", "message": "no such symbol", "details": {"symbol": "X"}, "request_id": "r1"},
        "status": 404,
    }
    assert error_body(ErrorCode.INTERNAL_ERROR, "internal error", request_id="r")["error"]["details"] == {}  # type: ignore[index]


def test_rate_limit_carries_retry_after() -> None:
    error = RateLimitExceeded(12)
    assert error.headers["Retry-After"] == "12"
    assert RateLimitExceeded(0).headers["Retry-After"] == "1"


# --- gRPC status -> contract code ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.UNAVAILABLE, ErrorCode.SERVICE_UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ErrorCode.SERVICE_UNAVAILABLE),
        (grpc.StatusCode.NOT_FOUND, ErrorCode.NOT_FOUND),
        (grpc.StatusCode.INVALID_ARGUMENT, ErrorCode.VALIDATION_ERROR),
        (grpc.StatusCode.UNAUTHENTICATED, ErrorCode.UNAUTHORIZED),
        (grpc.StatusCode.PERMISSION_DENIED, ErrorCode.FORBIDDEN),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ErrorCode.RATE_LIMIT_EXCEEDED),
        (grpc.StatusCode.INTERNAL, ErrorCode.INTERNAL_ERROR),
        (grpc.StatusCode.UNKNOWN, ErrorCode.INTERNAL_ERROR),
        (grpc.StatusCode.UNIMPLEMENTED, ErrorCode.INTERNAL_ERROR),
        (grpc.StatusCode.FAILED_PRECONDITION, ErrorCode.FORBIDDEN),
        (grpc.StatusCode.CANCELLED, ErrorCode.INTERNAL_ERROR),
    ],
)
def test_grpc_status_maps_to_a_contract_code(status: grpc.StatusCode, code: ErrorCode) -> None:
    error = error_from_rpc(rpc_error(status, "whatever"))
    assert error.code is code
    assert error.status_code == ERROR_STATUS[code]


def test_the_cores_message_is_kept_when_it_is_about_the_callers_request() -> None:
    error = error_from_rpc(rpc_error(grpc.StatusCode.NOT_FOUND, "unknown symbol 'DOGE-EUR'\non exchange"))
    assert error.message == "unknown symbol 'DOGE-EUR' on exchange"


@pytest.mark.parametrize(
    ("status", "reason", "details"),
    [
        (grpc.StatusCode.NOT_FOUND, "warming_up", {"reason": "warming_up"}),
        (grpc.StatusCode.NOT_FOUND, "Not A Reason!", {}),  # only a well-formed token is passed on
        (grpc.StatusCode.NOT_FOUND, "x" * 41, {}),
        (grpc.StatusCode.UNAVAILABLE, "warming_up", {}),  # never from a status whose text is hidden
    ],
)
def test_the_cores_reason_becomes_details_reason(status: grpc.StatusCode, reason: str, details: dict[str, str]) -> None:
    exc = aio.AioRpcError(status, aio.Metadata(), aio.Metadata(("perseus-reason", reason)), details="not warm yet")
    assert error_from_rpc(exc).details == details


@pytest.mark.parametrize("status", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN])
def test_the_cores_message_is_hidden_when_it_may_describe_internals(status: grpc.StatusCode) -> None:
    details = "failed to connect to all addresses; last error: ipv4:10.0.0.7:50051 refused"
    error = error_from_rpc(rpc_error(status, details))
    assert "10.0.0.7" not in str(error.message)
    assert error.message == errors.DEFAULT_MESSAGES[error.code]


# --- Sanic's own exceptions and bugs ----------------------------------------------------------


def test_sanic_routing_and_protocol_errors_get_contract_codes() -> None:
    assert to_api_error(sanic_exceptions.NotFound("Requested URL /x not found")).code is ErrorCode.NOT_FOUND
    assert to_api_error(sanic_exceptions.PayloadTooLarge()).code is ErrorCode.PAYLOAD_TOO_LARGE
    assert to_api_error(sanic_exceptions.BadRequest()).code is ErrorCode.VALIDATION_ERROR
    assert to_api_error(sanic_exceptions.RequestTimeout()).code is ErrorCode.VALIDATION_ERROR  # 408: no own code
    assert to_api_error(sanic_exceptions.ServiceUnavailable()).code is ErrorCode.SERVICE_UNAVAILABLE
    assert to_api_error(sanic_exceptions.ServerError("db password is x")).message == "internal error"


def test_method_not_allowed_keeps_the_allow_header() -> None:
    status, body, headers = handle(sanic_exceptions.MethodNotAllowed("no", "POST", ["GET", "HEAD"]))
    assert status == 405
    assert body["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert headers["Allow"] == "GET, HEAD"


def test_an_unexpected_exception_is_a_bare_500_without_its_text() -> None:
    status, body, headers = handle(RuntimeError("secret at /srv/perseus/core.py line 12"))
    assert status == 500
    assert body["error"]["code"] == "INTERNAL_ERROR"
    assert body["error"]["message"] == "internal error"
    assert body["status"] == 500
    text = orjson.dumps(body).decode()
    assert "secret" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert headers["X-Request-ID"] == body["error"]["request_id"]


def test_the_handler_writes_the_contract_body_with_the_clients_request_id() -> None:
    status, body, headers = handle(errors.NotFound("no such exchange"), {"X-Request-ID": "client-42"})
    assert status == 404
    assert body == {
        "error": {"code": "NOT_FOUND", "message": "no such exchange", "details": {}, "request_id": "client-42"},
        "status": 404,
    }
    assert headers["X-Request-ID"] == "client-42"
    assert ContractErrorHandler().default(fake_request(), errors.NotFound()).content_type == "application/json"


def test_the_handler_translates_a_raw_grpc_error_too() -> None:
    status, body, _ = handle(rpc_error(grpc.StatusCode.UNAVAILABLE, "ipv4:127.0.0.1:50051"))
    assert status == 503
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "127.0.0.1" not in orjson.dumps(body).decode()


def test_a_rate_limit_error_response_has_retry_after() -> None:
    status, body, headers = handle(RateLimitExceeded(30))
    assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "RATE_LIMIT_EXCEEDED", "30")


# --- request ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0f8e2c1d-6a5b-4c3d-9e8f-7a6b5c4d3e2f", "req:1/2+3=4@x", "a" * 128])
def test_sane_request_ids_are_echoed(value: str) -> None:
    assert clean_request_id(value) == value


@pytest.mark.parametrize("value", [None, "", " ", "a" * 129, "bad id", "x\r\nSet-Cookie: a=b", "ünicode", "-leading"])
def test_insane_request_ids_are_replaced(value: str | None) -> None:
    assert clean_request_id(value) is None


def test_a_request_keeps_one_id() -> None:
    request = fake_request({"X-Request-ID": "not sane!"})
    first = request_id_of(request)
    assert first != "not sane!" and len(first) == 32
    assert request_id_of(request) == first


def test_a_request_whose_client_went_away_is_no_server_error(caplog: pytest.LogCaptureFixture) -> None:
    """Sanic cancels the handler of a connection the client closed; that is a 499 in the metrics, not a 500
    with an ERROR line (hundreds of them at the end of each load run)."""
    with caplog.at_level("INFO"):
        response = ContractErrorHandler().default(fake_request(), sanic_exceptions.RequestCancelled())
    assert response.status == errors.CLIENT_CLOSED_REQUEST == 499
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
