"""Alert cursors through real gateways and cores: sealed with an AEAD under the deployment's shared secret.

Two cores of one deployment (one database, so one ``page_token`` secret) read
each other's cursors; a cursor with one byte changed, cut short, sealed
under another deployment's secret, or made by the former XOR-pad format is
the documented ``400 VALIDATION_ERROR``, never a 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections.abc import Iterator

import httpx
import pytest

from core.services.indicator_queries import PageTokens
from tests.support.market_seed import Seed
from tests.support.processes import Process, running_core, running_gateway
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(exchange="ptk", exchange_id=740_001, symbol_id=740_002, symbol="PTK-USD")
ALERTS = "/public/v1/alerts"


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED) as stack:
        yield stack


@pytest.fixture(scope="module")
def second_gateway(stack: RestStack) -> Iterator[Process]:
    """Another core of the same deployment and a gateway of its own in front of it."""
    with running_core(stack.env) as core, running_gateway("rest", stack.env, core.addr) as rest:
        yield rest


def page(addr: str, key: str, cursor: str | None) -> httpx.Response:
    params = {"exchange": SEED.exchange, "limit": "2", **({"cursor": cursor} if cursor else {})}
    return httpx.get(f"http://{addr}{ALERTS}", params=params, headers={"X-API-Key": key}, timeout=10)


def first_cursor(stack: RestStack) -> str:
    response = page(stack.rest.addr, stack.keys["pro"], None)
    assert response.status_code == 200, response.text
    cursor = response.json()["meta"]["next_cursor"]
    assert isinstance(cursor, str)
    return cursor


def unpadded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_pages_alternate_between_two_cores_sharing_the_secret(stack: RestStack, second_gateway: Process) -> None:
    key = stack.keys["pro"]
    whole = httpx.get(
        f"http://{stack.rest.addr}{ALERTS}", params={"exchange": SEED.exchange}, headers={"X-API-Key": key}
    ).json()["data"]
    seen, cursor, hops = [], None, 0
    while True:
        addr = (stack.rest.addr, second_gateway.addr)[hops % 2]  # each page from the other core
        response = page(addr, key, cursor)
        assert response.status_code == 200, response.text
        seen += response.json()["data"]
        cursor, hops = response.json()["meta"]["next_cursor"], hops + 1
        if cursor is None:
            break
    assert hops == 3 and seen == whole and len(whole) == SEED.alerts


def assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and reason in error["message"], error


def test_a_cursor_with_any_byte_changed_is_400(stack: RestStack) -> None:
    sealed = base64.urlsafe_b64decode(first_cursor(stack) + "==")
    for index in (0, 1, len(sealed) // 2, len(sealed) - 1):  # version, nonce, ciphertext, tag
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        assert_refused(page(stack.rest.addr, stack.keys["pro"], unpadded(bytes(tampered))), "malformed")


def test_a_truncated_cursor_is_400(stack: RestStack) -> None:
    cursor = first_cursor(stack)
    for cut in (cursor[:-1], cursor[:-4], cursor[:8]):
        assert_refused(page(stack.rest.addr, stack.keys["pro"], cut), "malformed")


def test_a_cursor_of_another_deployment_is_400(stack: RestStack) -> None:
    foreign = PageTokens(os.urandom(32)).encode(SEED.open_ms(SEED.alerts), 1)
    assert_refused(page(stack.rest.addr, stack.keys["pro"], foreign), "malformed")


def test_a_cursor_of_the_former_xor_format_is_400_expired(stack: RestStack) -> None:
    body = struct.pack(">Bqq", 2, SEED.open_ms(SEED.alerts), 1)
    old = unpadded(body + hmac.digest(os.urandom(32), b"tag" + body, hashlib.sha256)[:12])
    assert_refused(page(stack.rest.addr, stack.keys["pro"], old), "expired")
