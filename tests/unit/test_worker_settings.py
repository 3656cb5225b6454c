"""What a core worker changes in its settings (``core.settings.for_worker``) and how many workers a command
runs (``perseus_cli.workers.worker_count``)."""

from __future__ import annotations

import pytest

from common.settings import SettingsError
from core.settings import Settings, for_worker
from perseus_cli.workers import worker_count

STORES = {"PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0", "PERSEUS_DATABASE_URL": "postgresql://h/db"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**STORES, "PERSEUS_MODE": "pw-host", **env})


def test_an_explicit_metrics_port_moves_up_by_the_worker_index() -> None:
    base = settings(PERSEUS_CORE_METRICS_ADDR="127.0.0.1:19464", PERSEUS_CORE_WORKERS="3")
    assert base.workers == 3
    assert [for_worker(base, i, instance_id_set=False).metrics_addr for i in range(3)] == [
        "127.0.0.1:19464",
        "127.0.0.1:19465",
        "127.0.0.1:19466",
    ]


def test_no_metrics_endpoint_stays_none() -> None:
    base = settings(PERSEUS_CORE_METRICS_ADDR="")
    assert for_worker(base, 1, instance_id_set=False).metrics_addr == ""


def test_the_default_metrics_address_is_searched_by_each_worker() -> None:
    base = settings()
    assert not base.metrics_addr_explicit
    assert for_worker(base, 1, instance_id_set=False).metrics_addr == base.metrics_addr


def test_a_given_instance_id_gets_the_worker_index_and_the_default_is_left_alone() -> None:
    named = settings(PERSEUS_INSTANCE_ID="core-a")
    assert for_worker(named, 1, instance_id_set=True).instance_id == "core-a:w1"
    default = settings()
    assert for_worker(default, 1, instance_id_set=False).instance_id == default.instance_id  # <host>:<pid> differs


def test_worker_counts_and_a_bad_one() -> None:
    assert worker_count("core", {}) == 1
    assert worker_count("rest", {"PERSEUS_REST_WORKERS": "2"}) == 2
    assert worker_count("migrate", {"PERSEUS_CORE_WORKERS": "4"}) == 1
    with pytest.raises(SettingsError, match="PERSEUS_WS_WORKERS"):
        worker_count("ws", {"PERSEUS_WS_WORKERS": "0"})
