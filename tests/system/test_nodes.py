"""Node agents on real hosts: network namespaces joined by a bridge, one per host.

The test makes (and always removes), with ``tests/netns.py``, a bridge in a private subnet
with four namespaces on it: the coordinator's host (``stratus up`` and its Redis) and three
node hosts, each running ``stratus node --join``. The client is this test process, on the bridge. No
address is a loopback one and no abstract socket or file lock crosses a host. It needs
root (``ip netns add``); elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import netns
import stratus
from helpers import wait_until
from netns import Hosts
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec
from stratus.transport.reactor import Reactor

pytestmark = pytest.mark.system

_NODES = {"n1": 256, "n2": 4096, "n3": 4096}  # node id -> memory offered (MB), one core each


@dataclass
class Cluster:
    hosts: Hosts
    address: str
    data_dir: Path
    nodes: dict[str, subprocess.Popen[str]]

    def join(self, node_id: str, memory_mb: int, key: str | None = None) -> subprocess.Popen[str]:
        key = key or (self.data_dir / "key").read_text().strip()
        args = ["--cores", "1", "--memory-mb", str(memory_mb), "--log-level", "INFO"]
        host = node_id.partition("-")[0]
        data_dir = self.data_dir.parent / node_id
        return self.hosts.join(host, self.address, data_dir, key, *args, node_id=node_id)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    refusal = netns.refusal()
    if refusal:
        pytest.skip(f"node tests need network namespaces: {refusal}")
    hosts = Hosts()
    try:
        hosts.make(["coord", *_NODES])
        store = hosts.redis("coord", tmp_path)
        data_dir = tmp_path / "coord"
        address = hosts.stratus_up("coord", data_dir, f"{store}/0", "--executors", "1")
        result = Cluster(hosts, address, data_dir, {})
        for node_id, memory_mb in _NODES.items():
            result.nodes[node_id] = result.join(node_id, memory_mb)
        yield result
    finally:
        hosts.teardown()
        for process in hosts.processes:
            print(process.args[4:7], hosts.output(process))


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


def test_a_partitioned_node_loses_no_call_and_rejoins_once_healed(cluster: Cluster) -> None:
    """The chaos suite's partition, between hosts: n3 is cut off the bridge (silently: its
    packets are dropped) with calls running on it. Every call is answered once, by
    another node, within its deadline; the coordinator rebuilds the pool without n3; its
    agent, hearing no coordinator, stops its executors and rejoins once healed."""
    with stratus.connect(cluster.address, data_dir=cluster.data_dir) as app:
        part = app.function(name="part", min_instances=4, memory_mb=200, timeout=60)(_where)
        assert wait_until(lambda: _pool_nodes(app, "part") == {"0", "n1", "n2", "n3"}, 60)
        before = app.kv.get("calls", 0)
        futures = [part.remote(1.0) for _ in range(12)]
        time.sleep(0.1)  # some run on n3 now (not needed for correctness)
        cut_at = time.monotonic()
        cluster.hosts.partition("n3")
        results = [f.result(timeout=90) for f in futures]
        answered_in = time.monotonic() - cut_at
        assert len({r[1] for r in results}) == 12
        assert "n3" not in {r[0] for r in results}  # 1 s calls: none finished before the cut
        assert wait_until(lambda: app.kv.get("calls") == before + 12, 10)
        assert wait_until(lambda: "n3" not in _pool_nodes(app, "part"), 30)

        cluster.hosts.partition("n3", cut=False)
        healed_at = time.monotonic()
        assert wait_until(lambda: "n3" in _pool_nodes(app, "part"), 90)
        rejoined_in = time.monotonic() - healed_at
        assert app.kv.get("calls") == before + 12  # n3's cut-off attempts applied nothing
        assert len(_nodes_used(part, 16)) >= 2
        print(
            f"partition: 12 calls answered {answered_in:.1f} s after the cut, n3 back in "
            f"its pool {rejoined_in:.1f} s after the heal"
        )


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
