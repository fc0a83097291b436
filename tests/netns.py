"""Hosts on one machine: Linux network namespaces joined by a bridge, one per host.

Shared by the node tests (``tests/system/test_nodes.py``) and the scale-out benchmark
(``bench/scaleout.py``). ``Hosts.make`` puts a bridge in a private ``10.77.x.0/24`` (one no
route of this machine uses, so parallel runs do not meet) and a namespace per host on it;
whoever runs in the root namespace (a test, a benchmark's client) is on the bridge too, at
``.254``. Nothing crosses hosts but TCP: no loopback address, no abstract socket, no file
lock. ``Hosts.teardown`` stops what ran on the hosts and removes every namespace and the
bridge. It needs root (``ip netns add``): ``refusal()`` says why a machine cannot.
"""

from __future__ import annotations

import contextlib
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

STRATUS = [sys.executable, "-m", "stratus.cli"]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def refusal() -> str:
    """Why this machine cannot make hosts (with a Redis on one), or ""."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if shutil.which("redis-server") is None:
        return "no redis-server"
    probe = f"stratus-probe-{secrets.token_hex(3)}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode:
        return f"`ip netns add` is not permitted here (it needs root): {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return ""


@dataclass
class Hosts:
    """A bridge in the root namespace and namespaces on it, each with one address."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    net: str = ""
    names: dict[str, str] = field(default_factory=dict)  # host -> namespace
    addresses: dict[str, str] = field(default_factory=dict)  # host -> its address
    links: dict[str, str] = field(default_factory=dict)  # host -> its veth end on the bridge
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    log_dir: Path | None = None  # each process's output in a file there; else a pipe

    def __post_init__(self) -> None:
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
        for host in hosts:
            self.add(host)

    def add(self, host: str) -> str:
        """One more host on the bridge; its address."""
        i = len(self.names) + 1
        ns = self.names[host] = f"stratus-{self.tag}-{host}"
        outer, inner = f"st{self.tag}{i}a", f"st{self.tag}{i}b"
        self.links[host] = outer
        ip("netns", "add", ns)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns)
        ip("link", "set", outer, "master", self.bridge)
        ip("link", "set", outer, "up")
        address = self.addresses[host] = f"{self.net}.{i}"
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
        ip("-n", ns, "link", "set", inner, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        return address

    def partition(self, host: str, *, cut: bool = True) -> None:
        """Cut ``host`` off the bridge (``cut=False``: join it again). Silent, as a switch
        that fails: its link stays up, and what it sends is dropped, not refused."""
        if cut:
            ip("link", "set", self.links[host], "nomaster")
        else:
            ip("link", "set", self.links[host], "master", self.bridge)

    def run(
        self, host: str, args: list[str], *, log: Path | None = None, **kw: object
    ) -> subprocess.Popen[str]:
        """Start ``args`` on ``host`` (``ip netns exec`` execs: the pid is the program's);
        its output goes to ``log`` (appended, readable while it runs), else to a file in
        ``log_dir``, else to a pipe."""
        kw.setdefault("stderr", subprocess.STDOUT)
        with contextlib.ExitStack() as stack:
            if "stdout" not in kw and (log is not None or self.log_dir is not None):
                name = f"{host}-{len(self.processes)}-{Path(args[0]).name}.log"
                path = log if log is not None else self.log_dir / name  # type: ignore[operator]
                kw["stdout"] = stack.enter_context(open(path, "a"))
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.names[host], *args],
                text=True,
                **{"stdout": subprocess.PIPE, **kw},  # type: ignore[call-overload]
            )
        self.processes.append(process)
        return process

    def redis(self, host: str, folder: Path) -> str:
        """A Redis on ``host``, reached from the other hosts only (no persistence); its URL
        without a database number."""
        address = self.addresses[host]
        args = ["redis-server", "--port", "6379", "--bind", address, "--protected-mode", "no"]
        self.run(host, [*args, "--save", "", "--appendonly", "no", "--dir", str(folder)])
        return f"redis://{address}:6379"

    def up(
        self,
        host: str,
        data_dir: Path,
        store: str,
        *args: str,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[subprocess.Popen[str], str]:
        """``stratus up`` on ``host`` (port 7070) on ``store``, once it serves or exits: the
        process and its address."""
        address = f"tcp://{self.addresses[host]}:7070"
        up = [*STRATUS, "up", "--listen", address, "--data-dir", str(data_dir)]
        server = self.run(host, [*up, "--store", store, *args], log=log, env=env)
        deadline = time.monotonic() + 30
        while not (data_dir / "server.json").exists() and server.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"stratus up on {host} did not start: {self.output(server)}")
            time.sleep(0.02)
        return server, address

    def stratus_up(self, host: str, data_dir: Path, store: str, *args: str) -> str:
        """``up``, which must serve: its address."""
        server, address = self.up(host, data_dir, store, *args)
        if server.poll() is not None:
            raise RuntimeError(f"stratus up on {host} exited: {self.output(server)}")
        return address

    def join(
        self, host: str, address: str, data_dir: Path, key: str, *args: str, node_id: str = ""
    ) -> subprocess.Popen[str]:
        """``stratus node --join address`` on ``host`` (node id: ``host`` unless given), with
        cluster key ``key`` (in its environment, never on its command line)."""
        command = [*STRATUS, "node", "--join", address, "--node-id", node_id or host]
        command += ["--data-dir", str(data_dir), *args]
        return self.run(host, command, env=dict(os.environ, STRATUS_KEY=key))

    def stop(self, process: subprocess.Popen[str]) -> None:
        """SIGTERM, then SIGKILL after 10 s; waits for it."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def output(self, process: subprocess.Popen[str]) -> str:
        """The end of what a stopped process printed (when it was piped), once."""
        if process.stdout is None or process.stdout.closed:
            return ""
        text = process.stdout.read()[-3000:]
        process.stdout.close()
        return text

    def teardown(self) -> None:
        for process in reversed(self.processes):  # the last started first: nodes, then stores
            self.stop(process)
        for ns in self.names.values():
            ip("netns", "del", ns, check=False)  # takes its end of the veth and the pair
        ip("link", "del", self.bridge, check=False)
        for process in self.processes:  # what each said, for a failing test's report
            said = self.output(process)
            if said:
                print(process.args[4:7], said)


@contextlib.contextmanager
def made_hosts(names: list[str]) -> Iterator[Hosts]:
    """For a test: ``Hosts`` of these names, removed (with what runs on them) on exit;
    the test is skipped, with the reason, on a machine that cannot make them."""
    import pytest  # only tests use this; the benchmark imports the module without pytest

    reason = refusal()
    if reason:
        pytest.skip(f"this test needs network namespaces: {reason}")
    hosts = Hosts()
    try:
        hosts.make(names)
        yield hosts
    finally:
        hosts.teardown()
