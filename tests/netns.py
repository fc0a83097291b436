"""Hosts on one machine for the system tests: network namespaces joined by a bridge.

A ``Hosts`` makes (and always removes) a bridge in a private ``10.77.x.0/24`` and one
namespace per host on it, each with one address; the test process is on the bridge. No
address is a loopback one and nothing crosses hosts but TCP. It needs root (``ip netns
add``): ``netns_refusal()`` says why a machine cannot, for a skip.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from helpers import wait_until

STRATUS = [sys.executable, "-m", "stratus.cli"]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def netns_refusal() -> str:
    """Why this machine cannot run the test, or ""."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if shutil.which("redis-server") is None:
        return "no redis-server"
    probe = f"stratus-probe-{secrets.token_hex(3)}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
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
        routes = ip("route").stdout
        for third in secrets.SystemRandom().sample(range(1, 255), 254):
            if f"10.77.{third}." not in routes:
                self.net = f"10.77.{third}"
                break
        self.bridge = f"stbr{self.tag}"

    def make(self, hosts: list[str]) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.net}.254/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, host in enumerate(hosts, start=1):
            ns = self.names[host] = f"stratus-{self.tag}-{host}"
            outer, inner = f"st{self.tag}{i}a", f"st{self.tag}{i}b"
            ip("netns", "add", ns)
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", ns)
            ip("link", "set", outer, "master", self.bridge)
            ip("link", "set", outer, "up")
            self.addresses[host] = f"{self.net}.{i}"
            ip("-n", ns, "addr", "add", f"{self.net}.{i}/24", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def run(
        self, host: str, args: list[str], *, log: Path | None = None, **kw: object
    ) -> subprocess.Popen[str]:
        """Start ``args`` on ``host`` (``ip netns exec`` execs: the pid is the program's);
        its output goes to ``log`` if given (readable while it runs), else to a pipe."""
        out: int | IO[str] = subprocess.PIPE if log is None else log.open("a")
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.names[host], *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            **kw,  # type: ignore[call-overload]
        )
        if log is not None:
            out.close()  # type: ignore[union-attr]
        self.processes.append(process)
        return process

    def redis(self, host: str, directory: Path) -> str:
        """Start a Redis on ``host``, reached from the other namespaces (never from outside
        this machine's bridge); its URL."""
        address = self.addresses[host]
        redis = ["redis-server", "--port", "6379", "--bind", address, "--protected-mode", "no"]
        redis += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
        assert self.run(host, redis).poll() is None
        return f"redis://{address}:6379/0"

    def up(
        self, host: str, data_dir: Path, store: str, *args: str, **kw: object
    ) -> tuple[subprocess.Popen[str], str]:
        """Start ``stratus up`` on ``host`` (one executor, port 7070) and wait until it
        serves or exits: the process and its address."""
        address = f"tcp://{self.addresses[host]}:7070"
        up = [*STRATUS, "up", "--listen", address, "--data-dir", str(data_dir)]
        up += ["--executors", "1", "--store", store, *args]
        server = self.run(host, up, **kw)
        started = lambda: (data_dir / "server.json").exists() or server.poll() is not None  # noqa: E731
        assert wait_until(started, timeout=30)
        return server, address

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
            ip("netns", "del", ns, check=False)  # takes its end of the veth and the pair
        ip("link", "del", self.bridge, check=False)
        for process in self.processes:  # what each said, for a failing test's report
            if process.stdout is not None and not process.stdout.closed:
                print(process.args[4:7], process.stdout.read()[-3000:])
                process.stdout.close()


@contextmanager
def made_hosts(names: list[str]) -> Iterator[Hosts]:
    """``Hosts`` of these names, removed (with what runs on them) on exit; the test is
    skipped, with the reason, on a machine that cannot make them."""
    refusal = netns_refusal()
    if refusal:
        pytest.skip(f"this test needs network namespaces: {refusal}")
    hosts = Hosts()
    try:
        hosts.make(names)
        yield hosts
    finally:
        hosts.teardown()
