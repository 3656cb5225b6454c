"""The API key in ``Sec-WebSocket-Protocol`` (issue 16): how a browser sends a key without putting it in the URL.

A browser opens ``new WebSocket(url, ["perseus.v1", "key.<KEY>"])``; these
tests send the same handshake with the ``websockets`` client to a real
gateway in front of a real core, and check what the browser would see: the
subscription works, the answer selects ``perseus.v1`` and never carries the
key, a bad key is refused like a bad ``?apiKey=``.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support import ws as support
from tests.support.processes import Process, running_core, running_gateway
from tests.support.ws import closed_with, open_stream, stream_url, subscribe

pytestmark = pytest.mark.integration
key = support.key  # fixture: an internal key


@pytest.fixture(scope="module")
def gateway(migrated_env: dict[str, str]) -> Iterator[Process]:
    with running_core(migrated_env) as core, running_gateway("ws", migrated_env, core.addr) as process:
        yield process


def open_with(addr: str, protocols: list[str], query_key: str | None = None) -> connect:
    return connect(stream_url(addr, query_key), open_timeout=10, subprotocols=protocols)  # type: ignore[arg-type]


async def test_a_key_in_the_subprotocol_alone_subscribes_and_the_answer_selects_perseus_v1_without_it(
    gateway: Process, key: str
) -> None:
    async with open_with(gateway.addr, ["perseus.v1", f"key.{key}"]) as ws:
        assert await subscribe(ws, ["prices:BTC-USD"]) == {"type": "subscribed", "channels": ["prices:BTC-USD"]}
        assert ws.subprotocol == "perseus.v1"
        assert ws.response is not None
        assert ws.response.headers.get_all("Sec-WebSocket-Protocol") == ["perseus.v1"]
        assert key not in str(ws.response.headers)
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://{gateway.addr}/metrics", timeout=5)).text
    assert key not in metrics
    assert key not in gateway.output()


async def test_a_bad_key_in_the_subprotocol_is_refused_like_a_bad_query_key(gateway: Process) -> None:
    async with open_stream(gateway.addr, "pk_free_nope") as ws:
        by_query = await closed_with(ws)
    async with open_with(gateway.addr, ["perseus.v1", "key.pk_free_nope"]) as ws:
        assert ws.subprotocol == "perseus.v1"
        by_subprotocol = await closed_with(ws)
    assert by_query == by_subprotocol == (4001, "invalid or revoked API key")


async def test_no_key_at_all_still_closes_with_4001_and_selects_no_subprotocol(gateway: Process) -> None:
    async with open_stream(gateway.addr, None) as ws:
        assert ws.subprotocol is None
        assert ws.response is not None and "Sec-WebSocket-Protocol" not in ws.response.headers
        code_reason = await closed_with(ws)
    assert code_reason is not None and code_reason[0] == 4001
    async with open_with(gateway.addr, ["perseus.v1"]) as ws:
        assert ws.subprotocol == "perseus.v1"
        assert await closed_with(ws) == code_reason


async def test_two_different_keys_are_refused(gateway: Process, key: str) -> None:
    async with open_with(gateway.addr, ["perseus.v1", "key.pk_free_other"], query_key=key) as ws:
        assert await closed_with(ws) == (4001, "two different API keys were sent; send one")
    async with open_with(gateway.addr, ["perseus.v1", f"key.{key}"], query_key=key) as ws:
        assert await subscribe(ws, ["prices:BTC-USD"]) == {"type": "subscribed", "channels": ["prices:BTC-USD"]}


async def test_a_key_offered_without_perseus_v1_is_refused_at_the_handshake(gateway: Process, key: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_with(gateway.addr, [f"key.{key}"]):
            pass
    assert refused.value.response.status_code == 400
    assert b"perseus.v1" in refused.value.response.body
    assert key.encode() not in refused.value.response.body
