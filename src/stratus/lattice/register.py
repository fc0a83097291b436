"""Last-writer-wins register: a value stamped with a hybrid logical clock timestamp.

The lattice is the product order of (timestamp, canonical bytes of the value): the larger
timestamp wins, and for the same timestamp (same node, same instant: only a retried or
replayed write can do that) the value whose pickle is larger wins. Taking the larger of
two elements of a total order is a join, so merge is commutative, associative and
idempotent even on ties. Plain Python values put into the kv store without a lattice are
stored as ``LWWRegister``.

Ties compare ``pickle`` protocol 5 bytes (not the stored bytes: plain values are stored
as MessagePack, other objects sealed, see ``stratus.lattice.encoding``), so a merge needs
the decoded values, which only Python has. The tie-break
is reproducible across processes for values whose pickle is (``int``, ``str``, ``bytes``,
tuples and dicts of those...), but not for sets of strings, whose iteration order
depends on the process's hash seed.
"""

from __future__ import annotations

from typing import Generic, Self, TypeVar

from stratus.lattice.base import Lattice, LatticeTypeError, pickled
from stratus.lattice.clock import HybridClock, Timestamp

T = TypeVar("T")


class LWWRegister(Lattice, Generic[T], frozen=True):
    """A value and the timestamp of the write that put it; the later write wins.

    >>> old = LWWRegister(Timestamp(1000, 0, "a"), "old")
    >>> new = LWWRegister(Timestamp(1001, 0, "b"), "new")
    >>> old.merge(new).value
    'new'
    >>> new.merge(old).value
    'new'
    """

    timestamp: Timestamp
    """When the value was written (its order decides which write wins)."""
    value: T
    """The value a reader sees: any picklable Python value."""

    def __post_init__(self) -> None:
        if not isinstance(self.timestamp, Timestamp):
            raise LatticeTypeError(
                f"LWWRegister.timestamp must be a Timestamp, got {self.timestamp!r}"
            )

    @classmethod
    def write(cls, value: T, clock: HybridClock, now_ms: int) -> LWWRegister[T]:
        """A register holding ``value``, stamped by ``clock`` at physical time ``now_ms``.

        >>> LWWRegister.write("x", HybridClock("a"), 1000).timestamp
        Timestamp(wall_ms=1000, logical=0, node='a')
        """
        return cls(clock.tick(now_ms), value)

    def merge(self, other: Self) -> Self:
        """The register with the larger timestamp; on equal timestamps, the one whose value
        has the larger canonical (pickle) bytes."""
        self._check_same_type(other)
        if other.timestamp != self.timestamp:
            return other if other.timestamp > self.timestamp else self
        if other.value is self.value:
            return self
        return other if pickled(other.value) > pickled(self.value) else self

    def leq(self, other: Self) -> bool:
        """Whether ``other`` wins over (or is) ``self``."""
        self._check_same_type(other)
        if other.timestamp != self.timestamp:
            return self.timestamp < other.timestamp
        return other.value is self.value or pickled(self.value) <= pickled(other.value)
