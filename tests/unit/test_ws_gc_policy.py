"""The WS gateway freezes a burst of new connections' objects at once, not on its next timer tick."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateways.ws.session import GC_REFREEZE_AFTER, WsRuntime


@pytest.fixture
def runtime() -> Iterator[WsRuntime]:
    runtime = WsRuntime.__new__(WsRuntime)  # only the collector bookkeeping is exercised
    runtime._opened_since_freeze = 0
    yield runtime
    gc.unfreeze()


def young(obj: object) -> bool:
    """Whether the collector would still walk ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_the_connection_that_reaches_the_threshold_freezes_what_is_young(runtime: WsRuntime) -> None:
    state: list[object] = []
    state.append(state)  # a connection's objects: tracked, in a cycle
    for _ in range(GC_REFREEZE_AFTER - 1):
        runtime._opened()
    assert young(state)
    runtime._opened()
    assert not young(state)


def test_the_count_starts_again_after_a_freeze(runtime: WsRuntime) -> None:
    for _ in range(GC_REFREEZE_AFTER):
        runtime._opened()
    later: list[object] = []
    later.append(later)
    for _ in range(GC_REFREEZE_AFTER - 1):
        runtime._opened()
    assert young(later)
    runtime._opened()
    assert not young(later)
