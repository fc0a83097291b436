"""The local provisioner: node agents as processes of this machine, for a real coordinator.

``LocalProvisioner`` in the test process runs two agents: calls land on both, ``scale(1)``
stops the newest, ``stop()`` the rest, and their executors leave the coordinator each
time. ``stratus provision local`` killed with SIGKILL takes its agents with it (they die
with their parent), so no agent outlives its provisioner.
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
from helpers import alive, wait_until
from stratus import config as cfg
from stratus.provision.local import LocalProvisioner

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with routable_coordinator.for_test(tmp_path_factory, "the local provisioner's test") as served:
        yield served


def _where(ctx: stratus.Context, delay: float) -> str:
    time.sleep(delay)
    return os.environ.get("STRATUS_NODE", "0")


def _nodes(app: stratus.App) -> set[str]:
    return {e.node for e in app.status().executors}


def test_agents_start_scale_and_stop(coordinator: tuple[str, Path], tmp_path: Path) -> None:
    address, data_dir = coordinator
    key = cfg.load_key(None, data_dir)
    provisioner = LocalProvisioner(address, key, str(tmp_path), nodes=2, cores=1, memory_mb=512)
    try:
        agents = provisioner.start()
        assert [a.node_id for a in agents] == ["local-1", "local-2"]
        with stratus.connect(address, data_dir=data_dir) as app:
            where = app.function(name="where", min_instances=3, memory_mb=100)(_where)
            assert wait_until(lambda: _nodes(app) == {"0", "local-1", "local-2"}, 60)
            seen: set[str] = set()
            calls = lambda: {f.result(timeout=60) for f in [where.remote(0.05) for _ in range(9)]}  # noqa: E731
            assert wait_until(lambda: seen.update(calls()) or len(seen) == 3, 60), seen

            gone = agents[1].pid
            assert [a.node_id for a in provisioner.scale(1)] == ["local-1"]
            assert not alive(gone)
            assert wait_until(lambda: _nodes(app) == {"0", "local-1"}, 30), _nodes(app)
            assert calls() <= {"0", "local-1"}

            provisioner.stop()
            assert provisioner.agents() == [] and not alive(agents[0].pid)
            assert wait_until(lambda: _nodes(app) == {"0"}, 30), _nodes(app)
    finally:
        provisioner.stop()


def test_agents_die_with_a_killed_provisioner(
    coordinator: tuple[str, Path], tmp_path: Path
) -> None:
    address, data_dir = coordinator
    command = [*routable_coordinator.STRATUS, "provision", "local", "--join", address]
    command += ["--data-dir", str(data_dir), "--nodes", "2", "--cores", "1"]
    command += ["--memory-mb", "256", "--base-dir", str(tmp_path / "agents")]
    provision = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert provision.stdout is not None
    try:
        lines = [provision.stdout.readline() for _ in range(2)]  # "agent local-N ..., pid P"
        pids = [int(line.rsplit("pid", 1)[1]) for line in lines]
        with stratus.connect(address, data_dir=data_dir) as app:
            assert wait_until(lambda: {"local-1", "local-2"} <= _nodes(app), 60), _nodes(app)
            provision.kill()
            provision.wait(timeout=10)
            assert wait_until(lambda: not any(alive(pid) for pid in pids), 30)
            assert wait_until(lambda: _nodes(app) == {"0"}, 30), _nodes(app)
    finally:
        routable_coordinator.stop(provision)
        provision.stdout.close()
