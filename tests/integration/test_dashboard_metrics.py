"""deploy/grafana/perseus.json queries only metrics that exist: every metric name in every PromQL
expression is exposed by the ``/metrics`` page of a real core, REST gateway or WS gateway.

A renamed or dropped metric (or a typo in the dashboard) would otherwise leave a panel silently empty.
Names are read from ``# TYPE`` lines as well as samples, so a labelled family that has seen no
observation yet still counts, and a histogram's ``_bucket``/``_sum``/``_count`` follow from its type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, running_core, running_gateway
from tests.support.promql_names import exposed_names, metric_names

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "perseus.json"


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) for every query of every panel, rows' nested panels included."""
    exprs: list[tuple[str, str]] = []
    stack = list(json.loads(DASHBOARD.read_text())["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        exprs.extend((panel["title"], target["expr"]) for target in panel.get("targets", []))
    return exprs


@pytest.fixture(scope="module")
def stack(migrated_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A core (with its metrics on a free port), a REST and a WS gateway: name -> its /metrics URL."""
    metrics_addr = f"127.0.0.1:{free_port()}"
    with (
        running_core(migrated_env, PERSEUS_CORE_METRICS_ADDR=metrics_addr) as core,
        running_gateway("rest", migrated_env, core.addr) as rest,
        running_gateway("ws", migrated_env, core.addr) as ws,
    ):
        yield {
            "core": f"http://{metrics_addr}/metrics",
            "rest": f"http://{rest.addr}/metrics",
            "ws": f"http://{ws.addr}/metrics",
        }


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, url
    return response.text


def test_every_metric_the_dashboard_queries_is_exposed_by_a_running_stack(stack: dict[str, str]) -> None:
    exposed = {name: exposed_names(scrape(url)) for name, url in stack.items()}
    everything = set().union(*exposed.values())
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    missing = {(title, name) for title, expr in exprs for name in metric_names(expr) if name not in everything}
    assert not missing, f"queried by the dashboard, exposed by no process: {sorted(missing)}"


def test_the_dashboard_reads_each_process(stack: dict[str, str]) -> None:
    """Each process's own metrics are on the dashboard: not one panel set that happens to match."""
    queried = {name for _, expr in dashboard_exprs() for name in metric_names(expr)}
    for process, url in stack.items():
        own = {name for name in exposed_names(scrape(url)) if name.startswith("perseus_")}
        assert queried & own, process


def test_a_made_up_metric_would_be_caught(stack: dict[str, str]) -> None:
    """The check can fail: a name that no process exposes is reported."""
    everything = set().union(*(exposed_names(scrape(url)) for url in stack.values()))
    assert metric_names('rate(perseus_http_requests_totl{process="rest"}[5m])') - everything == {
        "perseus_http_requests_totl"
    }
