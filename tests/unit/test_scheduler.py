"""The executor pool state machine and placement."""

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
    Ready,
    Scheduler,
    Spawn,
    Start,
    Stop,
    Tick,
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


def started(clock: FakeClock, pool_size: int = 2, **kwargs: float) -> Scheduler:
    """A scheduler whose pool was spawned, none of it ready yet."""
    scheduler = Scheduler(pool_size, offer=OFFER, **kwargs)  # type: ignore[arg-type]
    scheduler.handle(Start(), clock())
    return scheduler


def all_ready(clock: FakeClock, pool_size: int = 2) -> Scheduler:
    scheduler = started(clock, pool_size)
    for executor_id in list(scheduler.executors):
        scheduler.handle(hello(executor_id), clock())
    return scheduler


def spawns(out: list) -> list[Spawn]:
    return [i for i in out if isinstance(i, Spawn)]


# --- the pool


def test_start_spawns_pool_size_executors(clock: FakeClock) -> None:
    scheduler = Scheduler(3)
    assert scheduler.handle(Start(), clock()) == [Spawn("x1"), Spawn("x2"), Spawn("x3")]
    assert all(r.state is ExecutorState.STARTING for r in scheduler.executors.values())


def test_ready_moves_to_ready_and_announces_the_executor(clock: FakeClock) -> None:
    scheduler = started(clock)
    assert scheduler.handle(hello("x1"), clock()) == [ExecutorsChanged((address("x1"),))]
    assert scheduler.executors["x1"].state is ExecutorState.READY


def test_executors_changed_lists_every_ready_executor(clock: FakeClock) -> None:
    scheduler = started(clock)
    scheduler.handle(hello("x1"), clock())
    out = scheduler.handle(hello("x2"), clock())
    assert out == [ExecutorsChanged((address("x1"), address("x2")))]


def test_unexpected_ready_is_killed(clock: FakeClock) -> None:
    scheduler = started(clock)
    assert scheduler.handle(hello("x9"), clock()) == [Kill("x9", "unexpected hello")]
    assert "x9" not in scheduler.executors


