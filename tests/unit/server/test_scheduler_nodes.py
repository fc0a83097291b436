"""The scheduler across nodes: placement by capacity and resources, lost nodes."""

from __future__ import annotations

from stratus.protocol.messages import ExecutorAddress, Resources
from stratus.server.scheduler import (
    LOCAL,
    DropNode,
    ExecutorsChanged,
    NodeAlive,
    NodeJoined,
    NodeLost,
    Ready,
    Scheduler,
    SetPool,
    Spawn,
    Tick,
)
from stratus.testing import FakeClock

SMALL = Resources(cpu=1.0, memory_mb=256)
BIG = Resources(cpu=1.0, memory_mb=4096, gpus=1)


def spawns(out: list) -> list[Spawn]:
    return [i for i in out if isinstance(i, Spawn)]


def ready_all(scheduler: Scheduler, clock: FakeClock) -> list:
    out: list = []
    for rec in list(scheduler.executors.values()):
        if rec.address is None:
            address = ExecutorAddress(rec.executor_id, f"tcp://10.0.0.1:{len(out) + 1}")
            out += scheduler.handle(Ready(address, 1, rec.resources), clock())
    return out


def cluster(clock: FakeClock) -> Scheduler:
    """The local node (1 executor of SMALL) and node b (2 executors of BIG)."""
    scheduler = Scheduler(1, offer=SMALL, node_timeout=5.0)
    scheduler.handle(NodeJoined("b", 2, BIG), clock())
    return scheduler


def test_new_executors_spread_over_nodes_by_free_capacity() -> None:
    clock = FakeClock(100.0)
    scheduler = cluster(clock)
    out = scheduler.handle(SetPool("f", 3), clock())
    assert sorted(s.node for s in spawns(out)) == [LOCAL, "b", "b"]
    assert len(spawns(scheduler.handle(SetPool("g", 5), clock()))) == 0  # all 3 slots taken


def test_a_function_goes_only_where_its_resources_fit() -> None:
    clock = FakeClock(100.0)
    scheduler = cluster(clock)
    out = scheduler.handle(SetPool("big", 5, resources=Resources(memory_mb=1024)), clock())
    assert [s.node for s in spawns(out)] == ["b", "b"]  # never the local node's 256 MB
    ready_all(scheduler, clock)
    out = scheduler.handle(SetPool("small", 1, resources=Resources(memory_mb=128)), clock())
    assert [s.node for s in spawns(out)] == [LOCAL]


def test_a_function_no_node_fits_gets_no_executor_and_cannot_be_hosted() -> None:
    clock = FakeClock(100.0)
    scheduler = cluster(clock)
    assert spawns(scheduler.handle(SetPool("huge", 1, resources=Resources(gpus=4)), clock())) == []
    assert not scheduler.can_ever_host(Resources(gpus=4))
    assert scheduler.can_ever_host(Resources(gpus=1))  # node b's


def test_a_shared_executor_must_fit_too() -> None:
    clock = FakeClock(100.0)
    scheduler = Scheduler(1, offer=SMALL)
    scheduler.handle(SetPool("f", 1), clock())
    ready_all(scheduler, clock)
    # At the cap, a function shares an executor: not one too small for it.
    out = scheduler.handle(SetPool("big", 1, resources=Resources(memory_mb=1024)), clock())
    assert spawns(out) == [] and "big" not in scheduler.pools()


def test_a_lost_node_drops_its_executors_and_the_pool_refills_elsewhere() -> None:
    clock = FakeClock(100.0)
    scheduler = Scheduler(2, offer=SMALL)
    scheduler.handle(NodeJoined("b", 2, SMALL), clock())
    spawned = spawns(scheduler.handle(SetPool("f", 2), clock()))
    assert sorted(s.node for s in spawned) == [LOCAL, "b"]
    ready_all(scheduler, clock)
    on_b = [s.executor_id for s in spawned if s.node == "b"]
    out = scheduler.handle(NodeLost("b", "its link closed"), clock())
    assert DropNode("b", "its link closed", tuple(on_b)) in out
    assert [s.node for s in spawns(out)] == [LOCAL]  # rebuilt on the node that is left
    announced = [i for i in out if isinstance(i, ExecutorsChanged)]
    assert announced and all(a.executor_id not in on_b for a in announced[-1].executors)
    assert len(scheduler._deaths) == 0  # not a crash loop


def test_a_silent_node_is_dropped_after_the_timeout_and_a_heartbeat_keeps_it() -> None:
    clock = FakeClock(100.0)
    scheduler = cluster(clock)
    clock.advance(4.0)
    scheduler.handle(NodeAlive("b"), clock())
    clock.advance(4.0)
    assert not [i for i in scheduler.handle(Tick(), clock()) if isinstance(i, DropNode)]
    clock.advance(1.5)
    drops = [i for i in scheduler.handle(Tick(), clock()) if isinstance(i, DropNode)]
    assert [d.node_id for d in drops] == ["b"] and "b" not in scheduler.nodes


def test_the_local_node_is_never_lost() -> None:
    clock = FakeClock(100.0)
    scheduler = Scheduler(1, offer=SMALL)
    assert scheduler.handle(NodeLost(LOCAL, "?"), clock()) == []
    clock.advance(100.0)
    assert scheduler.handle(Tick(), clock()) == [] and LOCAL in scheduler.nodes


def test_a_late_node_takes_new_executors_once_the_local_node_is_full() -> None:
    clock = FakeClock(100.0)
    scheduler = Scheduler(1, offer=SMALL)
    assert [s.node for s in spawns(scheduler.handle(SetPool("f", 3), clock()))] == [LOCAL]
    out = scheduler.handle(NodeJoined("c", 4, SMALL), clock())
    assert [s.node for s in spawns(out)] == ["c", "c"]
