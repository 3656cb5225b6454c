"""A :class:`~tests.support.replay.ReplayServer` on its own thread and loop, for tests that block
(waiting on a ``perseus core`` subprocess) while the server must keep answering."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tests.support.replay import ReplayServer, Script


@contextmanager
def replay_in_thread(scripts: Sequence[Script], fallback: Script | None = None) -> Iterator[ReplayServer]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="replay-server", daemon=True)
    thread.start()
    server = ReplayServer(scripts, fallback=fallback)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
