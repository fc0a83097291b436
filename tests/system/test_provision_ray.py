"""The Ray provisioner on a real Ray cluster: three raylets on this machine.

A Redis that every "host" reaches (on this machine's routable address, with a password),
``stratus up`` on it, a Ray cluster of three nodes (``ray_cluster_host.py``, in its own
process: Ray never loads into the test's) and ``stratus provision ray`` as its driver.
Calls land on executors of every Ray node; stopping the provisioner removes its agents
and their executors; ``--nodes 2`` runs two agents. The cluster key is never on a command
line. Skipped when Ray is not installed or this machine has only a loopback address.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import routable_coordinator
import stratus
from helpers import wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(400)]

_STRATUS = routable_coordinator.STRATUS
_HOST = Path(__file__).with_name("ray_cluster_host.py")


def _refusal() -> str:
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (the bench extra)"
    return routable_coordinator.refusal()


@dataclass
class Setup:
    address: str
    data_dir: Path
    ray_address: str
    work: Path

    def provision(self, *args: str) -> subprocess.Popen[str]:
        command = [*_STRATUS, "provision", "ray", "--address", self.ray_address]
        command += ["--join", self.address, "--data-dir", str(self.data_dir)]
        command += ["--cpus", "1", "--memory-mb", "512", "--sync-interval", "1"]
        command += ["--base-dir", str(self.work / "agents"), *args]
        log = open(self.work / f"provision-{secrets.token_hex(2)}.log", "w")  # noqa: SIM115
        with log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    refusal = _refusal()
    if refusal:
        pytest.skip(f"the Ray provisioner's test: {refusal}")
    work = tmp_path_factory.mktemp("provision-ray")
    ray_host = subprocess.Popen(
        [sys.executable, str(_HOST)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=work,
    )
    assert ray_host.stdin is not None and ray_host.stdout is not None
    try:
        with routable_coordinator.serve(work) as (address, data_dir):
            ray_address = ray_host.stdout.readline().strip()  # the host waits 60 s at most
            assert ray_address, "the Ray cluster did not start"
            yield Setup(address, data_dir, ray_address, work)
    finally:
        ray_host.stdin.close()  # the Ray host shuts its cluster down
        try:
            ray_host.wait(timeout=60)
        except subprocess.TimeoutExpired:
            ray_host.kill()
            ray_host.wait(timeout=10)
        ray_host.stdout.close()
        for log in sorted(work.glob("*.log")):
            print(f"== {log.name}\n{log.read_text()[-3000:]}")


def _where(ctx: stratus.Context, delay: float) -> str:
    import time

    time.sleep(delay)
    return os.environ.get("STRATUS_NODE", "0")


def _nodes_used(fn: stratus.Function, calls: int = 12) -> set[str]:
    return {f.result(timeout=60) for f in [fn.remote(0.05) for _ in range(calls)]}


def _executor_nodes(app: stratus.App) -> set[str]:
    return {e.node for e in app.status().executors}


def _key_on_a_command_line(key: str) -> bool:
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if key.encode() in f.read():
                    return True
        except OSError:
            continue
    return False


def test_agents_on_every_ray_node_run_calls_and_go_when_stopped(setup: Setup) -> None:
    provisioner = setup.provision()
    try:
        with stratus.connect(setup.address, data_dir=setup.data_dir) as app:
            where = app.function(name="where", min_instances=4, memory_mb=100)(_where)
            ray_nodes = lambda: {n for n in _executor_nodes(app) if n.startswith("ray-")}  # noqa: E731
            assert wait_until(lambda: len(ray_nodes()) == 3, timeout=120), _executor_nodes(app)
            seen: set[str] = set()
            assert wait_until(lambda: seen.update(_nodes_used(where)) or len(seen) == 4, 120)
            assert seen == {"0", *ray_nodes()}, seen
            key = (setup.data_dir / "key").read_text().strip()
            assert not _key_on_a_command_line(key)

            assert routable_coordinator.stop(provisioner) == 0
            assert wait_until(lambda: _executor_nodes(app) == {"0"}, timeout=30)
            assert _nodes_used(where) == {"0"}
    finally:
        routable_coordinator.stop(provisioner)


def test_nodes_option_runs_that_many_agents(setup: Setup) -> None:
    provisioner = setup.provision("--nodes", "2")
    try:
        with stratus.connect(setup.address, data_dir=setup.data_dir) as app:
            where = app.function(name="where2", min_instances=4, memory_mb=100)(_where)
            nodes = lambda: {n for n in _executor_nodes(app) if n.startswith("ray-")}  # noqa: E731
            assert wait_until(lambda: len(nodes()) == 2, timeout=120), _executor_nodes(app)
            where.remote(0).result(timeout=60)
            # Syncs go on every second: still two, never the third node.
            assert not wait_until(lambda: len(nodes()) > 2, timeout=3)
    finally:
        assert routable_coordinator.stop(provisioner) == 0
