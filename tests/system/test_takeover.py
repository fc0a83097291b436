"""A coordinator taken over by another host: its store's lease, its key check, and the
node agents and clients that follow it (docs/scaling.md, "A coordinator on another host").

Hosts are network namespaces on a bridge (``tests/netns.py``): ``store`` runs Redis, ``a``
and ``b`` are the two coordinator hosts (given the same key out of band, in
``$STRATUS_KEY``), ``c`` runs a node agent; the client is this test process, on the
bridge. It needs root (``ip netns add``) and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import stratus
from helpers import wait_until
from netns import STRATUS, Hosts, made_hosts

pytestmark = pytest.mark.system

LEASE = "3"  # s: a dead coordinator's successor waits this long
SILENCE = 5.0  # s: an agent's deadline on a coordinator that answers nothing (server/node.py)


@dataclass
class Site:
    hosts: Hosts
    tmp: Path
    key: str
    store: str
    a: subprocess.Popen[str] = field(init=False)  # coordinator A, started first
    address_a: str = field(init=False)
    agent: subprocess.Popen[str] = field(init=False)  # the node agent on host c

    def up(self, host: str, key: str | None = None) -> tuple[subprocess.Popen[str], str]:
        env = dict(os.environ, STRATUS_KEY=key or self.key)
        args = ("--executors", "1", "--lease", LEASE)
        return self.hosts.up(host, self.tmp / host, self.store, *args, log=self.log(host), env=env)

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def said(self, name: str, text: str) -> bool:
        return text in self.log(name).read_text()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    try:
        with made_hosts(["store", "a", "b", "c"]) as hosts:
            store = hosts.redis("store", tmp_path)
            result = Site(hosts, tmp_path, secrets.token_hex(32), store)
            result.a, result.address_a = result.up("a")
            assert result.a.poll() is None, result.log("a").read_text()
            agent = [*STRATUS, "node", "--join", result.address_a, "--node-id", "c"]
            agent += ["--data-dir", str(tmp_path / "c"), "--cores", "1", "--memory-mb", "2048"]
            env = dict(os.environ, STRATUS_KEY=result.key)
            result.agent = hosts.run("c", agent, log=result.log("c"), env=env)
            yield result
    finally:
        for name in ("a", "b", "c"):
            if (tmp_path / f"{name}.log").exists():
                print(f"--- {name}\n", (tmp_path / f"{name}.log").read_text()[-4000:])


def _count(ctx: stratus.Context, delay: float = 0.0) -> tuple[str, str]:
    if delay:
        time.sleep(delay)
    ctx.kv.incr("effects")
    return os.environ.get("STRATUS_NODE", "0"), ctx.invocation_id


def _nodes(app: stratus.App) -> set[str]:
    return {e.node for e in app.status().executors if e.state == "ready"}


def test_a_coordinator_killed_on_one_host_is_taken_over_on_another(site: Site) -> None:
    with stratus.connect(site.address_a, key=site.key, store=site.store, reconnect=90) as app:
        count = app.function(name="count", min_instances=2)(_count)
        assert wait_until(lambda: _nodes(app) == {"0", "c"}, 60), _nodes(app)
        done = [count.remote().result(timeout=60) for _ in range(6)]
        assert app.kv.get("effects") == 6

        # Calls in flight on both nodes when A's coordinator dies (its executors with it).
        futures = [count.remote(0.5) for _ in range(8)]
        site.a.send_signal(signal.SIGKILL)
        site.a.wait(timeout=30)
        b, address_b = site.up("b")  # same store, same key: waits out A's lease
        assert b.poll() is None, site.log("b").read_text()
        assert site.said("b", "holds the store's lease: waiting up to 3 s")

        done += [f.result(timeout=90) for f in futures]
        assert len({invocation for _, invocation in done}) == 14
        assert wait_until(lambda: app.kv.get("effects") == 14, 10)
        assert app.kv.get("effects") == 14  # every acknowledged call applied exactly once
        assert app.address == address_b  # the client followed the store's lease
        cluster_b = json.loads((site.tmp / "b" / "server.json").read_text())["cluster_id"]
        assert app.cluster_id == cluster_b

        # The agent on c rejoined B by itself, and runs B's executors.
        assert wait_until(lambda: site.said("c", f"rejoined the coordinator at {address_b}"), 60)
        assert wait_until(lambda: "c" in _nodes(app), 60), _nodes(app)
        assert site.agent.poll() is None

    # The registry survived: a new client of B calls what was registered before the kill.
    with stratus.connect(address_b, key=site.key) as fresh:
        assert fresh.lookup("count").remote().result(timeout=60)[1]
        assert fresh.kv.get("effects") == 15


def test_a_wrong_key_and_a_second_live_coordinator_are_refused(site: Site) -> None:
    wrong, _ = site.up("b", key=secrets.token_hex(32))
    assert wrong.wait(timeout=30) != 0
    assert site.said("b", "with another cluster key than this server's"), site.log("b").read_text()

    second, _ = site.up("b")  # the right key: A lives and renews its lease
    assert second.wait(timeout=30) != 0
    assert site.said("b", f"the coordinator at {site.address_a}")
    assert site.said("b", "renews it: it serves this store")
    assert site.a.poll() is None  # the first one serves on


def test_an_agent_detects_a_hung_coordinator_which_stops_once_resumed(site: Site) -> None:
    assert wait_until(lambda: site.said("c", f"joined {site.address_a}"), 60)
    os.kill(site.a.pid, signal.SIGSTOP)  # hung, its link open: the kernel still holds it
    try:
        # Within the agent's deadline (its silence, a heartbeat late at most, and slack).
        assert wait_until(lambda: site.said("c", "the coordinator sent nothing for"), SILENCE + 5)
        assert site.said("c", "its executors are stopped; rejoining")
    finally:
        os.kill(site.a.pid, signal.SIGCONT)
    # Stopped past its lease, A may have been replaced: it stops serving, status 1.
    assert site.a.wait(timeout=30) == 1
    assert site.said("a", "lost the store's lease")
