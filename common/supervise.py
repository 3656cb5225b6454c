"""Long-lived tasks that never die silently: each runs under a :class:`TaskSupervisor`.

A background task that ends — by a bug, a driver error nobody expected, or a
stray ``CancelledError`` (Python 3.11's TaskGroup can leave a task's
cancellation count raised after a child failed, and a later check of
``cancelling()`` then stops a loop that was never asked to stop) — used to end
quietly, and the process went on serving stale data with ``/health`` saying
``ok``. Here every unexpected end:

* is logged at ERROR with its traceback (or "returned" when it just returned);
* is counted (``restarts``, exported by the owner as a Prometheus counter);
* marks the task *degraded* (``degraded()``) until it runs again, so
  ``GetStatus`` and ``/health`` can say which component is not working;
* is followed by a restart after a backoff that doubles from ``min_backoff_s``
  to ``max_backoff_s`` (with jitter), and falls back to the minimum once a run
  lasted ``stable_after_s``.

Each attempt runs in a task of its own: a cancellation count left behind by one
attempt cannot leak into the next, and only :meth:`aclose` (or cancelling the
supervisor's own task) stops a supervised task for good.

``common`` imports nothing of Perseus: the core and both gateways use this.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

__all__ = ["Supervised", "TaskSupervisor"]

MIN_BACKOFF_S = 0.2
MAX_BACKOFF_S = 10.0
STABLE_AFTER_S = 30.0


@dataclass(slots=True)
class Supervised:
    """One supervised task: its name, how many times it restarted, and why it is degraded (None: running)."""

    name: str
    factory: Callable[[], Awaitable[None]]
    restarts: int = 0
    problem: str | None = None
    stopping: bool = False  # asked to stop (stop() or aclose()): its end is no failure
    runner: asyncio.Task[None] | None = field(default=None, repr=False)


class TaskSupervisor:
    """Runs named coroutines forever, restarting them with backoff when they end unexpectedly."""

    def __init__(
        self,
        *,
        on_restart: Callable[[str], None] | None = None,
        min_backoff_s: float = MIN_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        stable_after_s: float = STABLE_AFTER_S,
    ) -> None:
        self._tasks: dict[str, Supervised] = {}
        self._on_restart = on_restart
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._stable_after_s = stable_after_s
        self._closing = False

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> Supervised:
        """Run ``factory()`` under supervision as ``name`` (unique); it should run until cancelled."""
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is supervised already")
        entry = self._tasks[name] = Supervised(name, factory)
        entry.runner = asyncio.create_task(self._supervise(entry), name=f"supervise:{name}")
        return entry

    def degraded(self) -> dict[str, str]:
        """Supervised tasks that are not running now, with the reason (empty: all running)."""
        return {entry.name: entry.problem for entry in self._tasks.values() if entry.problem is not None}

    def restarts(self) -> dict[str, int]:
        return {entry.name: entry.restarts for entry in self._tasks.values()}

    def alive(self) -> dict[str, bool]:
        """Whether each supervisor loop is still there (it only ends on :meth:`aclose`)."""
        return {e.name: e.runner is not None and not e.runner.done() for e in self._tasks.values()}

    async def stop(self, names: Iterable[str], timeout_s: float | None = None) -> list[str]:
        """Stop the named tasks for good (an owner stopping things in order); returns those still running
        after ``timeout_s``."""
        entries = [self._tasks[name] for name in names if name in self._tasks]
        for entry in entries:
            entry.stopping = True
        runners = [e.runner for e in entries if e.runner is not None and not e.runner.done()]
        for runner in runners:
            runner.cancel()
        if not runners:
            return []
        _, stuck = await asyncio.wait(runners, timeout=timeout_s)
        return sorted(t.get_name().removeprefix("supervise:") for t in stuck)

    async def aclose(self, timeout_s: float | None = None) -> list[str]:
        """Stop every supervised task; returns the names of those that did not stop within ``timeout_s``."""
        self._closing = True
        return await self.stop(list(self._tasks), timeout_s)

    async def _supervise(self, entry: Supervised) -> None:
        backoff = self._min_backoff_s
        while True:
            started = time.monotonic()
            attempt = asyncio.create_task(_run(entry.factory), name=entry.name)
            try:
                await asyncio.shield(attempt)
            except asyncio.CancelledError as exc:
                me = asyncio.current_task()
                if self._closing or entry.stopping or (me is not None and me.cancelling()):
                    # we were asked to stop (aclose, or the owner cancelling this loop): stop the attempt too
                    attempt.cancel()
                    await asyncio.gather(attempt, return_exceptions=True)
                    raise
                # the attempt ended in a CancelledError nobody here asked for: a failure like any other
                problem = "cancelled without being asked to stop"
                logger.error("task %s was cancelled from inside; restarting", entry.name, exc_info=exc)
            except Exception as exc:  # whatever ended it, it must not end silently
                problem = f"{type(exc).__name__}: {exc}"
                logger.error("task %s failed; restarting", entry.name, exc_info=exc)
            else:
                problem = "ended unexpectedly"
                logger.error("task %s ended unexpectedly; restarting", entry.name)
            if self._closing or entry.stopping:
                return
            entry.problem, entry.restarts = problem, entry.restarts + 1
            if self._on_restart is not None:
                self._on_restart(entry.name)
            if time.monotonic() - started >= self._stable_after_s:
                backoff = self._min_backoff_s
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self._max_backoff_s)
            entry.problem = None  # it runs again


async def _run(factory: Callable[[], Awaitable[None]]) -> None:
    await factory()
