"""When the event publisher jumps a stream's seq counter (``core.adapters.events.SeqGuard``).

The rules, with placements as a pipeline reports them (any object, compared by identity): a stream never
published does not jump; the same node does not; another node, or a failed last publish, does; a stream whose
node changed while its call was answered is sent again with the jump. End to end on a real cluster failover:
``tests/integration/test_seq_failover.py``.
"""

from __future__ import annotations

from common import resp
from core.adapters.events import SeqGuard


class Placements:
    """Only the ``placement`` part of a pipeline: where each key is served, set by the test."""

    def __init__(self) -> None:
        self.at: dict[str, object] = {}

    def placement(self, key: str | bytes) -> object:
        return self.at[str(key)]


NODE_A, NODE_B = object(), object()


def test_a_stream_jumps_only_after_its_node_changed_or_its_publish_failed() -> None:
    where = Placements()
    guard = SeqGuard(where)  # type: ignore[arg-type]  # the guard reads placement() only
    where.at = {"s1": NODE_A, "s2": NODE_A}
    placed, flags = guard.before(["s1", "s2"])
    assert flags == [0, 0]  # never published by this core: no reason to jump
    assert guard.rerouted(["s1", "s2"], placed, flags) == []
    assert guard.before(["s1", "s2"])[1] == [0, 0]  # same node

    where.at["s1"] = NODE_B  # a failover moved s1's slot
    placed, flags = guard.before(["s1", "s2"])
    assert flags == [1, 0]
    guard.rerouted(["s1", "s2"], placed, flags)
    assert guard.before(["s1", "s2"])[1] == [0, 0]  # once published at the new node, no more jumps

    guard.failed(["s2"])  # it may have run on a master that is gone
    assert guard.before(["s1", "s2"])[1] == [0, 1]


def test_a_stream_whose_node_changed_during_its_call_is_sent_again() -> None:
    where = Placements()
    guard = SeqGuard(where)  # type: ignore[arg-type]
    where.at = {"s1": NODE_A, "s2": NODE_A}
    guard.rerouted(["s1", "s2"], *guard.before(["s1", "s2"]))
    placed, flags = guard.before(["s1", "s2"])
    where.at["s2"] = NODE_B  # the pipeline followed a failover inside the call
    assert guard.rerouted(["s1", "s2"], placed, flags) == [1]
    assert guard.before(["s1", "s2"])[1] == [0, 0]


def test_on_one_server_only_a_failed_publish_jumps() -> None:
    pipeline = resp.AutoPipeline({"host": "127.0.0.1", "port": 1}, tls=False, client_name="unit")
    guard = SeqGuard(pipeline)
    placed, flags = guard.before(["a", "b"])
    assert flags == [0, 0] and guard.rerouted(["a", "b"], placed, flags) == []
    assert guard.before(["a", "b"])[1] == [0, 0]
    guard.failed(["b"])
    assert guard.before(["a", "b"])[1] == [0, 1]
