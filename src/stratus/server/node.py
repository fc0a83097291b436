"""The node agent: one per host, it runs that host's executors for a coordinator elsewhere.

Theory of operation (docs/scaling.md): ``stratus node --join tcp://COORD:PORT`` dials the
coordinator, signs its ``NodeHello`` (node id, stratus version, the host's capacity)
with the cluster key and waits for the answer, outside any loop:

    agent                         coordinator
    NodeHello ------------------>  a wrong key: the frame fails its signature, hang up
              <------------------  NodeRefused(reason): other version, id taken, ...
              <------------------  NodeWelcome(config without the key)

A refusal, or a hang-up before any answer, is ``ConnectionFailed`` with the reason, and
``stratus node`` exits non-zero with it. Once welcomed, the agent forks its own fork
server (the config the coordinator sent, with this host's key, data dir, address and
capacity) and becomes a remote fork server: ``SpawnExecutor`` and ``KillExecutor`` in,
the fork server's ``ExecutorSpawned`` and ``ExecutorExited`` relayed out, and a
``NodeAlive`` heartbeat every second. Its executors dial the coordinator over TCP and
listen on TCP at the node's address, where clients and other executors call them.

The coordinator answers each heartbeat (``CoordinatorAlive``). When its link closes, or
it sends nothing for ``silence`` seconds (a hung coordinator keeps its link open), the
agent stops its fork server and executors (a new coordinator does not know them, and
they would call the old one) and rejoins: it dials the coordinator it had, then the one
the store's lease names (``protocol/lease.py``: a successor on another host), then its
``--join`` address, in rounds with a backoff, for up to ``rejoin`` seconds, and serves
whichever takes it with a new fork server:

    serving --link closed / silent--> stopping executors --> rejoining
    rejoining --welcomed--> serving            rejoining --window over--> exit 1
    any --SIGTERM/SIGINT--> exit 0

Its fork server, and with it every executor and what they started, dies with the agent
(``lifeline``, ``cgroups``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from stratus import _exceptions as exc
from stratus import config as cfg
from stratus._version import __version__
from stratus.backoff import Backoff
from stratus.kv.open import open_store
from stratus.kv.values import codec_for
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec
from stratus.protocol.lease import leased_address
from stratus.server import forkserver
from stratus.transport import addresses
from stratus.transport.reactor import Connection, Reactor

log = logging.getLogger("stratus.node")

HEARTBEAT = 1.0  # seconds between NodeAlive frames; the coordinator's deadline is longer
SILENCE = 5.0  # s without a frame from the coordinator (it answers each NodeAlive): gone
REJOIN_WINDOW = 60.0  # s an agent looks for a coordinator again before it exits
REJOIN = Backoff(first=0.1, cap=1.0, deadline=None)  # between two rounds of tries
NODE_VARIABLE = "STRATUS_NODE"  # set in the executors' environment: the node they run on
_HANDSHAKE_TIMEOUT = 10.0
_MAX_FRAME = 1 << 20  # the welcome carries the cluster's config


def detect_capacity(
    *, cores: int = 0, memory_mb: int = 0, gpus: int | Sequence[str] | None = None
) -> m.NodeCapacity:
    """What this host offers; a given (non-zero, or for ``gpus`` not None) figure wins.

    Cores: the CPUs this process may run on, capped by its cgroup's ``cpu.max``. Memory:
    ``MemTotal``, capped by the cgroup's ``memory.max``. GPUs, as ids that executors get
    in their ``CUDA_VISIBLE_DEVICES``: those of ``CUDA_VISIBLE_DEVICES`` when set, else
    the indexes ``nvidia-smi -L`` lists when that command exists, else none. ``gpus``
    given as a count N means ids 0 .. N-1.
    """
    if gpus is None:
        ids = _gpus()
    elif isinstance(gpus, int):
        ids = [str(i) for i in range(gpus)]
    else:
        ids = list(gpus)
    return m.NodeCapacity(
        cores=cores or _cores(), memory_mb=memory_mb or _memory_mb(), gpus=len(ids), gpu_ids=ids
    )


def parse_gpus(text: str) -> list[str]:
    """``--gpus``: a count (``2``: ids 0 and 1) or a list of ids (``0,2``; one id: ``3,``).

    >>> parse_gpus("2"), parse_gpus("1,3"), parse_gpus("3,")
    (['0', '1'], ['1', '3'], ['3'])
    """
    text = text.strip()
    if text.isdigit():
        return [str(i) for i in range(int(text))]
    ids = [g.strip() for g in text.split(",") if g.strip()]
    if "," not in text or len(set(ids)) != len(ids) or any(" " in g for g in ids):
        raise exc.ConfigurationError(
            f"--gpus is a count or a comma-separated list of distinct GPU ids, not {text!r}"
        )
    return ids


class NodeAgent:
    """A host's executors for the coordinator at ``join``. Build it, then ``run()``."""

    def __init__(
        self,
        join: str,
        key: bytes,
        data_dir: str,
        *,
        node_id: str,
        capacity: m.NodeCapacity,
        run_executor: forkserver.RunExecutor,
        advertise: str = "",
        rejoin: float = REJOIN_WINDOW,
        silence: float = SILENCE,
    ) -> None:
        addresses.parse(join)  # a malformed address is a ConfigurationError now
        if advertise:
            addresses.check_host(advertise)
        if capacity.cores < 0 or capacity.memory_mb < 0 or capacity.gpus < 0:
            raise exc.ConfigurationError(f"a node's capacity cannot be negative: {capacity}")
        if not (rejoin >= 0 and silence > HEARTBEAT):
            raise exc.ConfigurationError(
                f"a node rejoins within >= 0 s ({rejoin}) and waits > {HEARTBEAT} s ({silence}) "
                "for its coordinator"
            )
        self.join, self.key, self.data_dir = join, key, data_dir
        self.node_id, self.capacity, self.advertise = node_id, capacity, advertise
        self.rejoin, self.silence = rejoin, silence
        self.run_executor = run_executor  # what each forked executor runs (stratus._node)
        self.reactor = Reactor()
        self.address = join  # the coordinator we serve now (after a takeover: another)
        self.store_url = ""  # the cluster's store, from the welcome: where a successor is
        self.running = False
        self.stop_reason = ""
        self.exit_status = 0
        self.rejoined = 0  # times this agent joined a coordinator again
        self._signalled = False
        self._coordinator_lost = ""  # why, when the coordinator went (we may rejoin)
        self._heard = 0.0  # when the coordinator last sent us anything
        self._session = 0  # one per join: older timers find theirs over
        self._pids: dict[str, int] = {}  # our executors
        self._forkserver_pid = 0

    def connect(self, address: str = "", timeout: float = _HANDSHAKE_TIMEOUT) -> cfg.ClusterConfig:
        """Say hello to the coordinator at ``address`` (default: ``join``) and return the
        config our executors start from; ``ConnectionFailed`` (with the coordinator's
        reason) if it does not take this node."""
        address = address or self.join
        codec = Codec(self.key, m.ToNode, max_frame=_MAX_FRAME)
        hello = m.NodeHello(self.node_id, __version__, self.capacity)
        try:
            link, reply = self.reactor.connect_and_wait(address, codec, hello, timeout=timeout)
        except exc.ConnectionFailed as e:
            raise exc.ConnectionFailed(
                f"node {self.node_id} was not taken by the coordinator at {address}: {e} "
                "(a different cluster key hangs up like this: compare this node's "
                "<data-dir>/key or $STRATUS_KEY with the cluster's)"
            ) from e
        if isinstance(reply, m.NodeRefused):
            link.close()
            raise exc.ConnectionFailed(
                f"the coordinator at {address} refused node {self.node_id}: {reply.reason}"
            )
        if not isinstance(reply, m.NodeWelcome):
            link.close()
            raise exc.ProtocolError(f"the coordinator answered {type(reply).__name__}")
        self.link, self.address = link, address
        # Our executors listen on every interface and give peers the address we reach the
        # coordinator from (routable to it by construction), unless told another.
        host = self.advertise or self.link.sock.getsockname()[0]
        cores = max(1, self.capacity.cores)
        offer = m.Resources(1.0, self.capacity.memory_mb // cores, self.capacity.gpus)
        wildcard = "::" if ":" in host else "0.0.0.0"
        config = msgspec.structs.replace(
            cfg.decode(reply.config),
            key=self.key,
            data_dir=self.data_dir,
            listen=addresses.tcp(wildcard, 0),
            advertise=host,
            coordinator=address,
            executors=cores,
            offer=offer,
            metrics="",
        )
        self.store_url = config.store_url
        return config

    def run(self) -> int:
        """Serve until a signal stops us (0), or the coordinator goes and no coordinator
        takes us back within ``rejoin`` seconds (1)."""
        config: cfg.ClusterConfig | None = self.connect()
        cfg.make_private_dir(self.data_dir)
        os.environ[NODE_VARIABLE] = self.node_id  # inherited by every executor
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            while config is not None:
                self._serve(config)
                config = self._rejoin() if self._coordinator_lost else None
        finally:
            self.reactor.close()
        log.info("node %s stopped: %s", self.node_id, self.stop_reason)
        return self.exit_status

    def stop(self, reason: str, status: int = 0) -> None:
        if self.running:
            self.running, self.stop_reason, self.exit_status = False, reason, status
            self.reactor.wake()

    def _serve(self, config: cfg.ClusterConfig) -> None:
        """Run our fork server for the coordinator we joined, until it or we stop."""
        self._session += 1
        self._coordinator_lost = ""
        self._forkserver_pid, sock = forkserver.start(
            config, self.run_executor, close=(self.link.fd,)
        )
        fork = self.reactor.add_connection(
            sock, Codec(self.key, m.FromForkServer, max_frame=1 << 16), name="fork"
        )
        fork.on_message = self._on_forkserver
        fork.on_close = lambda conn: self.stop("the fork server died", 1)
        self.fork = fork
        self.link.on_message = self._on_coordinator
        self.link.on_close = lambda conn: self._lose("the coordinator link closed")
        log.info(
            "node %s joined %s: %s, executors at %s",
            self.node_id,
            self.address,
            self.capacity,
            config.advertise,
        )
        self.running = not self._signalled
        self._heard = time.monotonic()
        self._heartbeat(self._session)
        try:
            while self.running:
                self.reactor.run_once(None)
        finally:
            self._stop_executors()

    def _lose(self, reason: str) -> None:
        """The coordinator is gone (or hung): stop serving it; ``run`` may rejoin."""
        if self.running:
            self._coordinator_lost = reason
            self.stop(reason, 1)

    def _rejoin(self) -> cfg.ClusterConfig | None:
        """Find a coordinator again within ``rejoin`` s: the one we had, the one the
        store's lease names (a takeover on another host), the one we were told to join."""
        if self.rejoin <= 0 or self._signalled:
            return None
        log.warning(
            "node %s lost its coordinator at %s (%s): its executors are stopped; rejoining "
            "for up to %g s",
            self.node_id,
            self.address,
            self._coordinator_lost,
            self.rejoin,
        )
        started = time.monotonic()
        deadline, tries, last = started + self.rejoin, 0, self._coordinator_lost
        while not self._signalled:
            for address in self._candidates():
                left = deadline - time.monotonic()
                if left <= 0 or self._signalled:
                    break
                try:
                    config = self.connect(address, timeout=min(_HANDSHAKE_TIMEOUT, left))
                except exc.StratusError as e:
                    last = str(e)
                    continue
                self.rejoined += 1
                log.warning(
                    "node %s rejoined the coordinator at %s after %.1f s",
                    self.node_id,
                    address,
                    time.monotonic() - started,
                )
                return config
            tries += 1
            pause = REJOIN.pause(tries, time.monotonic() - started) or 0.0
            if time.monotonic() + pause >= deadline:
                break
            _sleep_unless(lambda: self._signalled, pause)
        if not self._signalled:
            self.stop_reason = (
                f"no coordinator took node {self.node_id} back within {self.rejoin:g} s "
                f"({tries} rounds; last: {last})"
            )
            self.exit_status = 1
        return None

    def _candidates(self) -> list[str]:
        """Where to look for a coordinator, in order, without repeats."""
        found = [self.address, self.join]
        if self.store_url:
            try:
                with open_store(self.store_url, codec_for(self.key)) as store:
                    leased = leased_address(store, self.key)
            except (exc.StratusError, OSError) as e:
                log.info("node %s cannot read the coordinator's lease: %s", self.node_id, e)
            else:
                found.insert(1, leased or self.address)
        return list(dict.fromkeys(found))

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = True
        self.stop(f"signal {signal.Signals(signum).name}")

    def _heartbeat(self, session: int) -> None:
        if not self.running or session != self._session or self.link.closed:
            return
        silent = time.monotonic() - self._heard
        if silent > self.silence:
            self._lose(f"the coordinator sent nothing for {silent:.1f} s (hung, or cut off)")
            return
        self.link.send(m.NodeAlive(len(self._pids)))
        self.reactor.call_later(HEARTBEAT, lambda: self._heartbeat(session))

    def _on_coordinator(self, conn: Connection, message: Any) -> None:
        self._heard = time.monotonic()
        match message:
            case m.CoordinatorAlive():
                pass
            case m.SpawnExecutor():
                self.fork.send(message)
            case m.KillExecutor(executor_id):
                if (pid := self._pids.get(executor_id)) is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            case _:
                log.warning("node %s: unexpected %s", self.node_id, type(message).__name__)

    def _on_forkserver(self, conn: Connection, message: Any) -> None:
        match message:
            case m.ExecutorSpawned(executor_id, pid):
                self._pids[executor_id] = pid
            case m.ExecutorExited(executor_id):
                self._pids.pop(executor_id, None)
        self.link.send(message)

    def _stop_executors(self) -> None:
        """SIGTERM the fork server (it kills its executors' groups), SIGKILL if slow; a
        new coordinator does not know them, and they would call the old one."""
        self.fork.on_close = lambda conn: None
        self.link.on_close = lambda conn: None
        pid = self._forkserver_pid
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 2.0
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(pid, os.WNOHANG) == (0, 0):
                    if time.monotonic() > deadline:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        break
                    time.sleep(0.005)
        self._forkserver_pid = 0
        self._pids.clear()
        self.fork.close()
        self.link.close()


def _sleep_unless(stopped: Callable[[], bool], seconds: float) -> None:
    """Sleep ``seconds`` in short steps, waking early once ``stopped()`` (a signal)."""
    end = time.monotonic() + seconds
    while not stopped() and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


def _cores() -> int:
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = count or 1
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    return count


def _memory_mb() -> int:
    total = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) // 1024
                break
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            total = min(total, int(limit) // 2**20) if total else int(limit) // 2**20
    return total


def _gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        listing = subprocess.run(
            [binary, "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    # "GPU 0: <name> (UUID: ...)": the index, which CUDA_VISIBLE_DEVICES takes.
    lines = [line for line in listing.splitlines() if line.startswith("GPU ")]
    return [line.split()[1].rstrip(":") for line in lines]
