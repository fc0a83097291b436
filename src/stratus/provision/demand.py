"""The coordinator's autoscaler driving a provisioner: the shell around ``sizing.py``.

Why the provisioner polls, not the coordinator: a provisioner may be a Ray driver (Ray
loaded, its own event loop and threads), which the coordinator must not become; and a
provisioner that dies takes its agents with it, so the one process that owns them is
the one that decides to add or stop them. The coordinator only reports (``NodeDemand``:
what the pools miss, how idle each node is) and drains the nodes the provisioner names.

Every ``interval`` (``stratus provision ... --autoscale``) :class:`NodeScaler` asks the
coordinator (``NodeDemandRequest``, naming the nodes it drains and what a node it adds
offers), feeds the answer to ``NodeSizing`` and carries out its ``ScaleTo`` and
``Release`` on the provisioner. A coordinator that does not answer within ``timeout``
changes nothing: the next round dials it again.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time

from stratus import _exceptions as exc
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec, FrameReader
from stratus.provision import AgentInfo, Provisioner
from stratus.provision.sizing import NodeSizing, Observed, Release, ScaleTo
from stratus.transport.reactor import handshake

log = logging.getLogger("stratus.provision")

POLL_TIMEOUT = 10.0  # seconds a coordinator has to answer a poll


class CoordinatorDemand:
    """A provisioner's connection to its coordinator, dialled again when lost."""

    def __init__(self, address: str, key: bytes, *, timeout: float = POLL_TIMEOUT) -> None:
        self.address, self.timeout = address, timeout
        self.codec = Codec(key, m.ToProvisioner, max_frame=1 << 20)
        self._sock: socket.socket | None = None
        self._reader = FrameReader(self.codec.max_frame)
        self._rids = itertools.count(1)

    def poll(self, draining: list[str], grows: m.Resources | None) -> m.NodeDemand:
        """Ask once; ``ConnectionFailed`` when the coordinator is away or silent."""
        request = m.NodeDemandRequest(next(self._rids), draining, grows)
        try:
            sock = self._connect()
            sock.sendall(self.codec.encode(request))
            deadline = time.monotonic() + self.timeout
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(1 << 16)
                if not data:
                    raise exc.ConnectionFailed(f"{self.address} closed the connection")
                for frame in self._reader.feed(data):
                    reply = self.codec.decode(frame)
                    if isinstance(reply, m.NodeDemand) and reply.rid == request.rid:
                        return reply
                    if isinstance(reply, m.RequestFailed):
                        raise exc.ConnectionFailed(f"{self.address}: {reply.error.message}")
        except (OSError, exc.ProtocolError) as e:
            self.close()
            raise exc.ConnectionFailed(f"no node demand from {self.address}: {e}") from e
        except exc.ConnectionFailed:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._reader = FrameReader(self.codec.max_frame)

    def _connect(self) -> socket.socket:
        if self._sock is None:
            hello = m.Hello(f"provisioner-{socket.gethostname()}", "provisioner")
            sock, reply, _ = handshake(self.address, self.codec, hello, timeout=self.timeout)
            if not isinstance(reply, m.Welcome):
                sock.close()
                raise exc.ProtocolError(f"the coordinator answered {type(reply).__name__}")
            self._sock = sock
        return self._sock


class NodeScaler:
    """Runs ``provisioner``'s agents as ``sizing`` decides from ``demand``'s answers."""

    def __init__(
        self, provisioner: Provisioner, demand: CoordinatorDemand, sizing: NodeSizing
    ) -> None:
        self.provisioner, self.demand, self.sizing = provisioner, demand, sizing

    def step(self) -> list[AgentInfo]:
        """One round: replace agents that exited, poll, carry out the decisions; returns
        what runs."""
        self.provisioner.scale(self.sizing.target)
        try:
            answer = self.demand.poll(sorted(self.sizing.draining), self.sizing.shape.offer)
        except exc.ConnectionFailed as e:
            log.warning("node demand: %s", e)
            return self.provisioner.agents()
        agents = frozenset(a.node_id for a in self.provisioner.agents() if a.exit_status is None)
        event = Observed(tuple(answer.nodes), tuple(answer.shortfall), agents, f"poll {answer.rid}")
        for instruction in self.sizing.handle(event, time.monotonic()):
            match instruction:
                case ScaleTo(nodes, reason):
                    log.info("scale to %d nodes: %s", nodes, reason)
                    self.provisioner.scale(nodes)
                case Release(node_id, reason):
                    log.info("stop node %s: %s", node_id, reason)
                    self.provisioner.release(node_id)
        return self.provisioner.agents()

    def close(self) -> None:
        self.demand.close()
