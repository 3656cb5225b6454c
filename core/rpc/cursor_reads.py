"""Rows of a long read in chunks, from one server-side cursor: what ExportService and ReplayService stream.

One connection of the pool, one read-only repeatable-read transaction (one snapshot for the whole range), and
``chunk`` rows fetched at a time, the next only when the caller asks (so gRPC flow control stops the reads).
Closing the generator early (a cancelled call) rolls the transaction back and returns the connection.
PostgreSQL lost mid-read ends the call with UNAVAILABLE after the rows already sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

import asyncpg
import grpc
from grpc import aio

from core.adapters.postgres import STATEMENT_TIMEOUT_S, UNAVAILABLE_ERRORS

logger = logging.getLogger(__name__)


async def read_chunks(
    pool: asyncpg.Pool,
    query: str,
    args: tuple[Any, ...],
    chunk: int,
    context: aio.ServicerContext[Any, Any],
    *,
    what: str,
) -> AsyncGenerator[list[asyncpg.Record], None]:
    """The rows of ``query`` in lists of at most ``chunk``; ``what`` names the read in the UNAVAILABLE answer."""
    try:
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(query, *args)
            while True:
                rows = await cursor.fetch(chunk, timeout=STATEMENT_TIMEOUT_S)
                if rows:
                    yield rows
                if len(rows) < chunk:
                    return
    except UNAVAILABLE_ERRORS as exc:
        logger.warning("%s: PostgreSQL failed mid-read (%s)", what, type(exc).__name__)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"PostgreSQL is unavailable; the {what} was cut short")
