"""Node agents on real hosts: network namespaces joined by a bridge, one per host.

The test makes (and always removes) a bridge in a private subnet with four namespaces on
it: the coordinator's host (``stratus up`` and its Redis) and three node hosts, each
running ``stratus node --join``. The client is this test process, on the bridge. No
address is a loopback one and no abstract socket or file lock crosses a host. It needs
root (``ip netns add``); elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import stratus
from helpers import wait_until
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec
from stratus.transport.reactor import Reactor

pytestmark = pytest.mark.system

_STRATUS = [sys.executable, "-m", "stratus.cli"]
_NODES = {"n1": 256, "n2": 4096, "n3": 4096}  # node id -> memory offered (MB), one core each


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def _netns_refusal() -> str:
    """Why this machine cannot run the test, or ""."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if shutil.which("redis-server") is None:
        return "no redis-server"
    probe = f"stratus-probe-{secrets.token_hex(3)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return ""


@dataclass
class Hosts:
    """A bridge in the root namespace and namespaces on it, each with one address."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    net: str = ""
    names: dict[str, str] = field(default_factory=dict)  # host -> namespace
    addresses: dict[str, str] = field(default_factory=dict)  # host -> its address
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A /24 no route of this machine uses: parallel runs do not meet.
        routes = _ip("route").stdout
        for third in secrets.SystemRandom().sample(range(1, 255), 254):
            if f"10.77.{third}." not in routes:
                self.net = f"10.77.{third}"
                break
        self.bridge = f"stbr{self.tag}"

    def make(self, hosts: list[str]) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.net}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, host in enumerate(hosts, start=1):
            ns = self.names[host] = f"stratus-{self.tag}-{host}"
            outer, inner = f"st{self.tag}{i}a", f"st{self.tag}{i}b"
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            self.addresses[host] = f"{self.net}.{i}"
            _ip("-n", ns, "addr", "add", f"{self.net}.{i}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def run(self, host: str, args: list[str], **kw: object) -> subprocess.Popen[str]:
        """Start ``args`` on ``host`` (``ip netns exec`` execs: the pid is the program's)."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.names[host], *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kw,  # type: ignore[call-overload]
        )
        self.processes.append(process)
        return process

    def teardown(self) -> None:
        for process in reversed(self.processes):  # nodes, the coordinator, then its store
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for ns in self.names.values():
            _ip("netns", "del", ns, check=False)  # takes its end of the veth and the pair
        _ip("link", "del", self.bridge, check=False)


@dataclass
class Cluster:
    hosts: Hosts
    address: str
    data_dir: Path
    nodes: dict[str, subprocess.Popen[str]]

    def join(self, node_id: str, memory_mb: int, key: str | None = None) -> subprocess.Popen[str]:
        env = dict(os.environ, STRATUS_KEY=key or (self.data_dir / "key").read_text().strip())
        args = [*_STRATUS, "node", "--join", self.address, "--node-id", node_id]
        args += ["--data-dir", str(self.data_dir.parent / node_id), "--cores", "1"]
        args += ["--memory-mb", str(memory_mb), "--log-level", "INFO"]
        return self.hosts.run(node_id.partition("-")[0], args, env=env)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    refusal = _netns_refusal()
    if refusal:
        pytest.skip(f"node tests need network namespaces: {refusal}")
    hosts = Hosts()
    try:
        hosts.make(["coord", *_NODES])
        coord = hosts.addresses["coord"]
        # Reached from the other namespaces, never from outside this machine's bridge.
        redis = ["redis-server", "--port", "6379", "--bind", coord, "--protected-mode", "no"]
        redis += ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
        store = hosts.run("coord", redis)
        data_dir = tmp_path / "coord"
        address = f"tcp://{coord}:7070"
        up = [*_STRATUS, "up", "--listen", address, "--data-dir", str(data_dir)]
        up += ["--executors", "1", "--store", f"redis://{coord}:6379/0"]
        assert store.poll() is None
        server = hosts.run("coord", up)
        started = lambda: (data_dir / "server.json").exists() or server.poll() is not None  # noqa: E731
        assert wait_until(started, timeout=30) and server.poll() is None
        result = Cluster(hosts, address, data_dir, {})
        for node_id, memory_mb in _NODES.items():
            result.nodes[node_id] = result.join(node_id, memory_mb)
        yield result
    finally:
        hosts.teardown()
        for process in hosts.processes:
            if process.stdout is not None and not process.stdout.closed:
                print(process.args[4:7], process.stdout.read()[-3000:])
                process.stdout.close()


