"""Structured logging of every Perseus process (core, gateways, ``perseus up``, ``migrate``, ``keys``).

Library modules only call ``logging.getLogger(__name__)``; :func:`configure` is called once, by an entry
point. Every record carries the request id of the call it belongs to (:data:`request_id_var`: set by the
core's request-id hook for an RPC, by the gateways' middleware for an HTTP request), the ``trace_id`` and
``span_id`` of the span it was written in when traces are on (:mod:`common.telemetry`), and the ``fields``
mapping passed as ``extra={"fields": …}``. One module for all processes, so a log shipper parses one
format: one JSON object per line with the same keys, or ``text`` for a developer's terminal.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime

import orjson

from common import telemetry
from common.settings import redact_text

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# Libraries whose INFO lines repeat what Perseus logs itself (Sanic's access log: the gateways count and
# log requests on their own).
NOISY_LIBRARY_LOGGERS = ("sanic.access",)
FORMATS = ("json", "text")
# What a URL password or a ``password=``/``token=``/``secret=`` value needs around it: a record without any
# of these is not run through the masking patterns.
_SECRET_WORDS = ("password", "token", "secret")


def mask(text: str) -> str:
    """``text`` with any URL password or secret-named parameter masked (:func:`common.settings.redact_text`).

    The last line of defence for what no caller masked: an exception quoting a store's URL, a supervised
    task's traceback. A cheap substring test first, so a plain log line costs no regular expression.
    """
    if "://" in text or ("=" in text and any(word in text.lower() for word in _SECRET_WORDS)):
        return redact_text(text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, trace_id and span_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        if request_id := request_id_var.get():
            entry["request_id"] = request_id
        if telemetry.enabled and (ids := telemetry.current_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in (getattr(record, "fields", None) or {}).items():
            entry[key] = mask(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for a developer's terminal; the whole line (message, traceback, fields) masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = dict(getattr(record, "fields", None) or {})
        if request_id := request_id_var.get():
            fields["request_id"] = request_id
        if telemetry.enabled and (ids := telemetry.current_ids()) is not None:
            fields["trace_id"], fields["span_id"] = ids
        return mask(line + "".join(f" {k}={v}" for k, v in fields.items()))


def configure(level: str, fmt: str, *, process: str | None = None) -> None:
    """Send every log record to stderr in ``fmt`` ("json" or "text").

    ``process``: announce it with a "starting <process>" line (the core and ``perseus up`` do; the gateways
    log "<process> gateway listening" once they serve instead).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in NOISY_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if process is not None:
        logging.getLogger("perseus").info("starting %s", process)
