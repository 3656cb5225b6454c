"""Health of the core's dependencies, probed concurrently with a bound on each probe."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from core.domain.models import DependencyHealth

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0

Probe = Callable[[], Awaitable[object]]


class StatusService:
    """Answers "is each dependency up?" without ever hanging the caller."""

    def __init__(self, probes: Mapping[str, Probe], *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._probes = dict(probes)
        self._timeout_s = timeout_s

    async def check(self) -> list[DependencyHealth]:
        return list(await asyncio.gather(*(self._check_one(n, p) for n, p in self._probes.items())))

    async def _check_one(self, name: str, probe: Probe) -> DependencyHealth:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                await probe()
        except TimeoutError:
            return DependencyHealth(name, False, _ms_since(started), f"no answer within {self._timeout_s:g} s")
        except (OSError, ConnectionError) as exc:
            return DependencyHealth(name, False, _ms_since(started), f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a probe must report, never raise: any driver error means "down"
            logger.warning("health probe %s failed", name, exc_info=True)
            return DependencyHealth(name, False, _ms_since(started), f"{type(exc).__name__}: {exc}")
        return DependencyHealth(name, True, _ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
