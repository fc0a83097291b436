"""Hostile clients against a real coordinator and executor (docs/reliability.md).

A stranger (a connection whose first frame has not passed the HMAC check) cannot make a
process buffer much, hold a connection open past the handshake deadline, crowd out real
clients, or make a process spin at its fd limit. The data dir keeps its secrets private,
and executors of a server on 0.0.0.0 advertise an address a client can dial.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import stratus
from helpers import free_port, wait_until
from stratus import config as cfg
from stratus.client.app import App
from stratus.client.client import Client
from stratus.client.embedded import EmbeddedCluster
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec
from stratus.transport import addresses
from stratus.transport.guard import ConnectionLimits
from stratus.transport.reactor import Connection, Reactor

HANDSHAKE = 1.0  # seconds a stranger has; short so the tests are quick
STRANGERS = 8  # per listener
MiB = 1 << 20


@dataclass
class Cluster:
    app: App
    embedded: EmbeddedCluster
    tcp: str  # the coordinator's TCP listener
    stderr: Path  # the coordinator's (and its executors') log

    @property
    def pid(self) -> int:
        return self.embedded.process.pid

    @property
    def key(self) -> bytes:
        return self.embedded.key


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Processes started inside inherit ``path`` as their stderr."""
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(fd)
        os.close(saved)


