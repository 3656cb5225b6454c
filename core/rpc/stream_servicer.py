"""``StreamService``: ``Subscribe`` (a fixed set of channels) and ``Multiplex`` (channels added and
removed on the open stream), both over :class:`core.services.streams.StreamSession`.

Events leave as bytes: a published event is already a serialized
``StreamEvent`` without its seq, so a response is that payload with the seq
field appended and the response envelope around it, with no parse and no
re-serialization per event. :func:`stream_service_handler` registers the
service with :func:`core.rpc.wire.to_wire` as the response serializer for
that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from core.codec.messages import REJECT_REASON_TO_PB
from core.domain.errors import DomainError
from core.rpc.status import status_for
from core.rpc.wire import length_delimited, repeated_field_bytes, to_wire, varint
from core.services.streams import (
    MAX_BATCH,
    MAX_MULTIPLEX_CHANNELS,
    MULTIPLEX_QUEUE_SIZE,
    Delivery,
    Item,
    Rejected,
    Rejection,
    RejectReason,
    ResumeGap,
    Streams,
    StreamSession,
    Subscribed,
    Unsubscribed,
)
from perseus.marketdata.v1 import stream_service_pb2 as pb

logger = logging.getLogger(__name__)

Context = aio.ServicerContext[Any, Any]
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StreamService"].full_name

MAX_EVENTS_PER_MESSAGE = 256
_EVENT_SEQ = b"\x10"  # StreamEvent.seq: field 2, varint
_MULTIPLEX_REF = b"\x08"  # MultiplexResponse.ref: field 1, varint


def event_bytes(delivery: Delivery) -> bytes:
    """The published StreamEvent with its seq appended (a field may come in any order on the wire)."""
    return delivery.payload + _EVENT_SEQ + varint(delivery.seq)


def subscribe_answer(item: Item) -> bytes:
    if isinstance(item, Subscribed):
        return pb.SubscribeResponse(subscribed=pb.Subscribed(channels=item.channels)).SerializeToString()
    if isinstance(item, ResumeGap):
        return pb.SubscribeResponse(resume_gap=_resume_gap(item)).SerializeToString()
    raise TypeError(f"no Subscribe answer for {item!r}")


def multiplex_answer(item: Item) -> bytes:
    if isinstance(item, Subscribed):
        response = pb.MultiplexResponse(ref=item.ref, subscribed=pb.Subscribed(channels=item.channels))
    elif isinstance(item, Unsubscribed):
        response = pb.MultiplexResponse(ref=item.ref, unsubscribed=pb.Unsubscribed(channels=item.channels))
    elif isinstance(item, ResumeGap):
        response = pb.MultiplexResponse(ref=item.ref, resume_gap=_resume_gap(item))
    elif isinstance(item, Rejected):
        response = pb.MultiplexResponse(
            ref=item.ref, rejected=pb.Rejected(reason=REJECT_REASON_TO_PB[item.reason], message=item.message)
        )
    else:
        raise TypeError(f"no Multiplex answer for {item!r}")
    return response.SerializeToString()


@dataclass(frozen=True, slots=True)
class Envelope:
    """How one RPC's responses carry items: a single event, a batch of events, or an answer."""

    event_field: int
    batch_field: int
    answer: Callable[[Item], bytes]

    def encode(self, items: Iterable[Item]) -> Iterator[bytes]:
        """Responses for ``items`` in order; consecutive events of the same ref share one message."""
        run: list[Delivery] = []
        for item in items:
            if isinstance(item, Delivery):
                if run and (run[0].ref != item.ref or len(run) == MAX_EVENTS_PER_MESSAGE):
                    yield self._events(run)
                    run = []
                run.append(item)
                continue
            if run:
                yield self._events(run)
                run = []
            yield self.answer(item)
        if run:
            yield self._events(run)

    def _events(self, run: list[Delivery]) -> bytes:
        ref = _MULTIPLEX_REF + varint(run[0].ref) if run[0].ref else b""  # MultiplexResponse.ref
        if len(run) == 1:
            return ref + length_delimited(self.event_field, event_bytes(run[0]))
        return ref + length_delimited(self.batch_field, repeated_field_bytes(1, [event_bytes(d) for d in run]))