def _where(ctx: stratus.Context, delay: float = 0.0) -> tuple[str, str]:
    if delay:
        time.sleep(delay)
    ctx.kv.incr("calls")
    return os.environ.get("STRATUS_NODE", "0"), ctx.invocation_id


def _nodes_used(fn: stratus.Function, calls: int, delay: float = 0.05) -> set[str]:
    futures = [fn.remote(delay) for _ in range(calls)]
    return {f.result(timeout=60)[0] for f in futures}


def test_calls_spread_over_nodes_by_resources_and_survive_a_lost_node(cluster: Cluster) -> None:
    with stratus.connect(cluster.address, data_dir=cluster.data_dir) as app:
        where = app.function(name="where", min_instances=4, memory_mb=200)(_where)
        seen: set[str] = set()
        assert wait_until(lambda: seen.update(_nodes_used(where, 16)) or len(seen) == 4, 60), seen
        assert seen == {"0", "n1", "n2", "n3"}

        # 1024 MB fits node 0 (a share of this machine) and n2, n3, never n1 (256 MB).
        big = app.function(name="big", min_instances=4, memory_mb=1024)(_where)
        used: set[str] = set()
        for _ in range(5):
            used |= _nodes_used(big, 12)
        assert "n1" not in used and used <= {"0", "n2", "n3"}, used
        assert wait_until(lambda: _pool_nodes(app, "big") == {"0", "n2", "n3"}, 30)

        # Kill n2's agent (its fork server and executors die with it) with calls in flight:
        # each is retried elsewhere and applied once; the pool is rebuilt without n2.
        before = app.kv.get("calls")
        futures = [big.remote(1.0) for _ in range(12)]
        time.sleep(0.1)  # some calls are running on n2 now (not needed for correctness)
        cluster.nodes["n2"].send_signal(signal.SIGKILL)
        results = [f.result(timeout=60) for f in futures]
        assert len({r[1] for r in results}) == 12
        # A call takes 1 s: none could finish on n2 before it died; its were retried.
        assert "n2" not in {r[0] for r in results}
        assert wait_until(lambda: app.kv.get("calls") == before + 12, 10)
        assert app.kv.get("calls") == before + 12  # exactly once, whatever was retried
        assert wait_until(lambda: "n2" not in _pool_nodes(app, "big"), 30)
        assert "n2" not in _nodes_used(big, 12)


def test_a_node_with_another_key_or_version_is_refused(cluster: Cluster) -> None:
    wrong = cluster.join("n3-wrong", 4096, key=secrets.token_hex(32))
    out, _ = wrong.communicate(timeout=60)
    assert wrong.returncode != 0
    assert "was not taken by the coordinator" in out and "key" in out, out

    key = bytes.fromhex((cluster.data_dir / "key").read_text().strip())
    hello = m.NodeHello("old", "0.0.0", m.NodeCapacity(1, 1024))
    reactor = Reactor()
    try:
        codec = Codec(key, m.ToNode, max_frame=1 << 20)
        _, reply = reactor.connect_and_wait(cluster.address, codec, hello, timeout=10)
    finally:
        reactor.close()
    assert isinstance(reply, m.NodeRefused)
    assert f"runs stratus 0.0.0, this cluster {stratus.__version__}" in reply.reason


def _pool_nodes(app: stratus.App, function: str) -> set[str]:
    return {e.node for e in app.status().executors if function in e.pinned and e.state == "ready"}
