"""Memory per WebSocket connection of two leaner servers than Sanic's, for the decision in issue 18.

``python -m bench.ws_memory [CLIENTS]`` (2,000 by default) starts each prototype below in a process of
its own and connects the clients with the peers' load tool (``ws-fanout.js``, as ``bench.ws`` does; it
reports the server's RSS idle and with every client connected), then prints the RSS per connection:

- **library**: ``websockets``' own asyncio server, a handler task per connection (``async for``).
- **sansio**: an ``asyncio.Protocol`` per connection over ``websockets``' sans-I/O ``ServerProtocol``,
  frames handled in ``data_received``, no task per connection.

Both answer a subscribe with ``{"type":"subscribed"}`` and hold the connection; they serve nothing else
(not product code: what a stream endpoint on either would cost before Perseus's own state per client).
``make bench-ws`` gives the Sanic gateway's and the Node peer's figures to set beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import subprocess
import sys
import time
from typing import cast

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

SUBSCRIBED = orjson.dumps({"type": "subscribed", "channels": []})
MODES = ("library", "sansio")


async def library(port: int) -> None:
    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the load tool ends without closing handshakes
            async for _ in ws:
                await ws.send(SUBSCRIBED.decode())

    async with serve(handler, "127.0.0.1", port, ping_interval=None, backlog=4096, compression=None):
        await asyncio.Future()


class SansIoConnection(asyncio.Protocol):
    __slots__ = ("proto", "transport")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport
        self.proto = ServerProtocol()

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Request):
                proto.send_response(proto.accept(event))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                proto.send_text(SUBSCRIBED)
        for chunk in proto.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self.transport.close()


async def sansio(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(SansIoConnection, "127.0.0.1", port, backlog=4096)
    async with server:
        await asyncio.Future()


def measure(clients: int) -> list[tuple[str, float, float]]:
    from bench import ws as bench_ws  # not in the servers' processes: their idle RSS stays theirs
    from tests.support.processes import free_port

    bench_ws.raise_file_limit()
    modules = bench_ws.node_modules()
    rows = []
    for mode in MODES:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "bench.ws_memory", "serve", mode, str(port)])
        try:
            time.sleep(2.0)
            result = bench_ws.load(f"ws://127.0.0.1:{port}/", proc.pid, mode, clients, 1, 3, modules)
        finally:
            bench_ws.stop(proc)
        rss = result["serverRssMiB"]
        assert isinstance(rss, dict) and result["clientsOk"] == clients, result
        rows.append((mode, float(rss["idle"]), float(rss["connected"])))
    return rows


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        mode, port = sys.argv[2], int(sys.argv[3])
        gc.freeze()
        uvloop.run(library(port) if mode == "library" else sansio(port))
        return 0
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print("| server | clients | RSS idle MiB | RSS connected MiB | KiB per connection |")
    print("|---|---|---|---|---|")
    for mode, idle, connected in measure(clients):
        print(f"| {mode} | {clients} | {idle} | {connected} | {(connected - idle) * 1024 / clients:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
