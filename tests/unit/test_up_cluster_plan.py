"""``perseus up --cluster``'s plan: who runs where, in which mode, told about which cores (no process started)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from common.settings import SettingsError
from perseus_cli.devstack.cluster_up import cluster_plan
from perseus_cli.devstack.supervisor import UpPlan


def envs(plan: UpPlan) -> dict[str, dict[str, str]]:
    return {child.name: dict(child.env) for child in plan.children}


def port(addr: str) -> int:
    return int(addr.rpartition(":")[2])


@pytest.fixture
def held() -> Iterator[int]:
    """A port this test holds (listening), so the plan must step over it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_two_cores_in_their_modes_and_every_gateway_given_both() -> None:
    plan = cluster_plan({})
    assert [child.name for child in plan.children] == ["core-1", "core-2", "rest-1", "rest-2", "ws-1", "ws-2"]
    by_name = envs(plan)
    assert by_name["core-1"]["PERSEUS_MODE"] == "exchange" and by_name["core-2"]["PERSEUS_MODE"] == "pw-host"
    cores = [by_name["core-1"]["PERSEUS_CORE_ADDR"], by_name["core-2"]["PERSEUS_CORE_ADDR"]]
    assert cores[0] == "127.0.0.1:50051" and len(set(cores)) == 2
    for gateway in ("rest-1", "rest-2", "ws-1", "ws-2"):
        assert by_name[gateway]["PERSEUS_CORE_ADDR"] == ",".join(cores)
    assert [child.argv[-1] for child in plan.children] == ["core", "core", "rest", "rest", "ws", "ws"]


def test_each_process_has_its_own_port_the_first_where_plain_up_listens() -> None:
    by_name = envs(cluster_plan({}))
    addrs = [
        by_name["core-1"]["PERSEUS_CORE_ADDR"],
        by_name["core-2"]["PERSEUS_CORE_ADDR"],
        *(by_name[f"rest-{i}"]["PERSEUS_REST_ADDR"] for i in (1, 2)),
        *(by_name[f"ws-{i}"]["PERSEUS_WS_ADDR"] for i in (1, 2)),
    ]
    assert len({port(a) for a in addrs}) == 6, addrs
    assert by_name["rest-1"]["PERSEUS_REST_ADDR"] == "127.0.0.1:8000"
    assert by_name["ws-1"]["PERSEUS_WS_ADDR"] == "127.0.0.1:8001"
    assert port(by_name["rest-2"]["PERSEUS_REST_ADDR"]) > 8001  # 8001 is ws-1's


def test_a_second_process_steps_over_a_port_in_use(held: int) -> None:
    second = envs(cluster_plan({"PERSEUS_REST_ADDR": f"127.0.0.1:{held - 1}"}))["rest-2"]["PERSEUS_REST_ADDR"]
    assert port(second) not in (held - 1, held)


def test_two_core_addresses_are_the_two_cores() -> None:
    by_name = envs(cluster_plan({"PERSEUS_CORE_ADDR": "127.0.0.1:7001,127.0.0.1:7005"}))
    assert by_name["core-1"]["PERSEUS_CORE_ADDR"] == "127.0.0.1:7001"
    assert by_name["core-2"]["PERSEUS_CORE_ADDR"] == "127.0.0.1:7005"
    assert by_name["ws-2"]["PERSEUS_CORE_ADDR"] == "127.0.0.1:7001,127.0.0.1:7005"


@pytest.mark.parametrize("value", ["127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003", "dns:///cores:50051"])
def test_core_addresses_it_cannot_listen_on_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="PERSEUS_CORE_ADDR"):
        cluster_plan({"PERSEUS_CORE_ADDR": value})


def test_a_set_metrics_address_is_split_an_unset_or_blank_one_left_alone() -> None:
    by_name = envs(cluster_plan({"PERSEUS_CORE_METRICS_ADDR": "127.0.0.1:9500"}))
    first, second = by_name["core-1"]["PERSEUS_CORE_METRICS_ADDR"], by_name["core-2"]["PERSEUS_CORE_METRICS_ADDR"]
    assert first == "127.0.0.1:9500" and second != first
    for env in ({}, {"PERSEUS_CORE_METRICS_ADDR": ""}):
        assert all("PERSEUS_CORE_METRICS_ADDR" not in e for e in envs(cluster_plan(env)).values())


def test_readiness_asks_both_cores_and_every_gateway() -> None:
    plan = cluster_plan({})
    assert plan.health_url == "http://127.0.0.1:8000/health"
    assert sorted(p.what for p in plan.probes) == [
        "core-1 gRPC health",
        "core-2 gRPC health",
        "rest-2 /health",
        "ws-1 /health",
        "ws-2 /health",
    ]


def test_the_pw_host_core_gets_the_stacks_exchange_settings_blanked() -> None:
    """A pw-host core refuses PERSEUS_EXCHANGES and venue URLs: core-2 must not inherit the stack's."""
    from core.settings import Settings

    stack_env = {
        "PERSEUS_EXCHANGES": "sim,coinbase",
        "PERSEUS_COINBASE_URL": "wss://proxy.example.invalid/ws",
        "PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0",
        "PERSEUS_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
    }
    by_name = envs(cluster_plan(stack_env))
    core2 = {**stack_env, **by_name["core-2"]}
    assert (core2["PERSEUS_EXCHANGES"], core2["PERSEUS_COINBASE_URL"]) == ("", "")
    assert Settings.from_env(core2).exchanges == ()
    core1 = {**stack_env, **by_name["core-1"]}
    assert Settings.from_env(core1).exchanges == ("sim", "coinbase")
