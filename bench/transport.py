"""Transport benchmark: the round trip of one signed request/reply between two processes.

Why: stratus talks over plain non-blocking Unix sockets and busy-polls for a moment before
it sleeps (``Reactor._wait``), rather than using pyzmq, whose I/O thread adds a thread
wake-up per message; on a 2-core VM a wake-up costs tens of microseconds.

What: this process sends a ``Call`` and waits for the ``Result`` from a server forked fresh
for each variant (killed and reaped at its end). Both are real stratus frames made with
the project's ``Codec``: a round trip includes pickle, msgpack, HMAC-SHA256 signing and
verification, both ways. Variants: ``socket_poll``, a Unix socketpair with both sides
blocking in ``select.poll``; ``socket_spin``, the same with both sides busy-polling
(``poll(0)``) for up to 200 us first, as the reactor does; ``zmq_dealer_router`` and
``zmq_req_rep``, pyzmq over ipc:// with blocking recv. Each warms up with 500 round trips,
then times N (5000, ``--quick`` 1000) with ``perf_counter_ns``. The VM is noisy and
cross-core wake-ups are bimodal, so variants are interleaved in rounds (order reversed
every other round) and samples pooled: n = rounds x N. Ratios divide by socket_spin's p50.

How: ``.venv/bin/python bench/transport.py [--quick]``. One JSON document goes to stdout
and to ``bench/results/transport.json``, progress to stderr; a full run takes seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import os
import pickle
import platform
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import stratus
from _stats import latency_summary, ratio, results_path, write_json
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec, FrameReader

ZMQ_MISSING = ""
try:
    import zmq
except ImportError as e:  # the zmq variants are reported as null
    zmq, ZMQ_MISSING = None, f"pyzmq is not importable: {e}"

KEY = b"k" * 32
MAX_FRAME = 1 << 20
RECV = 1 << 18
SPIN = 200e-6  # seconds: stratus.transport.reactor.SPIN
WARMUP = 500
VARIANTS = ("socket_poll", "socket_spin", "zmq_dealer_router", "zmq_req_rep")
RESULT = results_path("transport")


def wait_readable(poll: Callable[[int], list[Any]], spin: float) -> None:
    """Busy-poll for up to ``spin`` seconds, then block: the shape of ``Reactor._wait``."""
    if spin:
        until = time.perf_counter() + spin
        while time.perf_counter() < until:
            if poll(0):
                return
    poll(-1)


class SocketEnd:
    """One end of a Unix socketpair carrying length-prefixed frames. Made after the fork,
    it closes this process's copy of the ``other`` end."""

    def __init__(self, sock: socket.socket, other: socket.socket, spin: float) -> None:
        other.close()
        sock.setblocking(False)
        self.sock, self.spin = sock, spin
        self.reader = FrameReader(MAX_FRAME)
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def recv(self) -> memoryview:
        while True:
            wait_readable(self.poller.poll, self.spin)
            data = self.sock.recv(RECV)
            if not data:
                raise EOFError("peer hung up")
            frames = self.reader.feed(data)
            if frames:
                return frames[0]

    def close(self) -> None:
        self.sock.close()


class ZmqEnd:
    """A pyzmq socket carrying one whole frame per zmq message (ROUTER adds the identity)."""

    def __init__(self, kind: int, address: str, bind: bool, timeout_ms: int) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(kind)
        self.sock.linger = 0
        self.sock.rcvtimeo = timeout_ms  # lets a server notice that its parent is gone
        (self.sock.bind if bind else self.sock.connect)(address)
        self.router = kind == zmq.ROUTER
        self.reader = FrameReader(MAX_FRAME)
        self.identity = b""

    def send(self, frame: bytes) -> None:
        if self.router:
            self.sock.send_multipart([self.identity, frame])
        else:
            self.sock.send(frame)

    def recv(self) -> memoryview:
        try:
            if self.router:
                self.identity, data = self.sock.recv_multipart()
            else:
                data = self.sock.recv()
        except zmq.Again:
            raise TimeoutError("no message") from None
        return self.reader.feed(data)[0]

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def serve(end: SocketEnd | ZmqEnd, parent: int) -> None:
    """The server: verify each Call, answer with Result(x + 1), until the client is gone."""
    codec = Codec(KEY, m.ToExecutor, max_frame=MAX_FRAME)
    while True:
        try:
            call = codec.decode(end.recv())
        except EOFError:
            return
        except TimeoutError:
            if os.getppid() != parent:
                return
            continue
        value = pickle.dumps(pickle.loads(call.args)[0][0] + 1)
        end.send(codec.encode(m.Result(call.rid, 1, value)))


