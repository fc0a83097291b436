"""Pool sizes from the autoscaler and the keep-alive policy together, with a fake clock."""

from __future__ import annotations

import pytest

from stratus._exceptions import ConfigurationError
from stratus.config import AutoscalingConfig
from stratus.protocol.messages import FunctionLoad
from stratus.server.pools.elastic import (
    Configure,
    Demand,
    Elastic,
    Load,
    LoadBook,
    PoolChanged,
    Resize,
    Tick,
)
from stratus.testing import FakeClock

CONFIG = AutoscalingConfig(
    tick=1.0,
    stable_window=10.0,
    panic_window=2.0,
    scale_to_zero_grace=2.0,
    fixed_keep_alive=30.0,
    idle_bin=1.0,
    idle_range=60.0,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


def elastic(min_instances: int = 0, max_instances: int = 8, **changes: object) -> Elastic:
    config = AutoscalingConfig(**{**_fields(CONFIG), **changes})  # type: ignore[arg-type]
    e = Elastic(config)
    e.handle(Configure("f", min_instances, max_instances), 100.0)
    return e


def _fields(config: AutoscalingConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__struct_fields__}


def size(e: Elastic, function: str = "f") -> int:
    return e.sizes()[function][0]


def tick(e: Elastic, clock: FakeClock, *loads: Load) -> list[Resize]:
    clock.advance(1.0)
    for load in loads:
        e.handle(load, clock())
    return e.handle(Tick(), clock())


def idle_until(e: Elastic, clock: FakeClock, deadline: float) -> None:
    while clock() < deadline:
        tick(e, clock)


def test_a_new_function_has_no_pool(clock: FakeClock) -> None:
    e = elastic()
    assert size(e) == 0
    assert tick(e, clock) == []


def test_min_instances_are_kept_from_the_start() -> None:
    e = elastic(min_instances=2)
    assert size(e) == 2


def test_demand_on_an_empty_pool_is_decided_at_once(clock: FakeClock) -> None:
    e = elastic()
    out = e.handle(Demand("f", 3), clock())
    assert [(r.function, r.size) for r in out] == [("f", 3)]


def test_demand_on_a_full_pool_grows_it_at_once(clock: FakeClock) -> None:
    e = elastic()
    e.handle(Demand("f", 1), clock())
    out = e.handle(Demand("f", 5), clock())
    assert [(r.function, r.size) for r in out] == [("f", 3)]  # mean of the samples: 3
    e.handle(Demand("f", 5), clock())
    assert size(e) == 4  # and further while calls keep waiting (mean of 1, 5, 5, rounded up)


def test_a_burst_grows_the_pool_up_to_max_instances(clock: FakeClock) -> None:
    e = elastic(max_instances=4)
    e.handle(Demand("f", 1), clock())
    tick(e, clock, Load("f", calls=10, busy=1.0, running=1, queued=20))
    assert size(e) == 4


def test_short_calls_count_by_the_time_they_keep_executors_busy(clock: FakeClock) -> None:
    e = elastic()
    e.handle(Demand("f", 1), clock())
    for _ in range(5):  # 2.5 executors' worth of busy time per second, nothing seen running
        tick(e, clock, Load("f", calls=5000, busy=2.5, running=0, queued=0))
    assert size(e) == 3


def test_an_idle_pool_is_kept_warm_by_the_fixed_keep_alive_then_released(
    clock: FakeClock,
) -> None:
    e = elastic()
    e.handle(Demand("f", 1), clock())
    tick(e, clock, Load("f", calls=1, busy=0.01, running=0, queued=0))
    idle_until(e, clock, clock() + 10)
    assert size(e) == 1
    assert e.sizes()["f"][1].startswith("kept warm")
    idle_until(e, clock, clock() + 25)
    assert size(e) == 0


def test_min_instances_outlast_the_keep_alive(clock: FakeClock) -> None:
    e = elastic(min_instances=1)
    tick(e, clock, Load("f", calls=1, busy=0.01, running=0, queued=0))
    idle_until(e, clock, clock() + 60)
    assert size(e) == 1


def test_a_running_call_is_never_released(clock: FakeClock) -> None:
    e = elastic(fixed_keep_alive=1.0)
    e.handle(Demand("f", 1), clock())
    for _ in range(20):
        tick(e, clock, Load("f", calls=0, busy=0.0, running=1, queued=0))
    assert size(e) == 1


def periodic(e: Elastic, clock: FakeClock, period: int, calls: int) -> list[tuple[float, int]]:
    """Calls of f every ``period`` ticks; the pool size seen at every tick."""
    seen: list[tuple[float, int]] = []
    for i in range(calls * period):
        if i % period == 0:
            if size(e) == 0:
                e.handle(Demand("f", 1), clock())
            tick(e, clock, Load("f", calls=1, busy=0.05, running=0, queued=0))
        else:
            tick(e, clock)
        seen.append((clock(), size(e)))
    return seen


def test_learned_keep_alive_unloads_between_periodic_calls_and_prewarms(
    clock: FakeClock,
) -> None:
    e = elastic(scale_to_zero_grace=1.0)
    seen = periodic(e, clock, period=20, calls=20)
    last = seen[-20:]  # the last period: one call, then idle until the next
    sizes = [s for _, s in last]
    assert 0 in sizes  # unloaded in the middle of the gap
    assert sizes[-1] == 1  # and warm again before the next call is due
    assert "histogram" in e.keepalive.windows("f").source


def test_fixed_keep_alive_keeps_a_periodic_function_warm_throughout(clock: FakeClock) -> None:
    e = elastic(scale_to_zero_grace=1.0, keep_alive="fixed")
    seen = periodic(e, clock, period=20, calls=20)
    assert all(s == 1 for _, s in seen[-20:])
    assert "fixed" in e.keepalive.windows("f").source


def test_max_instances_caps_a_held_pool_too(clock: FakeClock) -> None:
    e = Elastic(CONFIG)
    e.handle(Configure("g", 0, 0), clock())
    assert e.handle(Demand("g", 5), clock()) == []
    assert size(e, "g") == 0


def test_load_book_turns_totals_into_differences() -> None:
    book = LoadBook()
    book.report("x1", {"f": FunctionLoad(10, 1.0, 0, 0)})
    book.report("x2", {"f": FunctionLoad(5, 0.5, 1, 2)})
    assert book.loads() == [Load("f", 15, 1.5, 1, 2)]
    book.report("x1", {"f": FunctionLoad(12, 1.25, 0, 0)})
    assert book.loads() == [Load("f", 2, 0.25, 1, 2)]
    book.forget("x2")
    assert book.loads() == [Load("f", 0, 0.0, 0, 0)]


@pytest.mark.parametrize(
    "changes",
    [{"tick": 0.0}, {"keep_alive": "forever"}, {"drain": -1.0}, {"utilization": -0.5}],
)
def test_bad_autoscaling_settings_are_configuration_errors(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        AutoscalingConfig(**changes)  # type: ignore[arg-type]


def run_like_the_coordinator(e: Elastic, clock: FakeClock, running: int, ticks: int) -> None:
    """``running`` calls on every tick, the pool's executors all ready at once."""
    for _ in range(ticks):
        e.handle(PoolChanged("f", size(e), 0), clock())
        tick(e, clock, Load("f", running, float(running), running, 0))


def test_panic_compares_a_burst_with_the_ready_executors(clock: FakeClock) -> None:
    calm, burst = elastic(), elastic()
    for e in (calm, burst):
        run_like_the_coordinator(e, clock, 2, ticks=12)
        assert size(e) == 2 and not e.scaler.pools["f"].panicking
    run_like_the_coordinator(calm, clock, 3, ticks=1)  # 1.5 x the ready pool: no panic
    assert not calm.scaler.pools["f"].panicking
    run_like_the_coordinator(burst, clock, 4, ticks=1)  # twice the ready pool
    assert burst.scaler.pools["f"].panicking
    assert any("panic" in d.reason and "2 ready" in d.reason for d in burst.scaler.history)
    assert size(burst) > 2  # grown on this very tick
