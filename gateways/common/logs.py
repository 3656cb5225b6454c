"""Structured logging for the gateways' entry points.

Library modules only call ``logging.getLogger(__name__)``; :func:`configure`
is called once, by ``run_rest``/``run_ws``. Every record carries the request id
of the HTTP request it belongs to (a contextvar set by the request-id
middleware), and the ``fields`` mapping passed as ``extra={"fields": …}``.
The gateways never import ``core``, so this mirrors the core's log format on
purpose: one JSON object per line, the same keys.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("gateway_request_id", default="")

NOISY_LIBRARY_LOGGERS = ("sanic.access",)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if request_id := request_id_var.get():
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for a developer's terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = dict(getattr(record, "fields", None) or {})
        if request_id := request_id_var.get():
            fields["request_id"] = request_id
        return line + "".join(f" {k}={v}" for k, v in fields.items())


def configure(level: str, fmt: str) -> None:
    """Send every log record to stderr in ``fmt`` ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in NOISY_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