def round_trip(end: SocketEnd | ZmqEnd, codec: Codec, rid: int) -> int:
    """One signed ``Call`` of incr(rid) and its ``Result``, checked: the value returned."""
    call = m.Call(rid, "inv", "incr", 1, pickle.dumps(((rid,), {})), 1, None, "client")
    end.send(codec.encode(call))
    result = codec.decode(end.recv())
    value: int = pickle.loads(result.value)
    if result.rid != rid or value != rid + 1:
        raise RuntimeError(f"wrong reply {result!r} to request {rid}")
    return value


def round_trips(end: SocketEnd | ZmqEnd, n: int) -> list[int]:
    """WARMUP untimed round trips, then ``n`` timed ones; nanoseconds each."""
    codec = Codec(KEY, m.ToClient, max_frame=MAX_FRAME)
    clock = time.perf_counter_ns
    samples = []
    for rid in range(WARMUP + n):
        start = clock()
        round_trip(end, codec, rid)
        elapsed = clock() - start
        if rid >= WARMUP:
            samples.append(elapsed)
    return samples


def fork_server(name: str, tmp: str) -> tuple[int, SocketEnd | ZmqEnd]:
    """Fork a server for variant ``name``: its pid, and our end of the link to it."""
    if name.startswith("socket"):
        client_sock, server_sock = socket.socketpair()
        spin = SPIN if name == "socket_spin" else 0.0
        server_end = functools.partial(SocketEnd, server_sock, client_sock, spin)
        client_end = functools.partial(SocketEnd, client_sock, server_sock, spin)
    else:
        pair = (zmq.DEALER, zmq.ROUTER) if name == "zmq_dealer_router" else (zmq.REQ, zmq.REP)
        address = f"ipc://{tmp}/{name}.sock"
        server_end = functools.partial(ZmqEnd, pair[1], address, True, 1000)
        client_end = functools.partial(ZmqEnd, pair[0], address, False, 10_000)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the server; never returns
        code = 0
        try:
            serve(server_end(), parent)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid, client_end()


def kill_server(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def run_variant(name: str, n: int, tmp: str) -> list[int]:
    """Fork a fresh server for ``name``, time ``n`` round trips against it, kill it."""
    pid, end = fork_server(name, tmp)
    try:
        gc.collect()
        return round_trips(end, n)
    finally:
        end.close()
        kill_server(pid)


class SignedEcho:
    """The floor of a remote call, for other benchmarks: a forked server answering signed
    requests over a Unix socketpair, both sides spinning briefly as stratus does. Fork it
    before any thread starts (before a cluster, Ray or Dask)."""

    def __init__(self) -> None:
        self.pid, self.end = fork_server("socket_spin", "")
        self.codec = Codec(KEY, m.ToClient, max_frame=MAX_FRAME)

    def call(self, x: int) -> int:
        """incr(x) on the server: one signed request and its signed reply."""
        return round_trip(self.end, self.codec, x)

    def close(self) -> None:
        self.end.close()
        kill_server(self.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 timed round trips a round")
    parser.add_argument("-n", type=int, help="timed round trips per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.n or (1000 if args.quick else 5000)
    names = [v for v in VARIANTS if zmq is not None or v.startswith("socket")]
    started, load_before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    samples: dict[str, list[int]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="stratus-transport-") as tmp:
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr)
                samples[name] += run_variant(name, n, tmp)
    variants: dict[str, Any] = {v: None for v in VARIANTS}
    variants.update({name: latency_summary(samples[name]) for name in names})
    base = variants["socket_spin"]["p50_us"]
    versions = {"pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version()} if zmq else {}
    document = {
        "benchmark": "transport",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {"stratus": stratus.__version__, "pyzmq": None, "libzmq": None, **versions},
        "config": {
            "warmup": WARMUP,
            "n_per_round": n,
            "rounds": args.rounds,
            "spin_us": SPIN * 1e6,
        },
        "variants": variants,
        "unavailable": {v: ZMQ_MISSING for v in VARIANTS if v not in names},
        "p50_ratio_to_socket_spin": {
            v: ratio(s["p50_us"] if s else None, base) for v, s in variants.items()
        },
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(write_json(RESULT, document))


if __name__ == "__main__":
    main()
