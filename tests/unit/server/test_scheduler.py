"""The executor pool state machine: warm pools, pinning, draining, placement."""

from __future__ import annotations

import pytest

from stratus.protocol.messages import ExecutorAddress, Resources
from stratus.server.scheduler import (
    ExecutorsChanged,
    ExecutorState,
    Exited,
    Kill,
    KillRequested,
    LoadReported,
    Pin,
    Ready,
    Retire,
    Scheduler,
    SetPool,
    Spawn,
    Start,
    StartDelayed,
    Stop,
    Tick,
    Unpin,
)
from stratus.testing import FakeClock

OFFER = Resources(cpu=2.0, memory_mb=1024, gpus=0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def address(executor_id: str) -> ExecutorAddress:
    return ExecutorAddress(executor_id, f"unix:@test-{executor_id}")


def hello(executor_id: str, resources: Resources = OFFER) -> Ready:
    return Ready(address(executor_id), pid=1, resources=resources)


def started(clock: FakeClock, cap: int = 2, pools: dict[str, int] | None = None, **kw: float):
    """A scheduler asked for ``pools`` (default: f with ``cap`` executors), none ready."""
    scheduler = Scheduler(cap, offer=OFFER, **kw)  # type: ignore[arg-type]
    scheduler.handle(Start(), clock())
    for function, size in (pools or {"f": cap}).items():
        scheduler.handle(SetPool(function, size), clock())
    return scheduler


def all_ready(clock: FakeClock, cap: int = 2, pools: dict[str, int] | None = None) -> Scheduler:
    scheduler = started(clock, cap, pools)
    for executor_id in list(scheduler.executors):
        scheduler.handle(hello(executor_id), clock())
    return scheduler


def spawns(out: list) -> list[Spawn]:
    return [i for i in out if isinstance(i, Spawn)]


def idle_report(scheduler: Scheduler, clock: FakeClock, executor_id: str) -> list:
    return scheduler.handle(LoadReported(executor_id, 0, 0, frozenset()), clock())


# --- pools


def test_start_spawns_nothing(clock: FakeClock) -> None:
    assert Scheduler(3).handle(Start(), clock()) == []


def test_set_pool_spawns_up_to_its_size_with_the_preload(clock: FakeClock) -> None:
    scheduler = Scheduler(3)
    out = scheduler.handle(SetPool("f", 2, ("json",)), clock())
    assert out == [Spawn("x1", ("json",)), Spawn("x2", ("json",))]
    assert all(r.pins == {"f"} for r in scheduler.executors.values())


def test_ready_announces_the_executor_and_its_pool(clock: FakeClock) -> None:
    scheduler = started(clock)
    out = scheduler.handle(hello("x1"), clock())
    assert out == [Pin("x1", "f"), ExecutorsChanged((address("x1"),), {"f": ("x1",)})]
    assert scheduler.executors["x1"].state is ExecutorState.READY


def test_a_pool_never_passes_the_cap(clock: FakeClock) -> None:
    scheduler = Scheduler(2)
    assert len(spawns(scheduler.handle(SetPool("f", 5), clock()))) == 2


def test_at_the_cap_functions_share_executors(clock: FakeClock) -> None:
    scheduler = all_ready(clock, cap=2, pools={"f": 2})
    out = scheduler.handle(SetPool("g", 1), clock())
    assert spawns(out) == []
    assert sum("g" in r.pins for r in scheduler.executors.values()) == 1
    assert out[-1].pools["g"] == ("x1",)  # type: ignore[union-attr]


def test_a_shrinking_pool_leaves_the_executor_with_most_other_work_last(
    clock: FakeClock,
) -> None:
    scheduler = all_ready(clock, cap=2, pools={"f": 2, "g": 1})  # g shares x1
    scheduler.handle(SetPool("f", 1), clock())
    assert scheduler.executors["x2"].pins == set()  # x1 holds g too: f stays there
    assert scheduler.executors["x2"].state is ExecutorState.DRAINING


def test_scale_to_zero_unpins_and_drains(clock: FakeClock) -> None:
    scheduler = all_ready(clock, cap=2)
    out = scheduler.handle(SetPool("f", 0), clock())
    assert Unpin("x1", "f") in out and Unpin("x2", "f") in out
    assert out[-1] == ExecutorsChanged((address("x1"), address("x2")), {})
    assert {r.state for r in scheduler.executors.values()} == {ExecutorState.DRAINING}


def test_draining_executors_retire_once_idle_after_the_drain(clock: FakeClock) -> None:
    scheduler = all_ready(clock, cap=1)
    scheduler.handle(SetPool("f", 0), clock())
    clock.advance(1)
    assert scheduler.handle(Tick(), clock()) == []  # no report since draining began
    scheduler.handle(LoadReported("x1", 1, 0, frozenset()), clock())
    assert scheduler.handle(Tick(), clock()) == []  # still busy
    idle_report(scheduler, clock, "x1")
    assert scheduler.handle(Tick(), clock()) == [Retire("x1"), ExecutorsChanged((), {})]
    assert scheduler.handle(Exited("x1"), clock()) == []
    assert scheduler.executors == {}


def test_a_draining_executor_is_reused_before_forking(clock: FakeClock) -> None:
    scheduler = all_ready(clock, cap=1)
    scheduler.handle(SetPool("f", 0), clock())
    out = scheduler.handle(SetPool("g", 1), clock())
    assert spawns(out) == []
    assert scheduler.executors["x1"].state is ExecutorState.READY
    assert out == [Pin("x1", "g"), ExecutorsChanged((address("x1"),), {"g": ("x1",)})]


def test_an_executor_whose_pool_went_while_starting_drains_once_ready(
    clock: FakeClock,
) -> None:
    scheduler = started(clock, cap=1)
    scheduler.handle(SetPool("f", 0), clock())
    scheduler.handle(hello("x1"), clock())
    assert scheduler.executors["x1"].state is ExecutorState.DRAINING
    assert scheduler.pools() == {}


def test_exit_of_a_pool_executor_spawns_a_replacement(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    out = scheduler.handle(Exited("x1"), clock())
    assert out == [Spawn("x3"), ExecutorsChanged((address("x2"),), {"f": ("x2",)})]


def test_exit_of_an_unknown_executor_is_ignored(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    assert scheduler.handle(Exited("x9"), clock()) == []


def test_unexpected_ready_is_killed(clock: FakeClock) -> None:
    scheduler = started(clock)
    assert scheduler.handle(hello("x9"), clock()) == [Kill("x9", "unexpected hello")]
    assert "x9" not in scheduler.executors


def test_second_ready_of_the_same_executor_is_killed(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    assert scheduler.handle(hello("x1"), clock()) == [Kill("x1", "unexpected hello")]


# --- start timeout


def test_tick_within_start_timeout_does_nothing(clock: FakeClock) -> None:
    scheduler = started(clock, start_timeout=10.0)
    clock.advance(10)
    assert scheduler.handle(Tick(), clock()) == []


def test_tick_kills_and_replaces_executors_that_did_not_say_hello(clock: FakeClock) -> None:
    scheduler = started(clock, cap=1, start_timeout=10.0)
    clock.advance(11)
    out = scheduler.handle(Tick(), clock())
    assert out == [Kill("x1", "did not start in time"), Spawn("x2")]
    assert scheduler.executors["x1"].state is ExecutorState.STOPPING


def test_an_executor_waiting_for_its_store_is_not_killed_as_too_slow(clock: FakeClock) -> None:
    scheduler = started(clock, cap=1, start_timeout=10.0)
    for _ in range(5):  # it reports every few seconds that it still waits
        clock.advance(8)
        assert scheduler.handle(StartDelayed("x1"), clock()) == []
        assert scheduler.handle(Tick(), clock()) == []
    clock.advance(11)  # then it goes silent
    assert scheduler.handle(Tick(), clock())[0] == Kill("x1", "did not start in time")


def test_late_hello_of_a_killed_executor_is_killed(clock: FakeClock) -> None:
    scheduler = started(clock, cap=1, start_timeout=10.0)
    clock.advance(11)
    scheduler.handle(Tick(), clock())
    assert scheduler.handle(hello("x1"), clock()) == [Kill("x1", "unexpected hello")]


def test_tick_leaves_ready_executors_alone(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    clock.advance(3600)
    assert scheduler.handle(Tick(), clock()) == []


# --- crash loops


def crash(scheduler: Scheduler, clock: FakeClock, times: int) -> list:
    """Let the newest executor die ``times`` times in a row; the last instructions."""
    out: list = []
    for _ in range(times):
        newest = max(scheduler.executors, key=lambda e: int(e[1:]))
        out = scheduler.handle(Exited(newest), clock())
    return out


def test_a_few_deaths_are_replaced_at_once(clock: FakeClock) -> None:
    scheduler = started(clock, cap=1)
    assert crash(scheduler, clock, 2) == [Spawn("x3")]


def test_crash_loop_delays_the_next_spawn(clock: FakeClock) -> None:
    scheduler = started(clock, cap=1, crash_window=10.0)
    assert crash(scheduler, clock, 3) == []  # more than 2 * cap deaths
    assert scheduler.executors == {}


def test_crash_loop_respawns_on_a_tick_after_the_delay(clock: FakeClock) -> None:
    scheduler = started(clock, cap=1, crash_window=10.0)
    crash(scheduler, clock, 3)
    assert scheduler.handle(Tick(), clock()) == []
    clock.advance(5)
    assert scheduler.handle(Tick(), clock()) == [Spawn("x4")]


def test_deaths_spread_beyond_the_crash_window_do_not_delay(clock: FakeClock) -> None:
    scheduler = started(clock, cap=1, crash_window=10.0)
    for _ in range(5):
        clock.advance(11)
        assert spawns(crash(scheduler, clock, 1)) != []


def test_retired_executors_do_not_count_as_crashes(clock: FakeClock) -> None:
    scheduler = all_ready(clock, cap=1)
    for _ in range(4):
        scheduler.handle(SetPool("f", 0), clock())
        clock.advance(1)
        executor_id = next(iter(scheduler.executors))
        idle_report(scheduler, clock, executor_id)
        scheduler.handle(Tick(), clock())
        scheduler.handle(Exited(executor_id), clock())
        assert spawns(scheduler.handle(SetPool("f", 1), clock())) != []
        scheduler.handle(hello(next(iter(scheduler.executors))), clock())


# --- kills and shutdown


def test_kill_requested_of_a_ready_executor_kills_announces_and_replaces(
    clock: FakeClock,
) -> None:
    scheduler = all_ready(clock)
    out = scheduler.handle(KillRequested("x1", "runaway"), clock())
    assert out == [
        Kill("x1", "runaway"),
        Spawn("x3"),
        ExecutorsChanged((address("x2"),), {"f": ("x2",)}),
    ]
    assert scheduler.executors["x1"].state is ExecutorState.STOPPING


def test_kill_requested_twice_kills_once(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    scheduler.handle(KillRequested("x1", "runaway"), clock())
    assert scheduler.handle(KillRequested("x1", "runaway"), clock()) == []


def test_kill_requested_of_an_unknown_executor_is_ignored(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    assert scheduler.handle(KillRequested("x9", "why"), clock()) == []


def test_stop_kills_every_executor(clock: FakeClock) -> None:
    scheduler = started(clock, cap=3)
    scheduler.handle(hello("x1"), clock())
    out = scheduler.handle(Stop(), clock())
    assert sorted(i.executor_id for i in out if isinstance(i, Kill)) == ["x1", "x2", "x3"]
    assert out[-1] == ExecutorsChanged((), {})


def test_no_respawn_after_stop(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    scheduler.handle(Stop(), clock())
    assert spawns(scheduler.handle(Exited("x1"), clock())) == []
    clock.advance(60)
    assert scheduler.handle(Tick(), clock()) == []


# --- placement


def loaded(scheduler: Scheduler, clock: FakeClock, executor_id: str, inflight: int) -> None:
    scheduler.handle(LoadReported(executor_id, inflight, 0, frozenset()), clock())


def ids(addresses: list[ExecutorAddress]) -> list[str]:
    return [a.executor_id for a in addresses]


def test_place_lists_the_pool_least_loaded_first(clock: FakeClock) -> None:
    scheduler = all_ready(clock, cap=3, pools={"f": 2, "g": 1})
    loaded(scheduler, clock, "x1", 3)
    assert ids(scheduler.place(Resources(), "f")) == ["x2", "x1"]
    assert ids(scheduler.place(Resources(), "g")) == ["x3"]
    assert scheduler.place(Resources(), "h") == []


def test_place_offers_only_ready_executors(clock: FakeClock) -> None:
    scheduler = started(clock)
    scheduler.handle(hello("x2"), clock())
    assert ids(scheduler.place(Resources(), "f")) == ["x2"]
    assert scheduler.pool_counts("f") == (1, 1)


def test_place_filters_by_resources(clock: FakeClock) -> None:
    scheduler = started(clock)
    scheduler.handle(hello("x1", Resources(cpu=1.0, memory_mb=512)), clock())
    scheduler.handle(hello("x2", Resources(cpu=4.0, memory_mb=8192, gpus=1)), clock())
    assert ids(scheduler.place(Resources(gpus=1), "f")) == ["x2"]
    assert ids(scheduler.place(Resources(memory_mb=4096), "f")) == ["x2"]
    assert ids(scheduler.place(Resources(cpu=8.0), "f")) == []


def test_load_report_of_an_unknown_executor_is_ignored(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    assert scheduler.handle(LoadReported("x9", 1, 1, frozenset({"f"})), clock()) == []


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (Resources(), True),
        (Resources(cpu=2.0, memory_mb=1024), True),
        (Resources(cpu=2.5), False),
        (Resources(memory_mb=2048), False),
        (Resources(gpus=1), False),
    ],
)
def test_can_ever_host_compares_with_the_offer(request_: Resources, expected: bool) -> None:
    assert Scheduler(1, offer=OFFER).can_ever_host(request_) is expected


def test_functions_of_one_dag_share_an_executor_below_the_cap(clock: FakeClock) -> None:
    scheduler = all_ready(clock, cap=4, pools={"incr": 1})
    out = scheduler.handle(SetPool("square", 1, colocate=("incr",)), clock())
    assert spawns(out) == []
    assert scheduler.pools() == {"incr": ("x1",), "square": ("x1",)}
    assert spawns(scheduler.handle(SetPool("other", 1), clock())) == [Spawn("x2")]
