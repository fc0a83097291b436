"""A provisioner's node count from its coordinator's reports, on a fake clock."""

from __future__ import annotations

import pytest

from stratus._exceptions import ConfigurationError
from stratus.protocol.messages import NodeReport, Resources, Shortfall
from stratus.provision.sizing import (
    NodeShape,
    NodeSizing,
    Observed,
    Release,
    ScaleTo,
    SizingConfig,
)
from stratus.testing import FakeClock

SHAPE = NodeShape(2, Resources(1.0, 1024, 0))  # two executors of 1 GB a node
DEFAULT = Resources()
CONFIG = SizingConfig(min_nodes=0, max_nodes=3, keep_alive=60.0, grow_after=1.0)


def node(node_id: str, executors: int = 0, idle_for: float = 0.0, draining: bool = False):
    return NodeReport(node_id, 2, executors, 0, idle_for, draining)


def short(executors: int, resources: Resources = DEFAULT) -> tuple[Shortfall, ...]:
    return (Shortfall(resources, executors),)


def observe(
    sizing: NodeSizing,
    clock: FakeClock,
    nodes: list[NodeReport],
    shortfall: tuple[Shortfall, ...] = (),
    agents: set[str] | None = None,
) -> list:
    mine = {n.node_id for n in nodes} - {"0"} if agents is None else agents
    return sizing.handle(Observed(tuple(nodes), shortfall, frozenset(mine)), clock())


def test_a_lasting_shortfall_asks_for_enough_nodes_once() -> None:
    clock = FakeClock(100.0)
    sizing = NodeSizing(CONFIG, SHAPE)
    assert observe(sizing, clock, [node("0", 1)], short(3)) == []  # not lasting yet
    clock.advance(1.0)
    out = observe(sizing, clock, [node("0", 1)], short(3))
    assert [i.nodes for i in out if isinstance(i, ScaleTo)] == [2]  # 3 executors, 2 a node
    clock.advance(1.0)  # still short while they start: they are coming, nothing more
    assert observe(sizing, clock, [node("0", 1)], short(3), agents={"a", "b"}) == []


def test_a_short_burst_asks_for_nothing() -> None:
    clock = FakeClock(100.0)
    sizing = NodeSizing(CONFIG, SHAPE)
    assert observe(sizing, clock, [node("0", 1)], short(3)) == []
    clock.advance(0.5)
    assert observe(sizing, clock, [node("0", 1)]) == []
    clock.advance(0.7)  # short again: its clock started over
    assert observe(sizing, clock, [node("0", 1)], short(3)) == []


def test_growth_is_capped_at_max_nodes() -> None:
    clock = FakeClock(100.0)
    sizing = NodeSizing(CONFIG, SHAPE)
    observe(sizing, clock, [node("0", 1)], short(50))
    clock.advance(1.0)
    assert [i.nodes for i in observe(sizing, clock, [node("0", 1)], short(50))] == [3]


def test_demand_no_node_of_ours_could_host_asks_for_nothing() -> None:
    clock = FakeClock(100.0)
    sizing = NodeSizing(CONFIG, SHAPE)
    for _ in range(3):
        assert observe(sizing, clock, [node("0")], short(2, Resources(gpus=1))) == []
        clock.advance(1.0)


def test_gpu_demand_counts_the_gpus_of_a_node() -> None:
    clock = FakeClock(100.0)
    sizing = NodeSizing(CONFIG, NodeShape(4, Resources(1.0, 1024, 2)))
    observe(sizing, clock, [node("0")], short(3, Resources(gpus=1)))
    clock.advance(1.0)
    out = observe(sizing, clock, [node("0")], short(3, Resources(gpus=1)))
    assert [i.nodes for i in out] == [2]  # two GPUs a node: 3 executors need 2 nodes