def test_second_ready_of_the_same_executor_is_killed(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    assert scheduler.handle(hello("x1"), clock()) == [Kill("x1", "unexpected hello")]


def test_exit_of_a_ready_executor_announces_it_and_spawns_a_replacement(
    clock: FakeClock,
) -> None:
    scheduler = all_ready(clock)
    out = scheduler.handle(Exited("x1"), clock())
    assert out == [ExecutorsChanged((address("x2"),)), Spawn("x3")]


def test_exit_of_a_starting_executor_spawns_a_replacement_silently(clock: FakeClock) -> None:
    scheduler = started(clock)
    assert scheduler.handle(Exited("x1"), clock()) == [Spawn("x3")]


def test_exit_of_an_unknown_executor_is_ignored(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    assert scheduler.handle(Exited("x9"), clock()) == []


# --- start timeout


def test_tick_within_start_timeout_does_nothing(clock: FakeClock) -> None:
    scheduler = started(clock, start_timeout=10.0)
    clock.advance(10)
    assert scheduler.handle(Tick(), clock()) == []


def test_tick_kills_and_replaces_executors_that_did_not_say_hello(clock: FakeClock) -> None:
    scheduler = started(clock, pool_size=1, start_timeout=10.0)
    clock.advance(11)
    out = scheduler.handle(Tick(), clock())
    assert out == [Kill("x1", "did not start in time"), Spawn("x2")]
    assert scheduler.executors["x1"].state is ExecutorState.STOPPING


def test_tick_leaves_ready_executors_alone(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    clock.advance(3600)
    assert scheduler.handle(Tick(), clock()) == []


def test_late_hello_of_a_killed_executor_is_killed(clock: FakeClock) -> None:
    scheduler = started(clock, pool_size=1, start_timeout=10.0)
    clock.advance(11)
    scheduler.handle(Tick(), clock())
    assert scheduler.handle(hello("x1"), clock()) == [Kill("x1", "unexpected hello")]


# --- crash loops


def crash(scheduler: Scheduler, clock: FakeClock, times: int) -> list:
    """Let the newest executor die ``times`` times in a row; the last instructions."""
    out: list = []
    for _ in range(times):
        newest = max(scheduler.executors, key=lambda e: int(e[1:]))
        out = scheduler.handle(Exited(newest), clock())
    return out


def test_a_few_deaths_are_replaced_at_once(clock: FakeClock) -> None:
    scheduler = started(clock, pool_size=1)
    assert crash(scheduler, clock, 2) == [Spawn("x3")]


def test_crash_loop_delays_the_next_spawn(clock: FakeClock) -> None:
    scheduler = started(clock, pool_size=1, crash_window=10.0)
    assert crash(scheduler, clock, 3) == []  # more than 2 * pool_size deaths
    assert scheduler.executors == {}


def test_crash_loop_respawns_on_a_tick_after_the_delay(clock: FakeClock) -> None:
    scheduler = started(clock, pool_size=1, crash_window=10.0)
    crash(scheduler, clock, 3)
    assert scheduler.handle(Tick(), clock()) == []
    clock.advance(5)
    assert scheduler.handle(Tick(), clock()) == [Spawn("x4")]


def test_deaths_spread_beyond_the_crash_window_do_not_delay(clock: FakeClock) -> None:
    scheduler = started(clock, pool_size=1, crash_window=10.0)
    for _ in range(5):
        clock.advance(11)
        assert spawns(crash(scheduler, clock, 1)) != []


# --- kills and shutdown


def test_kill_requested_of_a_ready_executor_kills_and_announces(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    out = scheduler.handle(KillRequested("x1", "runaway"), clock())
    assert out == [Kill("x1", "runaway"), ExecutorsChanged((address("x2"),))]
    assert scheduler.executors["x1"].state is ExecutorState.STOPPING


def test_kill_requested_of_a_starting_executor_only_kills(clock: FakeClock) -> None:
    scheduler = started(clock)
    assert scheduler.handle(KillRequested("x1", "why"), clock()) == [Kill("x1", "why")]


def test_kill_requested_twice_kills_once(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    scheduler.handle(KillRequested("x1", "runaway"), clock())
    assert scheduler.handle(KillRequested("x1", "runaway"), clock()) == []


def test_kill_requested_of_an_unknown_executor_is_ignored(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    assert scheduler.handle(KillRequested("x9", "why"), clock()) == []


def test_killed_executor_is_replaced_when_it_exits(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    scheduler.handle(KillRequested("x1", "runaway"), clock())
    assert scheduler.handle(Exited("x1"), clock()) == [Spawn("x3")]


def test_stop_kills_every_executor(clock: FakeClock) -> None:
    scheduler = started(clock, pool_size=3)
    scheduler.handle(hello("x1"), clock())
    out = scheduler.handle(Stop(), clock())
    assert sorted(i.executor_id for i in out if isinstance(i, Kill)) == ["x1", "x2", "x3"]


def test_stop_does_not_kill_an_executor_twice(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    scheduler.handle(KillRequested("x1", "runaway"), clock())
    assert scheduler.handle(Stop(), clock()) == [
        Kill("x2", "cluster shutting down"),
        ExecutorsChanged(()),
    ]


def test_no_respawn_after_stop(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    scheduler.handle(Stop(), clock())
    assert spawns(scheduler.handle(Exited("x1"), clock())) == []
    clock.advance(60)
    assert scheduler.handle(Tick(), clock()) == []


# --- placement


def loaded(scheduler: Scheduler, clock: FakeClock, executor_id: str, inflight: int, *fns: str):
    scheduler.handle(LoadReported(executor_id, inflight, 0, frozenset(fns)), clock())


def ids(addresses: list[ExecutorAddress]) -> list[str]:
    return [a.executor_id for a in addresses]


def test_place_puts_warm_executors_first(clock: FakeClock) -> None:
    scheduler = all_ready(clock, pool_size=3)
    loaded(scheduler, clock, "x3", 5, "f")
    assert ids(scheduler.place(Resources(), "f"))[0] == "x3"


def test_place_orders_by_inflight_after_warmth(clock: FakeClock) -> None:
    scheduler = all_ready(clock, pool_size=4)
    loaded(scheduler, clock, "x1", 3)
    loaded(scheduler, clock, "x2", 1)
    loaded(scheduler, clock, "x3", 9, "f")
    loaded(scheduler, clock, "x4", 2, "f")
    assert ids(scheduler.place(Resources(), "f")) == ["x4", "x3", "x2", "x1"]


def test_place_ignores_executors_warm_for_another_function(clock: FakeClock) -> None:
    scheduler = all_ready(clock)
    loaded(scheduler, clock, "x1", 4, "g")
    loaded(scheduler, clock, "x2", 1)
    assert ids(scheduler.place(Resources(), "f")) == ["x2", "x1"]


def test_place_offers_only_ready_executors(clock: FakeClock) -> None:
    scheduler = started(clock)
    scheduler.handle(hello("x2"), clock())
    assert ids(scheduler.place(Resources(), "f")) == ["x2"]


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
def test_can_ever_host_compares_with_the_pool_offer(request_: Resources, expected: bool) -> None:
    assert Scheduler(1, offer=OFFER).can_ever_host(request_) is expected
