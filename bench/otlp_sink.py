"""A local OTLP/HTTP endpoint that accepts every export and keeps nothing, for the benchmarks' tracing-on rows.

``bench-rest --tracing`` and ``bench-ws --tracing`` point the traced processes' ``OTEL_EXPORTER_OTLP_ENDPOINT``
at it: the processes pay the whole cost of tracing (spans, the batch queue, protobuf encoding, the HTTP post),
the sink only reads the body and answers 200. It runs on this machine (loopback), so its CPU is part of the
figures, as a collector on the same host would be.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.processes import free_port

# The environment of a traced process; OTEL_BSP_* left at the SDK's defaults (queue 2048, 5 s, batches of 512).
TRACED = "OTEL_EXPORTER_OTLP_ENDPOINT"
# A valid W3C traceparent, stamped on events by a translator standing in for a traced core's publish.
BENCH_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class _Counts:
    posts = 0
    body_bytes = 0


@contextmanager
def otlp_sink() -> Iterator[tuple[dict[str, str], _Counts]]:
    """The environment that sends a process's traces to the sink, and what the sink received."""
    counts = _Counts()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(size)
            counts.posts += 1
            counts.body_bytes += size
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield {TRACED: f"http://127.0.0.1:{port}"}, counts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
