"""One log format for every process: a JSON object per line (or text), the request id and the fields."""

from __future__ import annotations

import logging

import orjson
import pytest

from common import logs


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("perseus.test", logging.WARNING, __file__, 1, message, None, None)
    record.fields = fields
    return record


def test_json_lines_carry_the_request_id_and_the_fields() -> None:
    token = logs.request_id_var.set("req-7")
    try:
        line = logs.JsonFormatter().format(_record("slow call", method="GetCandles", ms=12))
    finally:
        logs.request_id_var.reset(token)
    entry = orjson.loads(line)
    assert "\n" not in line
    assert list(entry) == ["time", "level", "logger", "message", "request_id", "method", "ms"]
    assert (entry["level"], entry["logger"], entry["message"]) == ("WARNING", "perseus.test", "slow call")
    assert entry["time"].endswith("+00:00")


def test_text_lines_end_with_the_fields_and_the_request_id() -> None:
    token = logs.request_id_var.set("req-8")
    try:
        line = logs.TextFormatter().format(_record("slow call", method="GetCandles"))
    finally:
        logs.request_id_var.reset(token)
    assert line.endswith("WARNING perseus.test: slow call method=GetCandles request_id=req-8")


def test_no_request_id_outside_a_call() -> None:
    assert "request_id" not in orjson.loads(logs.JsonFormatter().format(_record("idle")))


@pytest.mark.parametrize(("fmt", "formatter"), [("json", logs.JsonFormatter), ("text", logs.TextFormatter)])
def test_configure_replaces_the_handlers_and_quiets_the_access_log(fmt: str, formatter: type) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("DEBUG", fmt)
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, formatter)
        assert root.level == logging.DEBUG
        assert logging.getLogger("sanic.access").level == logging.WARNING
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
