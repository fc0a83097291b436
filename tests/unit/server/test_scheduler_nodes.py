"""The scheduler across nodes: placement by capacity and resources, lost nodes, GPUs
partitioned among executors, and what a provisioner reads (shortfall, idle nodes)."""

from __future__ import annotations

from stratus.protocol.messages import ExecutorAddress, Resources
from stratus.server.scheduler import (
    LOCAL,
    DrainNodes,
    DropNode,
    ExecutorsChanged,
    Exited,
    LoadReported,
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


# --- GPUs partitioned among a node's executors

GPU_NODE = Resources(cpu=1.0, memory_mb=4096, gpus=3)  # what one executor may get at most


def gpu_cluster(clock: FakeClock) -> Scheduler:
    """The local node (no GPU) and node g: 4 executors, GPUs "0", "1", "2"."""
    scheduler = Scheduler(1, offer=SMALL)
    scheduler.handle(NodeJoined("g", 4, GPU_NODE, ("0", "1", "2")), clock())
    return scheduler


def test_each_executor_of_a_gpu_function_gets_gpus_no_other_holds() -> None:
    clock = FakeClock(100.0)
    scheduler = gpu_cluster(clock)
    out = scheduler.handle(SetPool("train", 4, resources=Resources(gpus=1)), clock())
    assert sorted(s.gpus or () for s in spawns(out)) == [("0",), ("1",), ("2",)]  # not a 4th
    assert all(s.node == "g" for s in spawns(out))
    ready_all(scheduler, clock)
    assert all(r.resources.gpus == 1 for r in scheduler.executors.values())
    assert scheduler.shortfall() == [(Resources(gpus=1), 1)]


def test_a_function_without_gpus_gets_none_on_a_gpu_node_and_none_managed_elsewhere() -> None:
    clock = FakeClock(100.0)
    scheduler = gpu_cluster(clock)
    out = scheduler.handle(SetPool("f", 2, resources=Resources(memory_mb=128)), clock())
    assert sorted((s.node, s.gpus) for s in spawns(out)) == [(LOCAL, None), ("g", ())]


def test_gpus_are_freed_when_their_executor_has_exited() -> None:
    clock = FakeClock(100.0)
    scheduler = gpu_cluster(clock)
    pair = Resources(gpus=2)
    first = spawns(scheduler.handle(SetPool("big", 2, resources=pair), clock()))
    assert [s.gpus for s in first] == [("0", "1")]  # one GPU left: not enough for another
    ready_all(scheduler, clock)
    scheduler.handle(SetPool("big", 0), clock())  # drains, then retires it
    clock.advance(1.0)
    executor_id = first[0].executor_id
    scheduler.handle(LoadReported(executor_id, 0, 1, frozenset()), clock())
    scheduler.handle(Tick(), clock())
    # Stopping is not gone: its process may still use them.
    assert spawns(scheduler.handle(SetPool("big", 1, resources=pair), clock())) == []
    out = scheduler.handle(Exited(executor_id), clock())
    assert [s.gpus for s in spawns(out)] == [("0", "1")]


def test_an_executor_holding_gpus_does_not_join_a_pool_without_gpus() -> None:
    clock = FakeClock(100.0)
    scheduler = Scheduler(0, offer=SMALL)
    scheduler.handle(NodeJoined("g", 1, GPU_NODE, ("0",)), clock())
    scheduler.handle(SetPool("train", 1, resources=Resources(gpus=1)), clock())
    ready_all(scheduler, clock)
    scheduler.handle(SetPool("f", 1, resources=Resources(memory_mb=128)), clock())
    assert "f" not in scheduler.pools()
    assert scheduler.shortfall() == [(Resources(memory_mb=128), 1)]


# --- what a provisioner reads, and draining nodes


def test_the_shortfall_is_what_pools_want_past_the_slots_of_fitting_nodes() -> None:
    clock = FakeClock(100.0)
    scheduler = cluster(clock)  # slots: 1 SMALL + 2 BIG
    scheduler.handle(SetPool("f", 2, resources=SMALL), clock())
    scheduler.handle(SetPool("g", 3, resources=SMALL), clock())
    scheduler.handle(SetPool("h", 1, resources=Resources(gpus=4)), clock())
    assert scheduler.shortfall() == [(SMALL, 2), (Resources(gpus=4), 1)]


def test_a_draining_node_takes_no_new_executor_and_idle_time_is_reported() -> None:
    clock = FakeClock(100.0)
    scheduler = cluster(clock)
    clock.advance(10.0)
    scheduler.handle(DrainNodes(frozenset({"b", LOCAL})), clock())  # never the local node
    usage = {u.node_id: u for u in scheduler.usage(clock())}
    assert usage["b"].draining and usage["b"].idle_for == 10.0 and not usage[LOCAL].draining
    out = scheduler.handle(SetPool("f", 3), clock())
    assert [s.node for s in spawns(out)] == [LOCAL]
    assert scheduler.shortfall() == [(None, 2)]
    out = scheduler.handle(DrainNodes(frozenset()), clock())
    assert [s.node for s in spawns(out)] == ["b", "b"]
    usage = {u.node_id: u for u in scheduler.usage(clock())}
    assert usage["b"].executors == 2 and usage["b"].idle_for == 0.0
