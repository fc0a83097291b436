"""GPUs partitioned among executors, without GPUs: a node agent told it has GPUs 0, 1, 2.

A function with ``gpus=1`` held open by three calls at once runs on three executors, each
with its own ``CUDA_VISIBLE_DEVICES``; a fourth call waits for one of them (no GPU is
left for a fourth executor); once its executors have exited, their GPUs go to new ones.
A function without GPUs on that node sees an empty ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import routable_coordinator
import stratus
from helpers import wait_until
from stratus import config as cfg
from stratus.provision.local import LocalProvisioner

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with routable_coordinator.for_test(tmp_path_factory, "the GPU partition test") as served:
        address, data_dir = served
        work = data_dir.parent
        key = cfg.load_key(None, data_dir)
        gpus = ("0", "1", "2")
        node = LocalProvisioner(
            address, key, str(work / "agents"), cores=4, memory_mb=4096, gpus=gpus, prefix="gpu"
        )
        try:
            node.start()
            log = work / "agents" / "gpu-1" / "agent.log"
            assert wait_until(lambda: log.exists() and "joined" in log.read_text(), 60)
            yield address, data_dir
        finally:
            node.stop()


def _held_gpus(ctx: stratus.Context, flag: str) -> str | None:
    """Its GPUs, once ``flag`` is set; says it runs (``<flag>/running/<id>``) first."""
    ctx.kv_now.put(f"{flag}/running/{ctx.invocation_id}", True)
    deadline = time.monotonic() + 60
    while not ctx.kv_now.get(flag) and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _gpus_here(ctx: stratus.Context) -> tuple[str, str | None]:
    time.sleep(0.2)  # calls at once then go to different executors
    return os.environ.get("STRATUS_NODE", "0"), os.environ.get("CUDA_VISIBLE_DEVICES")


def _hold_three(app: stratus.App, fn: stratus.Function, flag: str) -> list[str | None]:
    """Three calls running at once on the pool's three ready executors (a call held
    without room would go to a busy one after 0.5 s), then a fourth; all answered once
    ``flag`` is set."""
    assert wait_until(lambda: _gpu_executors(app, "ready") == 3, 60)
    held = [fn.remote(flag) for _ in range(3)]
    assert wait_until(lambda: len(app.kv.keys(f"{flag}/running/")) == 3, 60)
    fourth = fn.remote(flag)
    assert not fourth.done()  # no fourth GPU: it waits for one of the three executors
    app.kv.put(flag, True)
    ids = [f.result(timeout=60) for f in held]
    assert fourth.result(timeout=60) in ids
    assert _gpu_executors(app) == 3  # a fourth executor never started: no GPU for it
    return ids


def _gpu_executors(app: stratus.App, *states: str) -> int:
    """Executors on the GPU node, in ``states`` (default: any but stopping)."""
    states = states or ("starting", "ready", "draining")
    return sum(1 for e in app.status().executors if e.node == "gpu-1" and e.state in states)


def test_each_executor_gets_its_own_gpu_and_they_are_freed(cluster: tuple[str, Path]) -> None:
    address, data_dir = cluster
    with stratus.connect(address, data_dir=data_dir) as app:
        train = app.function(name="train", gpus=1, min_instances=3, max_instances=4)(_held_gpus)
        assert sorted(_hold_three(app, train, "go-1")) == ["0", "1", "2"]

        # Its pool let go (max 0), its executors exit and give their GPUs back.
        app.function(name="train", gpus=1, max_instances=0)(_held_gpus)
        assert wait_until(lambda: _gpu_executors(app) == 0, 60)
        train = app.function(name="train", gpus=1, min_instances=3, max_instances=4)(_held_gpus)
        assert sorted(_hold_three(app, train, "go-2")) == ["0", "1", "2"]


def test_a_function_without_gpus_sees_none_on_a_gpu_node(cluster: tuple[str, Path]) -> None:
    address, data_dir = cluster
    with stratus.connect(address, data_dir=data_dir) as app:
        plain = app.function(name="plain", min_instances=2)(_gpus_here)
        seen: dict[str, str | None] = {}
        calls = lambda: [f.result(timeout=60) for f in [plain.remote() for _ in range(4)]]  # noqa: E731
        assert wait_until(lambda: seen.update(calls()) or "gpu-1" in seen, 60), seen
        assert seen["gpu-1"] == ""  # hidden from every GPU, not given them all
