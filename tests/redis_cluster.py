"""A private Redis Cluster for the tests: 3 masters + 3 replicas on loopback ports.

:func:`serve` starts six ``redis-server`` processes with ``cluster-enabled yes`` and
``appendonly yes`` (each in a directory of its own), joins them with ``redis-cli --cluster
create ... --cluster-replicas 1``, waits until every node says ``cluster_state:ok``, yields
a :class:`Cluster` and stops every process on exit (also when starting failed halfway).
:meth:`Cluster.migrate_slot` moves a hash slot to another master the way ``redis-cli
--cluster reshard`` does, one step at a time, so that a test can write meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import redis

import redis_server

MASTERS = 3
URL_VARIABLE = "STRATUS_TEST_REDIS_CLUSTER_URL"


@dataclass
class Cluster:
    """The running nodes: ``ports[i]`` is served by ``processes[i]``."""

    ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    commands: dict[int, list[str]] = field(default_factory=dict)  # port -> how it started

    @property
    def url(self) -> str:
        """A URL of one node; redis-py's cluster client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def cli(self, port: int, *args: str, timeout: float = 30.0) -> str:
        """``redis-cli -p port args...``: its output (raises on a failed command)."""
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *args],
            capture_output=True,
            timeout=timeout,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        return done.stdout.decode()

    def role(self, port: int) -> str:
        """``master`` or ``slave``, as the node at ``port`` says."""
        return self.cli(port, "role").split()[0]

    def replicas(self) -> list[int]:
        """The ports of the nodes that are replicas now."""
        return [port for port in self.ports if self.role(port) == "slave"]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node reports ``cluster_state:ok`` and every replica is linked."""
        deadline = time.monotonic() + timeout
        while True:
            states = [self.cli(port, "cluster", "info") for port in self.ports]
            links = [self.cli(port, "info", "replication") for port in self.ports]
            # A replica's link must be up too: a write WAITing for it would time out.
            synced = all("role:master" in info or "master_link_status:up" in info for info in links)
            if synced and all("cluster_state:ok" in state for state in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster not ok within {timeout} s: {states[0]}")
            time.sleep(0.05)

    def failover(self, replica: int, timeout: float = 30.0) -> None:
        """Make ``replica`` the master of its shard (a graceful ``CLUSTER FAILOVER``) and
        wait until it says it is."""
        self.cli(replica, "cluster", "failover")
        deadline = time.monotonic() + timeout
        while self.role(replica) != "master":
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {replica} did not take over within {timeout} s")
            time.sleep(0.05)
        self.wait_ok(timeout)

    def replica_of(self, master: int) -> int:
        """The port of the replica of the master at ``master``."""
        for port in self.replicas():
            if f"master_port:{master}\r\n" in self.cli(port, "info", "replication"):
                return port
        raise RuntimeError(f"the master {master} has no replica")

    def kill(self, port: int) -> None:
        """SIGKILL the node at ``port`` (no shutdown, no last words to its replica)."""
        process = self.processes[self.ports.index(port)]
        process.kill()
        process.wait(timeout=30)

    def restart(self, port: int) -> None:
        """Start the killed node at ``port`` again, from its own directory (``nodes.conf``:
        it rejoins the cluster, as a replica if it was failed over meanwhile)."""
        index = self.ports.index(port)
        process = subprocess.Popen(self.commands[port], stdin=subprocess.DEVNULL)
        self.processes[index] = process
        if not redis_server._wait_ready(process, port):
            raise RuntimeError(f"the node {port} did not start again")

    def node_id(self, port: int) -> str:
        """The cluster node id of the node at ``port``."""
        return self.cli(port, "cluster", "myid").strip()

    def masters(self) -> list[int]:
        """The ports of the nodes that are masters now."""
        return [port for port in self.ports if self.role(port) == "master"]

    def master_of(self, slot: int) -> int:
        """The port of the master that serves ``slot``, as the first master sees it."""
        for line in self.cli(self.masters()[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2]:
                continue
            for served in fields[8:]:
                if served.startswith("["):  # "[slot->-id]": being moved, not served
                    continue
                low, _, high = served.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise RuntimeError(f"no master serves the slot {slot}")

    def migrate_slot(self, slot: int, target: int, keys_per_step: int = 1) -> int:
        """Move ``slot`` to the master at ``target`` while clients use it: IMPORTING on the
        target, MIGRATING on the source, ``MIGRATE ... KEYS`` ``keys_per_step`` keys at a
        time (the slot's keys are split between the two nodes meanwhile), then ``SETSLOT
        NODE`` on every master. How many keys moved."""
        source = self.master_of(slot)
        if source == target:
            return 0
        source_id, target_id = self.node_id(source), self.node_id(target)
        moved = 0
        with redis.Redis(port=source) as src, redis.Redis(port=target) as dst:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, keys_per_step):
                # No REPLACE: a key on both nodes would be a bug, and BUSYKEY says so.
                src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 10_000, "KEYS", *keys)
                moved += len(keys)
        # The target first, then the source (as redis-cli does), then the other masters.
        others = [port for port in self.masters() if port not in (source, target)]
        for port in (target, source, *others):
            self.cli(port, "cluster", "setslot", str(slot), "node", target_id)
        return moved

    def wait_role(self, port: int, role: str, timeout: float = 30.0) -> None:
        """Wait until the node at ``port`` says it is ``role`` (``master``, ``slave``)."""
        deadline = time.monotonic() + timeout
        while self.role(port) != role:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node {port} is not a {role} within {timeout} s")
            time.sleep(0.02)


class Workload:
    """Threads running ``targets`` (each until :attr:`stopping` is set) for the span of a
    ``with`` block: a load on the cluster while a test breaks it. Subclasses say in
    :meth:`acks` how many writes were acknowledged so far."""

    def __init__(self, *targets: Callable[[], None]) -> None:
        self.stopping = threading.Event()
        self._threads = [threading.Thread(target=target) for target in targets]

    def acks(self) -> int:
        raise NotImplementedError

    def wait_acks(self, more: int, timeout: float = 60.0) -> None:
        """Wait until ``more`` further writes were acknowledged."""
        target = self.acks() + more
        deadline = time.monotonic() + timeout
        while self.acks() < target:
            assert time.monotonic() < deadline, f"fewer than {more} writes in {timeout} s"
            time.sleep(0.01)

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=60)


def url() -> str:
    """The URL the session's cluster exported (in this process or its parent)."""
    try:
        return os.environ[URL_VARIABLE]
    except KeyError:
        raise RuntimeError(f"no test Redis Cluster: {URL_VARIABLE} is not set") from None


@contextlib.contextmanager
def serve(
    directory: Path, masters: int = MASTERS, node_timeout_ms: int = 2000
) -> Iterator[Cluster]:
    """Run a cluster of ``masters`` masters, each with one replica, under ``directory``;
    a master unreachable for ``node_timeout_ms`` is failed over to its replica."""
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("redis-cli") is None:
        raise RuntimeError("redis-server is not installed: `make test` installs it (Debian)")
    cluster = Cluster(ports=[])
    try:
        for _ in range(2 * masters):
            cluster.ports.append(_start_node(cluster, binary, directory, node_timeout_ms))
        nodes = [f"127.0.0.1:{port}" for port in cluster.ports]
        cluster.cli(
            cluster.ports[0],
            "--cluster",
            "create",
            *nodes,
            "--cluster-replicas",
            "1",
            "--cluster-yes",
            timeout=60.0,
        )
        cluster.wait_ok()
        yield cluster
    finally:
        for process in cluster.processes:
            redis_server.stop(process)


def _start_node(cluster: Cluster, binary: str, directory: Path, node_timeout_ms: int) -> int:
    for _ in range(3):  # the free port may be taken between probing and binding it
        port = redis_server.free_port()
        node_dir = directory / f"node-{port}"
        node_dir.mkdir()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"]
        command += ["--dir", str(node_dir), "--logfile", str(node_dir / "redis.log")]
        command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        command += ["--cluster-node-timeout", str(node_timeout_ms)]
        command += ["--appendonly", "yes", "--save", ""]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        cluster.processes.append(process)
        if redis_server._wait_ready(process, port):
            cluster.commands[port] = command
            return port
        cluster.processes.remove(process)
        redis_server.stop(process)
    raise RuntimeError("a Redis Cluster node did not start")


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher) is free too: a node refuses to
    start on a port above 55535."""
    while True:
        port = redis_server.free_port()
        if port > 55535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
