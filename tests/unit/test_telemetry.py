"""common.telemetry's pure parts: when traces are wanted, where they go, what a traceparent gives.

The processes' behaviour (spans, export, links, logs) is tested through real processes and a real OTLP
receiver in tests/integration/test_tracing.py; nothing here sets a tracer provider (it is process-global).
"""

from __future__ import annotations

import pytest
from opentelemetry import trace

from common import telemetry


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, False),  # no endpoint: nothing to send to
    ],
)
def test_traces_are_wanted_only_with_an_endpoint(environ: dict[str, str], wanted: bool) -> None:
    assert telemetry.wanted(environ) is wanted


def test_the_traces_endpoint_follows_the_otlp_rules() -> None:
    assert telemetry.traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == "http://c:4318/v1/traces"
    assert telemetry.traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == "http://c:4318/v1/traces"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}
    assert telemetry.traces_endpoint(both) == "http://t:1/x"  # the signal's own endpoint is taken as given


def test_setup_without_an_endpoint_turns_nothing_on() -> None:
    assert telemetry.setup("perseus-test", {}) is False
    assert telemetry.enabled is False


VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_extracted_from_headers_or_metadata() -> None:
    for carrier in ({"TraceParent": VALID}, [("traceparent", VALID.encode())], (("traceparent", VALID),)):
        context = trace.get_current_span(telemetry.extract(carrier)).get_span_context()
        assert (context.trace_id, context.span_id, context.is_remote) == (
            0x4BF92F3577B34DA6A3CE929D0E0E4736,
            0x00F067AA0BA902B7,
            True,
        )
    link = telemetry.link_to(VALID)
    assert link is not None and link.context.span_id == 0x00F067AA0BA902B7


@pytest.mark.parametrize(
    "value",
    ["", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "ff-" + "a" * 32 + "-" + "b" * 16 + "-01", b"\xff\xfe"],
)
def test_a_malformed_traceparent_gives_an_empty_context(value: str | bytes) -> None:
    context = telemetry.extract([("traceparent", value)])
    assert not trace.get_current_span(context).get_span_context().is_valid
    if isinstance(value, str):
        assert telemetry.link_to(value) is None


def test_outside_a_span_there_is_nothing_to_log_or_pass_on() -> None:
    assert telemetry.current_ids() is None
    assert telemetry.current_traceparent() == ""
