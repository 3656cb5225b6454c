"""The writer fence in PostgreSQL: the lease term allowed to write an exchange's feed data.

A new writer :meth:`claim`\\ s its term before it writes. Each write then runs
inside :meth:`transaction`, which reads the exchange's term ``FOR SHARE`` and
raises :class:`LeaseLost` unless it is its own. The row lock makes a claim
wait for the old writer's transactions in flight, and every later transaction
of the old writer sees the new term: nothing it sends afterwards commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from core.adapters.postgres import STATEMENT_TIMEOUT_S, UNAVAILABLE_ERRORS, Connection
from core.domain.errors import LeaseLost, StaleTerm, Unavailable

_CLAIM = """
INSERT INTO writer_fences (exchange_id, term, holder) VALUES ($1, $2, $3)
ON CONFLICT (exchange_id) DO UPDATE SET term = excluded.term, holder = excluded.holder, claimed_at = now()
    WHERE writer_fences.term < excluded.term
RETURNING term
"""


class WriterFence:
    def __init__(self, pool: asyncpg.Pool, exchange_id: int) -> None:
        self._pool = pool
        self._exchange_id = exchange_id

    async def claim(self, term: int, holder: str) -> None:
        """Make ``term`` the one allowed to write; LeaseLost if a newer term already claimed it."""
        try:
            claimed = await self._pool.fetchval(_CLAIM, self._exchange_id, term, holder, timeout=STATEMENT_TIMEOUT_S)
            if claimed is None:
                current = await self._pool.fetchval(
                    "SELECT term FROM writer_fences WHERE exchange_id = $1",
                    self._exchange_id,
                    timeout=STATEMENT_TIMEOUT_S,
                )
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable; cannot claim the writer fence") from exc
        if claimed is None:
            raise StaleTerm(term, int(current))

    @asynccontextmanager
    async def transaction(self, term: int) -> AsyncIterator[Connection]:
        """A transaction in which ``term`` is, and stays, the writer's term."""
        try:
            async with self._pool.acquire(timeout=STATEMENT_TIMEOUT_S) as conn, conn.transaction():
                current = await conn.fetchval(
                    "SELECT term FROM writer_fences WHERE exchange_id = $1 FOR SHARE",
                    self._exchange_id,
                    timeout=STATEMENT_TIMEOUT_S,
                )
                if current != term:
                    raise LeaseLost(f"writer term {term} is fenced off (current term {current})")
                yield conn
        except UNAVAILABLE_ERRORS as exc:
            raise Unavailable("PostgreSQL is unavailable") from exc
