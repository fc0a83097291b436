"""An executor's link (server/link.py) against a stand-in coordinator and peer on real
sockets: what it says, what it hands the executor, and what it refuses."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stratus import _exceptions as exc
from stratus import config as cfg
from stratus.protocol import errors
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec
from stratus.server.link import Link
from stratus.transport.reactor import Connection, Reactor


class Listener:
    """A stand-in peer: a reactor listening on ``address``, keeping what it reads."""

    def __init__(self, config: cfg.ClusterConfig, address: str, inbound: Any) -> None:
        self.reactor = Reactor()
        self.codec = Codec(config.key, inbound, max_frame=1 << 20)
        self.conns: list[Connection] = []
        self.received: list[Any] = []
        self.reactor.listen(address, self._accept)

    def _accept(self, sock: Any) -> None:
        conn = self.reactor.add_connection(sock, self.codec, name="test")
        conn.on_message = lambda c, message: self.received.append(message)
        self.conns.append(conn)

    def send(self, *messages: Any) -> None:
        for message in messages:
            self.conns[0].send(message)


class Harness:
    def __init__(self, config: cfg.ClusterConfig) -> None:
        self.config = config
        self.coordinator = Listener(config, config.coordinator_unix, m.ToCoordinator)
        self.reactor = Reactor()
        self.controls: list[Any] = []
        self.lost: list[str] = []
        self.link = Link(
            self.reactor,
            config,
            "e1",
            on_control=self.controls.append,
            on_lost=self.lost.append,
        )
        self.others: list[Reactor] = [self.coordinator.reactor]

    def drive(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Run every reactor until ``condition`` holds; fail past ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            for reactor in [self.reactor, *self.others]:
                reactor.run_once(0.001)

    def close(self) -> None:
        self.link.close()
        for reactor in [self.reactor, *self.others]:
            reactor.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    config = cfg.ClusterConfig(cluster_id=cfg.new_cluster_id(), key=cfg.new_key())
    h = Harness(config)
    try:
        yield h
    finally:
        h.close()


def code(rid: int) -> m.FunctionCode:
    return m.FunctionCode(rid, "f", 1, b"pickled", m.FunctionOptions())


def test_the_link_says_hello_as_an_executor_and_sends_what_the_executor_sends(
    harness: Harness,
) -> None:
    address = m.ExecutorAddress("e1", "unix:@nowhere")
    harness.link.send(m.ExecutorHello(address, 1, m.Resources()))
    harness.drive(lambda: len(harness.coordinator.received) == 2)
    hello, said = harness.coordinator.received
    assert hello == m.Hello("e1", "executor")  # not a client: it gets no client pushes
    assert said == m.ExecutorHello(address, 1, m.Resources())


def test_control_messages_reach_the_executor_in_order(harness: Harness) -> None:
    harness.drive(lambda: bool(harness.coordinator.conns))
    pushed = [m.Welcome("c"), code(0), m.Unpin(["f"]), m.ShutdownExecutor()]
    harness.coordinator.send(*pushed)
    harness.drive(lambda: len(harness.controls) == 3)
    assert harness.controls == pushed[1:]  # the Welcome is the handshake's only
    assert harness.lost == []


def test_a_request_gets_its_reply_or_its_typed_error(harness: Harness) -> None:
    fetched = harness.link.request(lambda rid: m.FetchFunction(rid, "f", 1))
    missing = harness.link.request(lambda rid: m.FetchFunction(rid, "g", 1))
    harness.drive(lambda: len(harness.coordinator.received) == 3)
    first, second = harness.coordinator.received[1:]
    assert isinstance(first, m.FetchFunction) and isinstance(second, m.FetchFunction)
    failure = errors.encode(exc.FunctionNotFound("g"))
    harness.coordinator.send(m.RequestFailed(second.rid, failure), code(first.rid))
    harness.drive(lambda: fetched.done() and missing.done())
    assert fetched.result() == code(first.rid)
    assert isinstance(missing.exception(), exc.FunctionNotFound)
    assert harness.controls == []  # a reply is not a push


def test_what_a_client_reads_is_refused_on_the_link(harness: Harness) -> None:
    harness.drive(lambda: bool(harness.coordinator.conns))
    harness.coordinator.send(m.Result(1, 1, b"x"), m.Resolved(2, "f", [], None, []))
    harness.coordinator.send(m.ShutdownExecutor())
    harness.drive(lambda: len(harness.controls) == 1)
    assert harness.controls == [m.ShutdownExecutor()]
    assert harness.lost == [] and not harness.link.closed


def test_control_messages_are_not_a_clients() -> None:
    key = cfg.new_key()
    link = Codec(key, m.ToExecutorLink, max_frame=1 << 16)
    client = Codec(key, m.ToClient, max_frame=1 << 16)
    for message in (m.ShutdownExecutor(), m.Unpin(["f"]), code(0)):
        frame = memoryview(link.encode(message))[4:]  # after the length
        assert link.decode(frame) == message
        with pytest.raises(exc.ProtocolError):
            client.decode(frame)


def test_peers_come_from_the_coordinators_pushes(harness: Harness) -> None:
    config = harness.config
    peer = Listener(config, config.executor_unix("e2"), m.ToExecutor)
    harness.others.append(peer.reactor)
    e1 = m.ExecutorAddress("e1", config.executor_unix("e1"))
    e2 = m.ExecutorAddress("e2", config.executor_unix("e2"))
    gone = m.ExecutorAddress("e3", config.executor_unix("e3"))  # nobody listens there
    harness.drive(lambda: bool(harness.coordinator.conns))
    harness.coordinator.send(m.ExecutorsChanged([e1, e2, gone]))
    harness.drive(lambda: len(harness.link.peers()) == 3)
    deliver = m.Deliver("i2", "i1", b"hi")
    harness.link.peer(e2).send(deliver)
    harness.drive(lambda: len(peer.received) == 2)
    # A peer's Hello says "executor": the peer does not take it for a caller of its own.
    assert peer.received == [m.Hello("e1", "executor"), deliver]
    assert harness.link.peer(e2) is harness.link.peer(e2)  # one connection per peer
    with pytest.raises(exc.ExecutorLost):
        harness.link.peer(gone)
    assert {p.executor_id for p in harness.link.peers()} == {"e1", "e2"}


def test_a_closed_link_fails_its_requests_and_tells_the_executor_once(
    harness: Harness,
) -> None:
    pending = harness.link.request(lambda rid: m.FetchFunction(rid, "f", 1))
    harness.drive(lambda: len(harness.coordinator.received) == 2)
    harness.coordinator.conns[0].close()  # the coordinator went away
    harness.drive(lambda: harness.link.closed)
    assert harness.lost == ["its coordinator link closed"]
    assert isinstance(pending.exception(timeout=0), exc.ClusterClosed)
    with pytest.raises(exc.ClusterClosed):
        harness.link.request(lambda rid: m.FetchFunction(rid, "f", 1))
