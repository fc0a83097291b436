"""The coordinator's pools drive a provisioner: ``stratus provision local --autoscale``.

A real coordinator with one executor on its own host (taken by ``steady``) and an
autoscaling local provisioner with no agent: a burst of ``burst`` calls wants more
executors than that host holds, so the provisioner starts nodes (two at most) and the
pool grows onto them; once ``burst`` lets its executors go, the nodes are idle, and after
the keep-alive they are drained and stopped while ``steady`` keeps answering. Every
call acknowledged is counted once in a kv counter: none is lost or run twice.

While a provisioner that can add GPU nodes polls, a function only such a node could host
waits for one (and fails at its deadline when none comes) instead of ``NoCapacity``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import routable_coordinator
import stratus
from helpers import wait_until
from stratus import config as cfg
from stratus.protocol.messages import Resources, Shortfall
from stratus.provision.demand import CoordinatorDemand

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    what = "the autoscaling provisioner's test"
    with routable_coordinator.for_test(tmp_path_factory, what) as served:
        yield served


def _counted(ctx: stratus.Context, delay: float) -> str:
    ctx.kv.incr("calls")
    time.sleep(delay)
    return os.environ.get("STRATUS_NODE", "0")


def _executor_nodes(app: stratus.App) -> set[str]:
    return {e.node for e in app.status().executors if e.state != "stopping"}


def test_a_burst_starts_nodes_and_idle_nodes_are_stopped(
    coordinator: tuple[str, Path], tmp_path: Path
) -> None:
    address, data_dir = coordinator
    command = [*routable_coordinator.STRATUS, "provision", "local", "--autoscale"]
    command += ["--join", address, "--data-dir", str(data_dir), "--base-dir", str(tmp_path)]
    command += ["--max-nodes", "2", "--cores", "1", "--memory-mb", "512"]
    command += ["--node-keep-alive", "1", "--sync-interval", "0.3", "--log-level", "INFO"]
    log_path = tmp_path / "provision.log"
    with open(log_path, "w") as log:
        provision = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    acknowledged = 0
    try:
        with stratus.connect(address, data_dir=data_dir) as app:
            steady = app.function(name="steady", min_instances=1)(_counted)
            assert steady.remote(0.0).result(timeout=60) == "0"  # node 0's one executor
            acknowledged += 1
            burst = app.function(name="burst", max_instances=3, memory_mb=256)(_counted)

            # More calls than node 0 holds, in flight while nodes start and join.
            futures = [burst.remote(1.0) for _ in range(6)]
            assert wait_until(lambda: {"local-1", "local-2"} <= _executor_nodes(app), 120), (
                log_path.read_text()
            )
            acknowledged += len([f.result(timeout=120) for f in futures])
            seen: set[str] = set()

            def spread() -> bool:
                nonlocal acknowledged
                results = [f.result(timeout=60) for f in [burst.remote(0.5) for _ in range(6)]]
                acknowledged += len(results)
                seen.update(results)
                return bool(seen & {"local-1", "local-2"})

            assert wait_until(spread, 60), seen  # calls run on the nodes it started

            # burst lets its executors go: the nodes are idle, then drained and stopped;
            # steady's calls are answered all along.
            app.function(name="burst", max_instances=0, memory_mb=256)(_counted)

            def shrunk() -> bool:
                nonlocal acknowledged
                steady.remote(0.0).result(timeout=60)
                acknowledged += 1
                text = log_path.read_text()
                return "stop node local-1" in text and "stop node local-2" in text

            assert wait_until(shrunk, 120), log_path.read_text()
            assert wait_until(lambda: _executor_nodes(app) == {"0"}, 30), _executor_nodes(app)
            assert provision.poll() is None  # it goes on polling
            assert wait_until(lambda: app.kv.get("calls") == acknowledged, 30)
            assert app.kv.get("calls") == acknowledged  # each call applied once
    finally:
        routable_coordinator.stop(provision)


def _needs_a_gpu(ctx: stratus.Context) -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_a_function_only_a_new_node_could_host_waits_for_one(
    coordinator: tuple[str, Path],
) -> None:
    address, data_dir = coordinator
    demand = CoordinatorDemand(address, cfg.load_key(None, data_dir))
    try:
        # A provisioner that can add nodes with a GPU polls: such a function is no longer
        # NoCapacity at its first call; it waits for a node, within its deadline.
        assert demand.poll([], Resources(1.0, 1024, 1)).shortfall == []
        with stratus.connect(address, data_dir=data_dir) as app:
            gpu = app.function(name="gpu", gpus=1, timeout=1.0, retries=0)(_needs_a_gpu)
            future = gpu.remote()
            with pytest.raises(TimeoutError):
                future.result(timeout=30)  # its deadline, not ours: no node came
            answer = demand.poll([], Resources(1.0, 1024, 1))
            assert Shortfall(gpu.options.resources, 1) in answer.shortfall  # it is missed
            assert {n.node_id for n in answer.nodes} == {"0"}
    finally:
        demand.close()
