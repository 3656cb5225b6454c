"""Throwaway PostgreSQL databases for tests, on the server the tests are pointed at."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@asynccontextmanager
async def scratch_database(admin_url: str, name: str) -> AsyncIterator[str]:
    """Create the empty database ``name`` through ``admin_url``; its URL while in use, then it is dropped."""
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(admin_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
