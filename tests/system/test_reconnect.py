"""A client of ``stratus up`` that outlives its server: it reconnects by itself, re-sends
the calls that were not answered (their effects applied once), and, when the server
stays away past its reconnect window, fails them ``ClusterClosed`` without hanging."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stratus
from helpers import wait_until
from stratus.protocol.messages import StatusRequest
from stratus_up import Server

pytestmark = pytest.mark.system


class Blip:
    """A TCP relay between the client and the coordinator: ``cut()`` drops its
    connections (a network blip; both ends live on), and while ``blocked`` it hangs up on
    new ones at once."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("tcp://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.blocked = False
        self.accepted = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # ends the relay's recv, sends FIN
            self._open.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.blocked:
                client.close()
                continue
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(a, b), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    up = Server(tmp_path / "data")
    up.start()
    try:
        yield up
    finally:
        if up.process is not None:
            up.stop()
        print(up.output)


def test_the_same_app_calls_again_after_a_restart(server: Server) -> None:
    with stratus.connect(server.address, data_dir=server.data_dir) as app:

        @app.function
        def incr(ctx: stratus.Context, x: int) -> int:
            return x + 1

        twice = app.dag("twice", incr >> incr)
        assert incr.remote(1).result(timeout=30) == 2
        before = app.cluster_id
        server.stop()
        # Issued while the server is away: it waits rather than failing.
        during = incr.remote(10)
        assert not during.done()
        server.start()
        assert during.result(timeout=60) == 11
        assert incr.remote(2).result(timeout=30) == 3
        assert twice.remote(5).result(timeout=30) == 7
        assert app.cluster_id != before  # a new coordinator, found by itself
        assert app.lookup("incr").remote(3).result(timeout=30) == 4
        assert {f.name for f in app.status().functions} >= {"incr"}


def test_a_call_in_flight_when_the_server_is_killed_applies_once(server: Server) -> None:
    with stratus.connect(server.address, data_dir=server.data_dir) as app:

        @app.function(retries=0)  # re-sent all the same: it was not the call that failed
        def count(ctx: stratus.Context, marker: str) -> int:
            ctx.kv.incr("counter")
            with open(marker, "a") as f:  # outside the transaction: it ran, in this attempt
                f.write(f"{ctx.attempt}\n")
            time.sleep(1.0)
            return ctx.attempt

        marker = server.data_dir.parent / "ran"
        future = count.remote(str(marker))
        assert wait_until(lambda: marker.exists(), timeout=30)  # it runs now
        server.kill()  # before it commits: its executor dies with the server
        server.start()
        assert future.result(timeout=60) == 2  # the same invocation, its next attempt
        assert marker.read_text().split() == ["1", "2"]
        assert app.kv.get("counter") == 1
        assert count.remote(str(marker)).result(timeout=30) == 1
        assert app.kv.get("counter") == 2


def test_pending_calls_fail_when_the_server_stays_away(server: Server) -> None:
    window = 2.0
    with stratus.connect(server.address, data_dir=server.data_dir, reconnect=window) as app:

        @app.function
        def nap(ctx: stratus.Context, seconds: float, marker: str = "") -> float:
            if marker:
                Path(marker).touch()
            time.sleep(seconds)
            return seconds

        assert nap.remote(0).result(timeout=30) == 0
        marker = server.data_dir.parent / "napping"
        in_flight = nap.remote(30.0, str(marker))
        assert wait_until(marker.exists, timeout=30)
        server.kill()
        lost_at = time.monotonic()
        during = nap.remote(0)  # issued during the outage
        for future in (in_flight, during):
            with pytest.raises(stratus.ClusterClosed, match="reconnect window of 2 s"):
                future.result(timeout=30)
        assert time.monotonic() - lost_at < window + 3.0
        with pytest.raises(stratus.ClusterClosed):
            nap.remote(0)


def test_reconnect_must_not_be_negative() -> None:
    with pytest.raises(stratus.ConfigurationError, match="reconnect"):
        stratus.connect("tcp://127.0.0.1:1", reconnect=-1.0)


def test_a_network_blip_loses_no_call_and_runs_none_again(server: Server) -> None:
    blip = Blip(server.address)
    try:
        with stratus.connect(blip.address, data_dir=server.data_dir) as app:

            @app.function
            def nap(ctx: stratus.Context, marker: str) -> int:
                Path(marker).touch()
                time.sleep(1.0)
                return ctx.attempt

            assert nap.remote(str(server.data_dir.parent / "warm")).result(timeout=30) == 1
            marker = server.data_dir.parent / "napping"
            future = nap.remote(str(marker))
            assert wait_until(marker.exists, timeout=30)
            cluster_id, client = app.cluster_id, app._client
            blip.blocked = True
            blip.cut()
            assert wait_until(lambda: (future.done(), client.reconnecting)[1])
            statuses: list[object] = []
            asking = threading.Thread(target=lambda: statuses.append(app.status()))
            asking.start()  # a request made while the coordinator is away waits for it
            tries = blip.accepted
            assert wait_until(lambda: blip.accepted > tries)  # refused at least once
            with pytest.raises(stratus.ConnectionFailed, match="still reconnecting"):
                client.request(StatusRequest, timeout=0.2)  # its own deadline holds
            blip.blocked = False
            assert future.result(timeout=30) == 1  # its executor lived on: not run again
            asking.join(timeout=30)
            assert len(statuses) == 1 and not client.reconnecting
            assert app.cluster_id == cluster_id
            assert nap.remote(str(marker)).result(timeout=30) == 1
    finally:
        blip.close()
