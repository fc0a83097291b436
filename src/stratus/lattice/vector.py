"""Vector clocks: per node, how many of its events a version has seen.

A vector clock maps node ids to counters; a node increments its own entry for each event
(in stratus, each causal write). Clocks are ordered pointwise, and merge is the
pointwise maximum, the join of that order. Two clocks neither of which is ``leq`` the
other record concurrent histories: the versions they stamp are kept as siblings.

Entries of zero are dropped, so ``VectorClock({"a": 0}) == VectorClock()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Self

import msgspec

from stratus.lattice.base import Lattice, LatticeTypeError, counts, counts_leq, max_counts

Causality = Literal["before", "after", "equal", "concurrent"]
"""How two clocks relate: the result of :meth:`VectorClock.compare`."""


class VectorClock(Lattice, frozen=True):
    """A map of node id to counter, merged by pointwise maximum.

    >>> a = VectorClock({"x": 2, "y": 1})
    >>> b = VectorClock({"x": 1, "y": 3})
    >>> a.compare(b)
    'concurrent'
    >>> a.merge(b).value
    {'x': 2, 'y': 3}
    >>> a.compare(a.merge(b))
    'before'
    """

    counters: Mapping[str, int] = {}
    """Per node, its count of events (copied on construction, never mutated)."""

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "counters", counts(self.counters, "VectorClock"))

    def __getitem__(self, node: str) -> int:
        """``node``'s counter (zero for a node never seen)."""
        return self.counters.get(node, 0)

    def increment(self, node: str) -> Self:
        """This clock with ``node``'s counter one higher: the clock of a new event at
        ``node`` that follows everything this clock has seen."""
        if not isinstance(node, str):
            raise LatticeTypeError(f"node must be a str, got {node!r}")
        counters = dict(self.counters)
        counters[node] = counters.get(node, 0) + 1
        return type(self)(counters)

    def compare(self, other: VectorClock) -> Causality:
        """``"before"`` if ``self`` happened before ``other`` (strictly less),
        ``"after"`` if after, ``"equal"``, or ``"concurrent"`` if neither.

        >>> VectorClock({"x": 1}).compare(VectorClock({"x": 1, "y": 1}))
        'before'
        """
        self._check_same_type(other)
        below = counts_leq(self.counters, other.counters)
        above = counts_leq(other.counters, self.counters)
        if below and above:
            return "equal"
        if below:
            return "before"
        if above:
            return "after"
        return "concurrent"

    def merge(self, other: Self) -> Self:
        """The pointwise maximum."""
        self._check_same_type(other)
        return type(self)(max_counts(self.counters, other.counters))

    def leq(self, other: Self) -> bool:
        """Whether every counter of ``self`` is at most ``other``'s."""
        self._check_same_type(other)
        return counts_leq(self.counters, other.counters)

    @property
    def value(self) -> dict[str, int]:
        """The counters, as a new ``dict`` (nodes at zero left out)."""
        return dict(self.counters)

    def __hash__(self) -> int:
        return hash(frozenset(self.counters.items()))
