"""Which store an UNAVAILABLE is about: named by the core in trailing metadata, put in details by the gateways."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from core.domain.errors import StorageUnavailable, Unavailable
from core.rpc.status import failed_dependency
from gateways.common.errors import ServiceUnavailable, error_from_rpc


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        (StorageUnavailable("postgresql", "PostgreSQL is unavailable"), "postgres"),
        (StorageUnavailable("redis", "Redis did not answer"), "redis"),
        (RedisConnectionError("refused"), "redis"),
        (asyncpg.CannotConnectNowError("starting up"), "postgres"),
        (Unavailable("the call's deadline passed"), None),
        (OSError("reset"), None),
    ],
)
def test_the_core_names_the_store(exc: BaseException, dependency: str | None) -> None:
    assert failed_dependency(exc) == dependency


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...]) -> None:
        self._code, self._trailing = code, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "a store is down"

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing


@pytest.mark.parametrize("dependency", ["postgres", "redis"])
def test_the_gateway_puts_it_in_details(dependency: str) -> None:
    error = error_from_rpc(Failed(grpc.StatusCode.UNAVAILABLE, (("perseus-dependency", dependency),)))
    assert isinstance(error, ServiceUnavailable) and error.details == {"dependency": dependency}


def test_an_unknown_or_misplaced_name_is_left_out() -> None:
    assert error_from_rpc(Failed(grpc.StatusCode.UNAVAILABLE, (("perseus-dependency", "10.0.0.7"),))).details == {}
    not_found = error_from_rpc(Failed(grpc.StatusCode.NOT_FOUND, (("perseus-dependency", "redis"),)))
    assert "dependency" not in not_found.details
