"""Process-wide garbage-collection policy of every Perseus server, applied once it serves.

The objects alive after startup (modules, descriptors, pools, clients) are frozen so no collection scans
them again, and generation 0 collects after 50,000 net allocations instead of 700. The core: a close wave
allocates tens of thousands of short-lived acyclic objects (values, states, rows), and the default threshold
turned them into dozens of young collections and periodic full passes over every live object (the P95 of
``make bench-indicators``, which applies this same function). A gateway holding thousands of connections
keeps a million or more long-lived objects; with CPython's defaults a full collection walks all of them and
pauses the loop for 0.4-1 s (the P99 killer measured on the reference Python bridge).

:func:`refreeze` moves objects that became long-lived since (new connections) into the frozen set; cycles
among frozen objects are only reclaimed by :func:`collect_frozen`, which the WS gateway runs rarely.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze what exists now and raise the young-generation threshold (idempotent; call after startup)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def refreeze() -> None:
    """Freeze everything tracked now, without collecting (a collection here would be the pause to avoid)."""
    gc.freeze()


def collect_frozen() -> int:
    """One full collection including frozen objects (a pause proportional to the heap), then freeze again."""
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    return found