def _start(data_dir: Path, limits: ConnectionLimits) -> Cluster:
    port = free_port()
    config = cfg.ClusterConfig(
        cluster_id=cfg.new_cluster_id(),
        key=cfg.new_key(),
        data_dir=str(data_dir),
        listen=f"tcp://0.0.0.0:{port}",
        executors=1,
        sys_path=[p for p in sys.path if p],
        connections=limits,
    )
    stderr = data_dir.parent / f"{data_dir.name}.stderr"
    with _stderr_to(stderr):
        embedded = EmbeddedCluster(config)
    try:
        app = App(Client(embedded.address, config.key), embedded)
    except BaseException:
        embedded.close()
        raise
    return Cluster(app, embedded, f"tcp://127.0.0.1:{port}", stderr)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server on 0.0.0.0 whose data dir an older version left open to everyone."""
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    for name in ("state.db", "key"):  # an empty file is a new SQLite database
        (data_dir / name).touch()
        (data_dir / name).chmod(0o644)
    c = _start(data_dir, ConnectionLimits(handshake_timeout=HANDSHAKE, max_strangers=STRANGERS))
    try:
        yield c
    finally:
        c.app.close()


@pytest.fixture(scope="module")
def ping(cluster: Cluster) -> stratus.Function:
    fn = cluster.app.function(name="ping")(lambda ctx, x=0: x)
    assert fn.remote().result(timeout=30) == 0
    return fn


def _peak_rss(pid: int) -> int:
    """The most memory ``pid`` has held at once (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _closed(sock: socket.socket) -> bool:
    """True once the peer hung up (non-blocking: False while it stays open)."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _executor(cluster: Cluster) -> tuple[str, int]:
    """The unix address and pid of the cluster's executor."""
    [executor] = cluster.app.status().executors
    config = cluster.embedded.config
    return config.executor_unix(executor.executor_id), executor.pid


@pytest.mark.parametrize("target", ["coordinator", "executor"])
def test_a_60_mib_length_prefix_is_refused_and_memory_stays_bounded(
    cluster: Cluster, ping: stratus.Function, target: str
) -> None:
    address, pid = (cluster.tcp, cluster.pid) if target == "coordinator" else _executor(cluster)
    before = _peak_rss(pid)
    socks = [addresses.connect(address) for _ in range(6)]
    junk = os.urandom(MiB)
    for sock in socks:  # as in the report: six connections, each announcing 60 MiB
        sock.setblocking(True)
        sock.settimeout(10)
        with contextlib.suppress(OSError):  # the peer hangs up while we write
            sock.sendall(struct.pack("!I", 60 * MiB))
            for _ in range(24):
                sock.sendall(junk)
    assert wait_until(lambda: all(_closed(s) for s in socks))
    for sock in socks:
        sock.close()
    # Buffering what was sent would take 6 x 24 MiB; the first frame may be 64 KiB.
    assert _peak_rss(pid) - before < 32 * MiB
    assert ping.remote(1).result(timeout=10) == 1


def test_a_slowloris_is_closed_at_the_handshake_deadline_while_a_client_works(
    cluster: Cluster, ping: stratus.Function
) -> None:
    slow = addresses.connect(cluster.tcp)
    silent = addresses.connect(cluster.tcp)
    opened = time.monotonic()
    slow.setblocking(True)
    slow.sendall(b"\x00\x00")  # half a length header, then nothing
    for x in range(20):
        assert ping.remote(x).result(timeout=10) == x
    assert wait_until(lambda: _closed(slow) and _closed(silent), timeout=HANDSHAKE + 10)
    assert time.monotonic() - opened >= HANDSHAKE * 0.9  # closed by the deadline, not before
    slow.close()
    silent.close()


def test_many_strangers_do_not_crowd_out_a_real_client(
    cluster: Cluster, ping: stratus.Function
) -> None:
    strangers = [addresses.connect(cluster.tcp) for _ in range(5 * STRANGERS)]
    try:
        # A new client connects and calls while the strangers wait to be dropped.
        with stratus.connect(cluster.tcp, key=cluster.key) as other:
            echo = other.function(name="echo")(lambda ctx, x: x)
            assert echo.remote("hi").result(timeout=30) == "hi"
        # No more than the cap stays open, and those only until the deadline.
        assert wait_until(lambda: sum(not _closed(s) for s in strangers) <= STRANGERS)
        assert wait_until(lambda: all(_closed(s) for s in strangers), timeout=HANDSHAKE + 10)
    finally:
        for sock in strangers:
            sock.close()


def test_the_data_dir_and_its_secrets_are_private(cluster: Cluster) -> None:
    data_dir = Path(cluster.embedded.config.data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("state.db", "key"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    for path in data_dir.rglob("*"):  # journals, spools, logs: created under umask 077
        assert not path.stat().st_mode & 0o077, path


def test_write_key_makes_an_old_key_file_private(tmp_path: Path) -> None:
    old = tmp_path / "key"
    old.write_text("00" * 32)
    old.chmod(0o644)
    cfg.write_key(cfg.new_key(), tmp_path)
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700


def test_executors_of_a_wildcard_listener_advertise_a_routable_address(
    cluster: Cluster, ping: stratus.Function
) -> None:
    [executor] = cluster.app._client._executors.values()
    family, (host, _) = addresses.parse(executor.tcp)  # type: ignore[misc]
    assert host not in ("0.0.0.0", "::")
    assert host == addresses.routable_host(family)
    # A client that dials the host's address calls the executor at its advertised one.
    port = cluster.tcp.rpartition(":")[2]
    with stratus.connect(f"tcp://{host}:{port}", key=cluster.key) as remote:
        double = remote.function(name="double")(lambda ctx, x: 2 * x)
        assert double.remote(21).result(timeout=30) == 42


def test_advertise_names_the_host_executors_give(tmp_path: Path) -> None:
    with pytest.raises(stratus.ConfigurationError):
        cfg.ClusterConfig(cluster_id="c", key=bytes(32), advertise="0.0.0.0")
    config = cfg.ClusterConfig(cluster_id="c", key=bytes(32), advertise="node7.example.com")
    assert addresses.advertised("tcp://0.0.0.0:5", config.advertise) == "tcp://node7.example.com:5"


def test_a_coordinator_at_its_fd_limit_backs_off_instead_of_spinning(tmp_path: Path) -> None:
    # Strangers keep their descriptors for the whole test: the limit stays hit.
    limits = ConnectionLimits(handshake_timeout=120.0, accept_backoff=0.5, log_interval=10.0)
    c = _start(tmp_path / "data", limits)
    strangers: list[socket.socket] = []
    try:
        ping = c.app.function(name="ping")(lambda ctx, x=0: x)
        assert ping.remote(1).result(timeout=30) == 1
        in_use = len(os.listdir(f"/proc/{c.pid}/fd"))
        _, hard = resource.prlimit(c.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(c.pid, resource.RLIMIT_NOFILE, (in_use + 4, hard))
        strangers = [addresses.connect(c.tcp) for _ in range(64)]  # the backlog takes them
        assert wait_until(lambda: "Too many open files" in c.stderr.read_text())
        lines_before = len(c.stderr.read_text().splitlines())
        cpu, start = _cpu_seconds(c.pid), time.monotonic()
        time.sleep(3.0)  # a measurement window, not a wait for a condition
        busy = (_cpu_seconds(c.pid) - cpu) / (time.monotonic() - start)
        lines = len(c.stderr.read_text().splitlines()) - lines_before
        print(f"at the fd limit: {busy:.1%} of a core, {lines} log lines in 3 s")
        assert lines <= 2, c.stderr.read_text()[-2000:]  # one per log_interval at most
        assert busy < 0.15, f"the coordinator used {busy:.0%} of a core at its fd limit"
        # With descriptors free again, it accepts again: a new client gets in.
        for sock in strangers:
            sock.close()
        resource.prlimit(c.pid, resource.RLIMIT_NOFILE, (4096, hard))
        with stratus.connect(c.tcp, key=c.key) as other:
            echo = other.function(name="echo")(lambda ctx, x: x)
            assert echo.remote(7).result(timeout=30) == 7
        assert ping.remote(2).result(timeout=10) == 2
    finally:
        for sock in strangers:
            sock.close()
        c.app.close()


# --- the buffer budget, on an in-process reactor with real sockets


def test_partial_frames_stay_within_the_budget_and_every_frame_arrives() -> None:
    key = cfg.new_key()
    codec = Codec(key, m.ToClient, max_frame=2 * MiB)
    reactor = Reactor(limits=ConnectionLimits(max_buffered=MiB))
    got: list[int] = []
    accepted: list[Connection] = []

    def on_accept(sock: socket.socket) -> None:
        conn = reactor.add_connection(sock, codec, name="peer")
        conn.on_message = lambda conn, message: got.append(
            len(message.value) if isinstance(message, m.Result) else -1
        )
        accepted.append(conn)

    address = reactor.listen(f"unix:@stratus-budget-{os.getpid()}", on_accept)
    peers = [addresses.connect(address) for _ in range(4)]
    frames = [codec.encode(m.Result(i, 1, bytes(900 * 1024))) for i in range(4)]
    most = 0

    def pump(until: float) -> None:
        nonlocal most
        while time.monotonic() < until:
            reactor.run_once(0.01)
            most = max(most, reactor._buffered)

    try:
        for peer in peers:
            peer.setblocking(True)
            peer.sendall(codec.encode(m.Welcome("hello")))  # authenticated
        for peer, frame in zip(peers, frames, strict=True):
            peer.sendall(frame[: len(frame) // 2])  # four half frames: 1.8 MiB pending
        deadline = time.monotonic() + 10
        while not any(conn._paused for conn in accepted) and time.monotonic() < deadline:
            pump(time.monotonic() + 0.01)
        assert any(conn._paused for conn in accepted)  # someone waits its turn
        assert most <= MiB + 2 * MiB  # the budget, plus the one reader allowed past it
        for peer, frame in zip(peers, frames, strict=True):
            peer.sendall(frame[len(frame) // 2 :])
        deadline = time.monotonic() + 10
        while len(got) < 8 and time.monotonic() < deadline:
            pump(time.monotonic() + 0.05)
        assert sorted(got) == [-1] * 4 + [900 * 1024] * 4
        assert reactor._buffered == 0 and not any(conn._paused for conn in accepted)
    finally:
        for peer in peers:
            peer.close()
        reactor.close()
