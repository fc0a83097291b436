"""The chaos suite, short: each fault of ``bench/chaos.py`` on a fresh cluster running the
three workloads (counter, bank, file appends), then its invariants.

Real processes throughout (coordinator, fork server, executors, a redis-server with AOF),
faults at seeded random moments. Nothing here asserts a speed: only invariants (no
duplicate, no lost acknowledged effect, a constant bank total, no call past its bound,
the cluster answers after the faults, no process left after close). A run goes on until
its fault struck at least once, so no run passes for want of a fault.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SEED = 7
DURATION = 2.5  # seconds of calls per fault; the whole file takes ~40 s here


@pytest.fixture(scope="module")
def chaos() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        import chaos

        yield chaos
    finally:
        sys.path.remove(str(BENCH))


FAULTS = [
    "kill_executor",
    "stop_executor",
    "disk_full",
    "hostile",
    "kill_executor_redis",
    "kill_redis",
    "stop_redis",
    "partition_iptables",
]


@pytest.mark.system
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", FAULTS)
def test_the_invariants_hold_under(chaos: ModuleType, fault: str, tmp_path: Path) -> None:
    assert set(FAULTS) == set(chaos.FAULTS)
    settings = chaos.Settings(seed=SEED, duration=DURATION)
    run: dict[str, Any] = chaos.run_one(fault, settings, tmp_path / "run", SEED)
    if "skipped" in run:
        pytest.skip(run["skipped"])
    assert chaos.violations(run) == [], run
    assert run["episodes"] >= 1
    for workload in run["workloads"].values():
        assert workload["duplicates"] == 0 and workload["lost"] == 0
        assert workload["acknowledged"] > 0  # the cluster served between the faults
    assert run["workloads"]["bank"]["total"] == chaos.ACCOUNTS * chaos.OPENING_BALANCE
    assert run["leftover_processes"] == []
