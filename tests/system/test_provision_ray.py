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
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import stratus
from helpers import free_port, wait_until
from stratus.transport.addresses import routable_host

pytestmark = [pytest.mark.system, pytest.mark.timeout(400)]

_STRATUS = [sys.executable, "-m", "stratus.cli"]
_HOST = Path(__file__).with_name("ray_cluster_host.py")


def _refusal() -> str:
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (the bench extra)"
    if shutil.which("redis-server") is None:
        return "no redis-server"
    if routable_host().startswith("127."):
        return "no routable address: the coordinator refuses nodes with a loopback store"
    return ""


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


def _stop(process: subprocess.Popen[str], timeout: float = 60) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return None


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    refusal = _refusal()
    if refusal:
        pytest.skip(f"the Ray provisioner's test: {refusal}")
    work = tmp_path_factory.mktemp("provision-ray")
    host, password, redis_port = routable_host(), secrets.token_hex(16), free_port()
    processes: list[subprocess.Popen[str]] = []
    try:
        # The password goes in a config file: a command line is readable by every user.
        (work / "redis.conf").write_text(f"requirepass {password}\n")
        redis = [shutil.which("redis-server") or "", str(work / "redis.conf")]
        redis += ["--port", str(redis_port), "--bind", host, "--save", "", "--appendonly", "no"]
        redis += ["--dir", str(work)]
        processes.append(subprocess.Popen(redis, stdout=subprocess.DEVNULL, text=True))
        data_dir, port = work / "coord", free_port()
        address = f"tcp://127.0.0.1:{port}"
        up = [*_STRATUS, "up", "--listen", address, "--data-dir", str(data_dir)]
        up += ["--executors", "1", "--store", f"redis://:{password}@{host}:{redis_port}/0"]
        with open(work / "up.log", "w") as log:
            server = subprocess.Popen(up, stdout=log, stderr=subprocess.STDOUT, text=True)
        processes.append(server)
        ray_host = subprocess.Popen(
            [sys.executable, str(_HOST)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=work,
        )
        processes.append(ray_host)
        assert ray_host.stdout is not None
        ray_address = ray_host.stdout.readline().strip()  # ray_cluster_host waits at most 60s
        assert ray_address, "the Ray cluster did not start"
        started = lambda: (data_dir / "server.json").exists() or server.poll() is not None  # noqa: E731
        assert wait_until(started, timeout=60) and server.poll() is None
        yield Setup(address, data_dir, ray_address, work)
    finally:
        for process in reversed(processes):
            if process.stdin is not None:
                process.stdin.close()  # the Ray host shuts its cluster down
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
            _stop(process)
            if process.stdout is not None:
                process.stdout.close()
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

            assert _stop(provisioner) == 0
            assert wait_until(lambda: _executor_nodes(app) == {"0"}, timeout=30)
            assert _nodes_used(where) == {"0"}
    finally:
        _stop(provisioner)


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
        assert _stop(provisioner) == 0