def test_an_idle_node_is_drained_after_the_keep_alive_then_released() -> None:
    clock = FakeClock(100.0)
    sizing = NodeSizing(CONFIG, SHAPE, target=2)
    assert observe(sizing, clock, [node("0", 1), node("a", 0, 59.0), node("b", 1)]) == []
    assert sizing.draining == set()
    clock.advance(1.0)
    assert observe(sizing, clock, [node("0", 1), node("a", 0, 60.0), node("b", 1)]) == []
    assert sizing.draining == {"a"}  # the next poll drains it
    clock.advance(1.0)
    out = observe(sizing, clock, [node("0", 1), node("a", 0, 61.0, True), node("b", 1)])
    assert [(type(i), i.node_id) for i in out] == [(Release, "a")]
    assert sizing.target == 1 and sizing.draining == set()


def test_a_drained_node_that_got_an_executor_is_not_released() -> None:
    clock = FakeClock(100.0)
    sizing = NodeSizing(CONFIG, SHAPE, target=1)
    observe(sizing, clock, [node("a", 0, 60.0)])
    assert sizing.draining == {"a"}
    assert observe(sizing, clock, [node("a", 1, 0.0, True)]) == []  # placed before the drain
    assert sizing.draining == {"a"}


def test_a_shortfall_takes_a_draining_node_back_instead_of_a_new_one() -> None:
    clock = FakeClock(100.0)
    sizing = NodeSizing(CONFIG, SHAPE, target=1)
    observe(sizing, clock, [node("a", 0, 60.0)])
    assert sizing.draining == {"a"}
    assert observe(sizing, clock, [node("a", 0, 61.0, True)], short(1)) == []
    assert sizing.draining == set() and sizing.target == 1


def test_no_shrinking_below_min_nodes() -> None:
    clock = FakeClock(100.0)
    config = SizingConfig(min_nodes=1, max_nodes=3, keep_alive=60.0)
    sizing = NodeSizing(config, SHAPE)
    assert observe(sizing, clock, [], agents=set()) == [ScaleTo(1, "at least 1 nodes")]
    clock.advance(1.0)
    observe(sizing, clock, [node("a", 0, 600.0), node("b", 0, 600.0)])
    assert len(sizing.draining) == 1  # the other one stays


def test_a_node_that_never_joins_is_given_up_and_asked_for_again_after_a_backoff() -> None:
    clock = FakeClock(100.0)
    config = SizingConfig(max_nodes=3, grow_after=0.0, join_timeout=30.0, backoff=10.0)
    sizing = NodeSizing(config, SHAPE)
    assert [i.nodes for i in observe(sizing, clock, [node("0", 1)], short(2))] == [1]
    clock.advance(30.5)
    out = observe(sizing, clock, [node("0", 1)], short(2), agents={"a"})
    assert [i.nodes for i in out] == [0]  # stop it: the newest agents are those not joined
    clock.advance(5.0)
    assert observe(sizing, clock, [node("0", 1)], short(2), agents=set()) == []  # backing off
    clock.advance(5.0)
    assert [i.nodes for i in observe(sizing, clock, [node("0", 1)], short(2))] == [1]
    clock.advance(30.5)  # again: the wait doubles
    observe(sizing, clock, [node("0", 1)], short(2), agents={"b"})
    assert sizing.retry_at == clock() + 20.0


def test_a_node_that_joins_resets_the_backoff() -> None:
    clock = FakeClock(100.0)
    config = SizingConfig(max_nodes=3, grow_after=0.0, join_timeout=30.0, backoff=10.0)
    sizing = NodeSizing(config, SHAPE)
    observe(sizing, clock, [node("0", 1)], short(2))
    clock.advance(31.0)
    observe(sizing, clock, [node("0", 1)], short(2), agents={"a"})
    assert sizing.give_ups == 1
    clock.advance(10.0)
    observe(sizing, clock, [node("0", 1)], short(2))
    clock.advance(5.0)
    assert observe(sizing, clock, [node("0", 1), node("b", 1)]) == []
    assert sizing.give_ups == 0 and sizing.asked_at is None


def test_bad_bounds_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        SizingConfig(min_nodes=3, max_nodes=2)
    with pytest.raises(ConfigurationError):
        NodeSizing(CONFIG, NodeShape(0, Resources()))
