"""The lines :func:`common.cluster_watch.describe` makes of one node's ``CLUSTER INFO`` and ``CLUSTER NODES``."""

from __future__ import annotations

from typing import Any

from common.cluster_watch import describe


def node(flags: str, *slots: tuple[int, int], connected: bool = True) -> dict[str, Any]:
    return {"flags": flags, "slots": [[str(a), str(b)] for a, b in slots], "connected": connected}


HEALTHY = {
    "127.0.0.1:7000": node("myself,master", (0, 5460)),
    "127.0.0.1:7001": node("master", (5461, 10922)),
    "127.0.0.1:7002": node("master", (10923, 16383)),
    "127.0.0.1:7003": node("slave"),
}


def test_a_healthy_cluster_says_nothing() -> None:
    assert describe({"cluster_state": "ok"}, HEALTHY) == (None, None)


def test_a_failed_master_names_its_slots_and_says_everything_is_refused() -> None:
    nodes = {**HEALTHY, "127.0.0.1:7001": node("master,fail", (5461, 10922), connected=False)}
    problem, warning = describe({"cluster_state": "fail"}, nodes)
    assert problem == (
        "Redis Cluster: slots 5461-10922 are not covered (node 127.0.0.1:7001 down?); "
        "the cluster refuses every command until they are; retrying"
    )
    assert warning is None


def test_a_master_not_yet_failed_over_is_a_problem_for_its_slots_only() -> None:
    nodes = {**HEALTHY, "127.0.0.1:7001": node("master,fail?", (5461, 10922), connected=False)}
    problem, _ = describe({"cluster_state": "ok"}, nodes)
    assert problem is not None and "until a replica takes over or the node is back" in problem


def test_unassigned_slots_are_named() -> None:
    nodes = {**HEALTHY, "127.0.0.1:7002": node("master", (10930, 16383))}
    problem, _ = describe({"cluster_state": "fail"}, nodes)
    assert problem is not None and "slots 10923-10929 are assigned to no node" in problem


def test_a_replica_down_is_a_warning_not_a_problem() -> None:
    nodes = {**HEALTHY, "127.0.0.1:7003": node("slave,fail", connected=False)}
    assert describe({"cluster_state": "ok"}, nodes) == (
        None,
        "Redis Cluster: cannot connect to node 127.0.0.1:7003 (it serves no slots: every slot is served); retrying",
    )
