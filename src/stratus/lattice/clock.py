"""Hybrid logical clock timestamps: the order of last-writer-wins registers.

A hybrid logical clock (Kulkarni et al., 2014) pairs the wall clock in milliseconds with
a logical counter. It stays close to physical time, yet never goes backwards when the
local clock does, and a timestamp issued after receiving a message is always larger than
the message's. Ties between nodes are broken by the node id, so timestamps are totally
ordered and no two nodes ever issue the same one.

:class:`HybridClock` is a state machine without I/O: the caller passes the current time
in (``tick(now_ms)``), so tests drive it with any clock they like.

Rules (``l``, ``c`` are the clock's wall and logical parts, ``pt`` the physical time)::

    event            new l                     new c
    ---------------  ------------------------  -----------------------------------------
    tick(pt)         max(l, pt)                c + 1 if l unchanged, else 0
    observe(m, pt)   max(l, m.l, pt)           max(c, m.c) + 1 if l == m.l == new l
                                               c + 1        if only l == new l
                                               m.c + 1      if only m.l == new l
                                               0            otherwise (pt won)
"""

from __future__ import annotations

import msgspec

from stratus.lattice.base import LatticeTypeError, LatticeValueError


class Timestamp(msgspec.Struct, frozen=True, order=True):
    """A point in hybrid logical time, ordered by ``(wall_ms, logical, node)``.

    >>> Timestamp(1000, 0, "a") < Timestamp(1000, 1, "a") < Timestamp(1001, 0, "a")
    True
    >>> Timestamp(1000, 0, "a") < Timestamp(1000, 0, "b")
    True
    """

    wall_ms: int
    """Milliseconds since the epoch, as the issuing node saw them (or later)."""
    logical: int
    """Counts events within one ``wall_ms``."""
    node: str
    """Id of the node that issued the timestamp; breaks ties between nodes."""

    def __post_init__(self) -> None:
        for name in ("wall_ms", "logical"):
            part = getattr(self, name)
            if not isinstance(part, int) or isinstance(part, bool):
                raise LatticeTypeError(f"Timestamp.{name} must be an int, got {part!r}")
            if part < 0:
                raise LatticeValueError(f"Timestamp.{name} must be >= 0, got {part}")
        if not isinstance(self.node, str):
            raise LatticeTypeError(f"Timestamp.node must be a str, got {self.node!r}")


class HybridClock:
    """The hybrid logical clock of one node.

    Every timestamp it returns is larger than every timestamp it returned or observed
    before, whatever the ``now_ms`` passed in (the wall clock may jump backwards).

    >>> clock = HybridClock("a")
    >>> clock.tick(1000)
    Timestamp(wall_ms=1000, logical=0, node='a')
    >>> clock.tick(999)  # the wall clock went backwards
    Timestamp(wall_ms=1000, logical=1, node='a')
    >>> clock.observe(Timestamp(2000, 5, "b"), 1001)
    Timestamp(wall_ms=2000, logical=6, node='a')
    """

    __slots__ = ("_logical", "_wall", "node")

    def __init__(self, node: str, *, last: Timestamp | None = None) -> None:
        """A clock for ``node``; ``last``, if given, is a timestamp it issued before (after
        a restart) that every new timestamp must exceed."""
        if not isinstance(node, str):
            raise LatticeTypeError(f"node must be a str, got {node!r}")
        self.node = node
        # -1 so that the first tick at any time >= 0 yields logical 0.
        self._wall = -1
        self._logical = 0
        if last is not None:
            self._wall, self._logical = last.wall_ms, last.logical

    @property
    def last(self) -> Timestamp | None:
        """The latest timestamp issued, or ``None`` before the first one."""
        if self._wall < 0:
            return None
        return Timestamp(self._wall, self._logical, self.node)

    def tick(self, now_ms: int) -> Timestamp:
        """The timestamp of a local event (a write, a send) at physical time ``now_ms``."""
        _check_now(now_ms)
        if now_ms > self._wall:
            self._wall, self._logical = now_ms, 0
        else:
            self._logical += 1
        return Timestamp(self._wall, self._logical, self.node)

    def observe(self, remote: Timestamp, now_ms: int) -> Timestamp:
        """The timestamp of receiving ``remote`` at physical time ``now_ms``.

        The result is larger than ``remote`` and than anything this clock issued before.
        """
        _check_now(now_ms)
        if not isinstance(remote, Timestamp):
            raise LatticeTypeError(f"remote must be a Timestamp, got {remote!r}")
        wall = max(self._wall, remote.wall_ms, now_ms)
        if wall == self._wall == remote.wall_ms:
            logical = max(self._logical, remote.logical) + 1
        elif wall == self._wall:
            logical = self._logical + 1
        elif wall == remote.wall_ms:
            logical = remote.logical + 1
        else:
            logical = 0
        self._wall, self._logical = wall, logical
        return Timestamp(wall, logical, self.node)

    def __repr__(self) -> str:
        return f"HybridClock({self.node!r}, last={self.last!r})"


def _check_now(now_ms: int) -> None:
    if not isinstance(now_ms, int) or isinstance(now_ms, bool):
        raise LatticeTypeError(f"now_ms must be an int of milliseconds, got {now_ms!r}")
    if now_ms < 0:
        raise LatticeValueError(f"now_ms must be >= 0, got {now_ms}")
