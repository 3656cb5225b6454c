"""Prometheus metrics of one gateway app: a private registry, request counts and latencies.

Each app owns its :class:`HttpMetrics` (and so its own ``CollectorRegistry``),
so two apps in one process never share or collide on collectors. Routes are
labelled by their template (``/public/v1/candles/<exchange>/<symbol>``), never
by the raw path; a request that matched no route is labelled ``OTHER``, and so
is a method outside the standard ones (``FOOBAR``): the label set is fixed by
the code, so a scanner sending junk paths or methods cannot grow it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from common.metrics import process_collectors
from common.telemetry import TraceMetrics

OTHER = "OTHER"
UNMATCHED_ROUTE = OTHER
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class CacheMetrics(Collector):
    """``perseus_cache_requests_total{cache,result}``: each cache's (hits, misses), read at scrape time."""

    def __init__(self) -> None:
        self.caches: dict[str, Callable[[], tuple[int, int]]] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "perseus_cache_requests", "Reads of a cache by result: hit or miss", labels=["cache", "result"]
        )
        for name, read in sorted(self.caches.items()):
            hits, misses = read()
            family.add_metric([name, "hit"], hits)
            family.add_metric([name, "miss"], misses)
        yield family


class HttpMetrics:
    """Request counter and latency histogram, labelled by route, method and status; the process, platform and
    GC collectors (:mod:`common.metrics`); and the gateway's caches (:meth:`add_cache`)."""

    def __init__(self, process: str) -> None:
        self.registry = CollectorRegistry()
        process_collectors(self.registry)
        self._caches = CacheMetrics()
        self.registry.register(self._caches)
        self.requests = Counter(
            "perseus_http_requests",
            "Finished HTTP requests",
            ["process", "route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "perseus_http_request_duration_seconds",
            "Time from the request's arrival to its response",
            ["process", "route", "method", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._process = process
        self.registry.register(TraceMetrics())  # spans the trace export lost (0 with traces off)

    def observe(self, route: str | None, method: str, status: int, seconds: float) -> None:
        method_label = method if method in KNOWN_METHODS else OTHER
        labels = (self._process, route or UNMATCHED_ROUTE, method_label, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(max(seconds, 0.0))

    def add_cache(self, name: str, counts: Callable[[], tuple[int, int]]) -> None:
        """Expose the (hits, misses) of cache ``name`` as ``perseus_cache_requests_total{cache=name}``."""
        self._caches.caches[name] = counts

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