SUBSCRIBE = Envelope(event_field=1, batch_field=4, answer=subscribe_answer)
MULTIPLEX = Envelope(event_field=2, batch_field=7, answer=multiplex_answer)


async def chunks(items: AsyncIterator[Item]) -> AsyncIterator[list[Item]]:
    """``items`` in lists of at most MAX_BATCH, each answer closing its list so it leaves at once."""
    chunk: list[Item] = []
    async for item in items:
        chunk.append(item)
        if len(chunk) >= MAX_BATCH or not isinstance(item, Delivery):
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _resume_gap(item: ResumeGap) -> pb.ResumeGap:
    return pb.ResumeGap(
        channel=item.channel, requested_seq=item.requested_seq, first_available_seq=item.first_available_seq
    )


def stream_status(error: Exception) -> grpc.StatusCode:
    """The status that ends a stream on ``error``: the one table's (core/rpc/status.py), except that a
    subscription refused for an outage is UNAVAILABLE (a Rejection is an InvalidArgument otherwise)."""
    if isinstance(error, Rejection) and error.reason is RejectReason.UNAVAILABLE:
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, DomainError):
        return status_for(error)
    return grpc.StatusCode.UNAVAILABLE


class StreamServicer:
    def __init__(self, *, streams: Streams) -> None:
        self._streams = streams

    async def Subscribe(self, request: pb.SubscribeRequest, context: Context) -> AsyncIterator[bytes]:
        session = self._streams.open()
        opening = session.subscribe(0, list(request.channels), dict(request.resume_from), ack_first=True)
        async with contextlib.aclosing(_serve(session, SUBSCRIBE, context, opening)) as responses:
            async for response in responses:
                yield response

    async def Multiplex(self, requests: AsyncIterator[pb.MultiplexRequest], context: Context) -> AsyncIterator[bytes]:
        session = self._streams.open(max_channels=MAX_MULTIPLEX_CHANNELS, queue_size=MULTIPLEX_QUEUE_SIZE)
        reader = asyncio.create_task(_forward_requests(requests, session), name="multiplex-requests")
        try:
            async with contextlib.aclosing(_serve(session, MULTIPLEX, context)) as responses:
                async for response in responses:
                    yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _serve(
    session: StreamSession, envelope: Envelope, context: Context, opening: AsyncIterator[Item] | None = None
) -> AsyncGenerator[bytes, None]:
    """The responses of one stream: its opening (a first subscribe), then batches until it ends; a stream
    that must end is aborted with its status, and its channels go back to the hub in every case."""
    try:
        if opening is not None:
            async for items in chunks(opening):
                for response in envelope.encode(items):
                    yield response
        async for items in session.batches():
            for response in envelope.encode(items):
                yield response
    except DomainError as exc:
        await context.abort(stream_status(exc), str(exc))
    finally:
        session.close()


async def _forward_requests(requests: AsyncIterator[pb.MultiplexRequest], session: StreamSession) -> None:
    """Queue each request for the session; the caller half-closing leaves the stream open."""
    try:
        async for request in requests:
            session.request(request.ref, request.subscribe, request.resume_from, request.unsubscribe)
    except DomainError as exc:
        session.abort(exc)
    except (grpc.RpcError, aio.AbortError, aio.UsageError) as exc:  # the call is ending anyway
        logger.debug("multiplex: request stream ended (%s)", exc)


def stream_service_handler(servicer: StreamServicer) -> grpc.GenericRpcHandler:
    """StreamService with responses that are already bytes (see the module docstring)."""
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                servicer.Subscribe, request_deserializer=pb.SubscribeRequest.FromString, response_serializer=to_wire
            ),
            "Multiplex": grpc.stream_stream_rpc_method_handler(
                servicer.Multiplex, request_deserializer=pb.MultiplexRequest.FromString, response_serializer=to_wire
            ),
        },
    )
