"""What an authenticated connection drops of Sanic's objects (``session._trim_after_handshake``), and that its
frames still flow: Sanic's own request, frame assembler and websocket protocol (sanic==25.12.1), no network."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from sanic import Request
from sanic.compat import Header
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from gateways.ws.session import _trim_after_handshake


def handshake() -> tuple[Request[Any, Any], WebsocketImplProtocol]:
    headers = Header([("host", "gw"), ("upgrade", "websocket"), ("x-api-key", "pk_free_abc")])
    url = b"/public/v1/stream?apiKey=pk_free_abc"
    request: Request[Any, Any] = Request(url, headers, "1.1", "GET", cast(Any, None), cast(Any, None), head=b"GET ...")
    ws = WebsocketImplProtocol(ServerProtocol(state=State.OPEN))
    ws.io_proto = SimpleNamespace(_can_write=asyncio.Event())  # type: ignore[assignment]
    return request, ws


def text(data: str) -> Frame:
    return Frame(Opcode.TEXT, data.encode())


async def test_the_handshake_request_is_emptied_and_the_events_wait_in_lists() -> None:
    request, ws = handshake()
    assert request.args.get("apiKey") == "pk_free_abc"
    _trim_after_handshake(request, ws)
    assert not request.headers and request.head == b"" and not request.parsed_args  # the parsed query dropped
    events = (ws.assembler.message_complete, ws.assembler.message_fetched, cast(Any, ws.io_proto)._can_write)
    assert all(type(event._waiters) is list for event in events)


async def test_a_frame_that_arrived_before_the_trim_is_read_after_it_and_later_frames_flow() -> None:
    request, ws = handshake()
    assembler = ws.assembler
    early = asyncio.create_task(assembler.put(text("first")))  # arrives while the key is checked
    await asyncio.sleep(0)
    assert not early.done()  # waiting for the message to be fetched
    _trim_after_handshake(request, ws)
    assert await assembler.get() == "first"
    await asyncio.wait_for(early, 1.0)  # the waiter carried into the list was woken
    for n in range(3):
        put = asyncio.create_task(assembler.put(text(f"m{n}")))
        assert await assembler.get() == f"m{n}"
        await asyncio.wait_for(put, 1.0)


async def test_a_write_waiting_for_the_transport_is_released_after_the_trim() -> None:
    request, ws = handshake()
    can_write = ws.io_proto._can_write  # type: ignore[union-attr]
    waiting = asyncio.create_task(can_write.wait())
    await asyncio.sleep(0)
    _trim_after_handshake(request, ws)
    can_write.set()
    assert await asyncio.wait_for(waiting, 1.0) is True
