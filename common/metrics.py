"""What every Perseus process exposes on ``/metrics`` besides its own families: prometheus_client's process,
platform and garbage-collector collectors.

Each app keeps a private ``CollectorRegistry`` (two apps in one process must not collide), and a private
registry has none of the default collectors of prometheus_client's global one; this adds them:
``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ``process_open_fds``,
``process_start_time_seconds``, ``python_gc_collections_total{generation}``, ``python_gc_objects_collected_total``,
``python_info`` and the like.
"""

from __future__ import annotations

from prometheus_client import GC_COLLECTOR, CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

__all__ = ["process_collectors"]


def process_collectors(registry: CollectorRegistry) -> None:
    """Register the process, platform and GC collectors on ``registry``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if GC_COLLECTOR is not None:  # None where the interpreter has no gc callbacks (PyPy): nothing to read
        GCCollector(registry=registry)
