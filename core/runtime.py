"""Process-wide runtime policy of the core, applied once by ``run_core`` when the core is serving.

Garbage collection: the objects alive after startup (modules, descriptors, pools, clients) are frozen so
no collection scans them again, and generation 0 collects after 50,000 net allocations instead of 700,
because a close wave allocates tens of thousands of short-lived acyclic objects (values, states, rows)
and the default threshold turned them into dozens of young collections and periodic full passes over
every live object (the P95 of ``make bench-indicators``, which applies this same function).
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
