"""The gateway's one ``StreamService.Multiplex`` stream to the core, kept open for the process's life.

:class:`Upstream` owns the call: it feeds every response to the hub and
writes the hub's requests, queued in order in the :class:`Outbox`, to it. When
the stream ends (the core restarted: UNAVAILABLE; the gateway fell behind:
RESOURCE_EXHAUSTED; anything else) it tells the hub, waits a short backoff and
opens a new one; the hub then carries every channel again from the last seq it
saw, so clients stay connected.

With several cores (``PERSEUS_CORE_ADDR``, see ``gateways.common.core_client``) the stream is opened on the
shared balanced channel, which picks a core whose gRPC health is SERVING. A core that dies fails its stream
with a lost connection, which is reopened at once: the new stream lands on another live core, not on the
dead one once it is back, and resumes by ``seq`` from the history all cores share (docs/design/many-cores.md).

The hub and the outbox are given, not built here: the hub sends into the
outbox and the upstream reads from it, so whoever wires the gateway builds the
outbox first, the hub on it, then the upstream on both.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

import grpc
from grpc import aio

from common import telemetry
from gateways.common import tracing
from gateways.common.core_client import connection_went_away
from gateways.ws.hub import Hub
from perseus.marketdata.v1 import stream_service_pb2 as pb, stream_service_pb2_grpc

logger = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0
MAX_PENDING_REQUESTS = 100_000


class Outbox:
    """The hub's requests for the core stream, in order; each new stream starts with an empty one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[pb.MultiplexRequest] = asyncio.Queue(MAX_PENDING_REQUESTS)

    def put(self, request: pb.MultiplexRequest) -> None:
        try:
            self.queue.put_nowait(request)
        except asyncio.QueueFull:  # the core is not reading at all: start over on a new stream
            logger.error("the core stream's request queue is full; reopening the stream")
            self.renew()

    def renew(self) -> asyncio.Queue[pb.MultiplexRequest]:
        self.queue = asyncio.Queue(MAX_PENDING_REQUESTS)
        return self.queue


class Upstream:
    def __init__(
        self,
        stub: stream_service_pb2_grpc.StreamServiceStub,
        hub: Hub,
        outbox: Outbox,
        *,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._stub = stub
        self._metadata = metadata  # the service credential (CoreClient.auth_metadata)
        self._outbox = outbox
        self.hub = hub
        self.streams_opened = 0

    def replay_call(self) -> aio.StreamStreamCall[pb.MultiplexRequest, pb.MultiplexResponse]:
        """A stream of its own for one client's resume replay (``WsRuntime``): a deep replay read on the shared
        stream would hold back every other client's live events; cancelling this call ends the replay."""
        call: aio.StreamStreamCall[pb.MultiplexRequest, pb.MultiplexResponse] = self._stub.Multiplex(
            metadata=self._metadata
        )
        return call

    async def run(self) -> None:
        """Keep a stream open until cancelled."""
        backoff = INITIAL_BACKOFF_S
        # A stream lost with its connection (a GOAWAY, a reset) is reopened at once, on a new connection,
        # once in a row: the core is most likely fine. Should that stream fail too, the backoff applies.
        reopened_at_once = False
        while True:
            call = self._stub.Multiplex(wait_for_ready=True, metadata=self._metadata)
            writer = asyncio.create_task(self._write(call, self._outbox.renew()))
            self.streams_opened += 1
            self.hub.on_connected()
            reopen_now = False
            try:
                async for response in call:
                    backoff, reopened_at_once = INITIAL_BACKOFF_S, False
                    if telemetry.enabled:  # a delivery span linked to the events' publish (gateways.common.tracing)
                        tracing.deliver(self.hub.on_response, response)
                    else:
                        self.hub.on_response(response)
                logger.warning("the core ended the stream; opening a new one")
            except aio.AioRpcError as exc:
                reopen_now = connection_went_away(exc) and not reopened_at_once
                if reopen_now:
                    logger.info("the core connection went away (%s); reopening the stream at once", exc.details())
                else:
                    level = logging.INFO if exc.code() == grpc.StatusCode.UNAVAILABLE else logging.WARNING
                    logger.log(level, "the core stream failed (%s); opening a new one", exc.code().name)
            finally:
                writer.cancel()
                with suppress(asyncio.CancelledError):
                    await writer
                call.cancel()
                self.hub.on_disconnected()
            if reopen_now:
                reopened_at_once = True
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    @staticmethod
    async def _write(
        call: aio.StreamStreamCall[pb.MultiplexRequest, pb.MultiplexResponse],
        outbox: asyncio.Queue[pb.MultiplexRequest],
    ) -> None:
        try:
            while True:
                await call.write(await outbox.get())
        except (aio.AioRpcError, aio.UsageError) as exc:  # the reader sees the stream end too
            logger.debug("writing to the core stream stopped (%s)", type(exc).__name__)
