"""The ``Sec-WebSocket-Protocol`` handshake: ``perseus.v1``, and an API key a browser can send there.

A browser's ``WebSocket`` cannot set a header, so its only ways to send a
key are the URL (``?apiKey=``, which lands in proxy and access logs) and the
subprotocol list: ``new WebSocket(url, ["perseus.v1", "key.<API_KEY>"])``.
Keys are ``pk_<tier>_<letters and digits>``: RFC 7230 tokens, so
``key.<API_KEY>`` is a valid subprotocol as it is, with no encoding.

The server answers with ``perseus.v1`` only, never the ``key.`` entry: the
answer must be one of the offered protocols, and echoing the key would put it
in every handshake response. Sanic fixes a route's subprotocols when the route
is registered, but the answer depends on the request: a client that offers
nothing must still connect with nothing selected (``websockets`` refuses it
with 400 when the server lists any subprotocol), and one that offers
something must get ``perseus.v1`` or a 400. :data:`SERVER_SUBPROTOCOLS`
iterates as this handshake's list, which :func:`negotiate` (request
middleware, same task as the handshake) sets from what the client offered.
See docs/design/websocket-gateway.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from sanic import Request

PROTOCOL = "perseus.v1"
KEY_PREFIX = "key."
HEADER = "sec-websocket-protocol"

_server_list: ContextVar[tuple[str, ...]] = ContextVar("perseus_ws_subprotocols", default=())


class _PerHandshake:
    """What Sanic hands ``websockets`` as the server's subprotocols: the list :func:`negotiate` chose."""

    def __iter__(self) -> Iterator[str]:
        return iter(_server_list.get())


SERVER_SUBPROTOCOLS: Any = _PerHandshake()


def offered(request: Request[Any, Any]) -> list[str]:
    """The subprotocols the client offered, in order (the header may repeat; entries are comma-separated)."""
    return [
        entry.strip() for value in request.headers.getall(HEADER, []) for entry in value.split(",") if entry.strip()
    ]


def keys_offered(request: Request[Any, Any]) -> set[str]:
    """The distinct keys in ``key.`` entries."""
    return {entry[len(KEY_PREFIX) :] for entry in offered(request) if entry.startswith(KEY_PREFIX)}


def negotiate(request: Request[Any, Any]) -> None:
    """Offered nothing: select nothing, as before. Offered anything: the server lists only ``perseus.v1``,
    so it is selected when offered and the handshake is refused with 400 otherwise (a browser that offered
    protocols fails a connection that selects none, so accepting would only hide the mistake)."""
    _server_list.set((PROTOCOL,) if offered(request) else ())
