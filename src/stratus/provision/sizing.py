"""How many nodes a provisioner runs: a state machine without I/O (docs/autoscaling.md).

Theory of operation: the warm pools (``server/pools``) size themselves on load within
the nodes that joined; when their targets pass what those nodes hold, the coordinator's
scheduler reports the *shortfall* (executors wanted and not placeable, per resource
request), and how idle each node is. A provisioner polls that (``NodeDemand``) and feeds
it here as ``Observed``, with the node ids of the agents it runs. ``NodeSizing`` answers:

- ``ScaleTo(n)``: run ``n`` agents. Grown when a shortfall that a node of this
  provisioner's ``shape`` could host has lasted ``grow_after`` seconds: enough nodes for
  it beside those joined, at most ``max_nodes``. Nodes asked for and not joined count as
  coming, so a poll during their start asks for nothing more; a node not joined
  ``join_timeout`` after it was asked for is given up (``ScaleTo`` the joined count: the
  newest agents, those not joined, stop) and asked for again after a backoff that
  doubles with each give-up.
- ``Release(node)``: stop this node's agent. A node of ours with no executor for
  ``keep_alive`` seconds, while nothing is missing and more than ``min_nodes`` run, is
  first drained (``draining``, sent with the next poll: the scheduler places nothing
  there); it is released once a report made after the drain shows it draining and still
  without executors, so no call is in flight on it. A shortfall before that takes it
  back (undrained) instead of asking for a new node.

No flapping: growing needs a lasting shortfall, shrinking a node idle for the whole
keep-alive with no shortfall, and a node that just joined starts its idle clock then.

    node (ours)   observed                                  next        instruction
    -----------   ---------------------------------------   ---------   -----------------
    asked         joined (in the report)                    joined
    asked         not joined past join_timeout              (gone)      ScaleTo(joined)
    joined        no executor for keep_alive, no shortfall  draining    (drained at poll)
    draining      reported draining with no executor        (gone)      Release
    draining      a shortfall                               joined      (undrained)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from stratus import _exceptions as exc
from stratus.protocol.messages import NodeReport, Resources, Shortfall
from stratus.server.scheduler import fits


@dataclass(frozen=True)
class NodeShape:
    """What one node this provisioner adds holds: ``slots`` executors of ``offer``
    (``offer.gpus``: the node's GPUs, each given to one executor)."""

    slots: int
    offer: Resources

    def holds(self, request: Resources) -> int:
        """Executors of ``request`` that one such node holds at once."""
        if not fits(request, self.offer):
            return 0
        if request.gpus:
            return min(self.slots, self.offer.gpus // request.gpus)
        return self.slots


@dataclass(frozen=True)
class SizingConfig:
    """Bounds and periods of a provisioner's node count."""

    min_nodes: int = 0
    max_nodes: int = 4
    keep_alive: float = 300.0  # seconds a node stays without executors before it goes
    grow_after: float = 1.0  # seconds a shortfall must last before nodes are asked for
    join_timeout: float = 120.0  # seconds an asked-for node has to join
    backoff: float = 5.0  # first wait after a node that never joined; doubles
    max_backoff: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_nodes <= self.max_nodes:
            raise exc.ConfigurationError(
                f"need 0 <= min nodes <= max nodes, got {self.min_nodes}, {self.max_nodes}"
            )
        if min(self.keep_alive, self.grow_after, self.join_timeout, self.backoff) < 0:
            raise exc.ConfigurationError(f"node sizing periods cannot be negative: {self}")


# --- events


@dataclass(frozen=True)
class Observed:
    """A coordinator's answer (``NodeDemand``) and the node ids of our agents."""

    nodes: tuple[NodeReport, ...]
    shortfall: tuple[Shortfall, ...]
    agents: frozenset[str]
    stimulus_id: str = ""


# --- instructions


@dataclass(frozen=True)
class ScaleTo:
    nodes: int
    reason: str


@dataclass(frozen=True)
class Release:
    node_id: str
    reason: str


Instruction = ScaleTo | Release


@dataclass
class NodeSizing:
    """A provisioner's node count, from what its coordinator reports.

    >>> sizing = NodeSizing(SizingConfig(max_nodes=3), NodeShape(2, Resources(1.0, 1024)))
    >>> sizing.handle(Observed(nodes, shortfall, frozenset()), now)   # -> [ScaleTo(2, ...)]
    """

    config: SizingConfig
    shape: NodeShape
    target: int = 0  # agents to run (the first observation raises it to min_nodes)
    draining: set[str] = field(default_factory=set)  # sent with each poll
    asked_at: float | None = None  # when the nodes not yet joined were asked for
    short_since: float | None = None  # when the current shortfall was first seen
    retry_at: float = 0.0  # no asking for nodes before this (after a give-up)
    give_ups: int = 0
    history: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def __post_init__(self) -> None:
        if self.shape.slots < 1:
            raise exc.ConfigurationError(f"a node holds at least one executor: {self.shape}")

    def handle(self, event: Observed, now: float) -> list[Instruction]:
        ours = {n.node_id: n for n in event.nodes if n.node_id in event.agents}
        self.draining &= set(ours)  # gone, or never ours
        needed = self._nodes_needed(event.shortfall)
        out: list[Instruction] = []
        if self.target < self.config.min_nodes and now >= self.retry_at:
            self.target, self.asked_at = self.config.min_nodes, now
            self._note(f"scale to {self.target}: the minimum")
            out.append(ScaleTo(self.target, f"at least {self.target} nodes"))
        if needed:
            out += self._grow(needed, ours, now, event.stimulus_id)
        else:
            self.short_since = None
            out += self._shrink(ours, event.stimulus_id)
        if len(ours) >= self.target:
            self.asked_at = None
            if ours:
                self.give_ups = 0  # what we asked for joined
        elif self.asked_at is None:
            self.asked_at = now  # one of ours went: its replacement has the same deadline
        elif now - self.asked_at > self.config.join_timeout:
            out += self._give_up(len(ours), now, event.stimulus_id)
        return out

    def _nodes_needed(self, shortfall: tuple[Shortfall, ...]) -> int:
        """Nodes of our shape that would hold the shortfall they can host."""
        needed = 0
        for s in shortfall:
            if (per_node := self.shape.holds(s.resources)) and s.executors > 0:
                needed += math.ceil(s.executors / per_node)
        return needed

    def _grow(
        self, needed: int, ours: dict[str, NodeReport], now: float, why: str
    ) -> list[Instruction]:
        if self.draining:  # nodes about to go still have their slots: keep them
            self._note(f"undrain {sorted(self.draining)}: {why}")
            self.draining.clear()
            self.short_since = None
            return []
        if self.short_since is None:
            self.short_since = now
        if now - self.short_since < self.config.grow_after or now < self.retry_at:
            return []
        want = min(self.config.max_nodes, len(ours) + needed)
        if want <= self.target:
            return []  # enough asked for already (or at the cap)
        self.target = want
        self.asked_at = now
        reason = f"{needed} more nodes wanted for the pools, {len(ours)} joined ({why})"
        self._note(f"scale to {want}: {reason}")
        return [ScaleTo(want, reason)]

    def _shrink(self, ours: dict[str, NodeReport], why: str) -> list[Instruction]:
        out: list[Instruction] = []
        for node_id in sorted(self.draining):
            node = ours[node_id]
            if node.draining and node.executors == 0:  # drained in a report after the drain
                self.draining.discard(node_id)
                self.target = max(self.config.min_nodes, self.target - 1)
                reason = f"idle for {node.idle_for:.1f} s, drained ({why})"
                self._note(f"release {node_id}: {reason}")
                out.append(Release(node_id, reason))
        released = {i.node_id for i in out if isinstance(i, Release)}
        staying = len(ours) - len(self.draining) - len(released)
        idle = [
            n
            for n in ours.values()
            if n.node_id not in self.draining | released
            and n.executors == 0
            and n.idle_for >= self.config.keep_alive
        ]
        for node in sorted(idle, key=lambda n: (-n.idle_for, n.node_id)):
            if staying <= self.config.min_nodes:
                break
            self.draining.add(node.node_id)
            staying -= 1
            self._note(f"drain {node.node_id}: idle for {node.idle_for:.1f} s ({why})")
        return out

    def _give_up(self, joined: int, now: float, why: str) -> list[Instruction]:
        wait = min(self.config.max_backoff, self.config.backoff * 2**self.give_ups)
        self.give_ups += 1
        self.retry_at = now + wait
        self.asked_at = None
        self.target = joined  # the minimum is asked for again after the wait
        reason = f"asked-for nodes did not join in {self.config.join_timeout} s ({why})"
        self._note(f"give up: {reason}; next ask in {wait:.1f} s")
        return [ScaleTo(self.target, f"{reason}; asking again in {wait:.1f} s")]

    def _note(self, line: str) -> None:
        self.history.append(line)
