"""A counter that can go up and down (a PN-counter).

Each writer keeps two running totals, what it added and what it subtracted; the value is
the sum of all additions minus the sum of all subtractions. A writer's totals only grow,
so the state is a map of max-registers and merge (per-writer maximum) is its join.

Because merge takes a maximum rather than a sum, re-merging the same state, or a retried
invocation's copy of it, counts nothing twice. The price: **each writer id must be used by
one writer only** (in stratus, one executor), which builds every new total on its own
latest one. Two writers sharing an id and incrementing concurrently would each write
``total + 1``, and the maximum keeps only one of the increments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import msgspec

from stratus.lattice.base import Lattice, LatticeTypeError, counts, counts_leq, max_counts


class Counter(Lattice, frozen=True):
    """A PN-counter: per-writer totals of increments and decrements.

    >>> a = Counter().increment("executor-1", 5)
    >>> b = Counter().increment("executor-2", -2)
    >>> a.merge(b).value
    3
    >>> a.merge(b).merge(a).value  # merging again counts nothing twice
    3
    """

    positive: Mapping[str, int] = {}
    """Per writer, the sum of its increments (copied on construction, never mutated)."""
    negative: Mapping[str, int] = {}
    """Per writer, the sum of its decrements, as a positive number."""

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "positive", counts(self.positive, "Counter.positive"))
        msgspec.structs.force_setattr(self, "negative", counts(self.negative, "Counter.negative"))

    @classmethod
    def delta(cls, writer: str, amount: int, base: Counter | None = None) -> Self:
        """The state to merge into the store for ``writer`` adding ``amount`` (negative to
        subtract): ``writer``'s two totals from ``base`` plus ``amount``, nothing else.

        ``base`` must hold the writer's latest totals; the writer (one executor) keeps
        them, since a stale read from the store would make it write an old total again.
        Merging the delta into any state that includes ``base`` gives the same result as
        merging ``base.increment(writer, amount)``, and merging it twice is harmless.

        >>> first = Counter.delta("executor-1", 2)
        >>> Counter.delta("executor-1", 3, base=first).positive
        {'executor-1': 5}
        """
        base = base if base is not None else Counter()
        positive, negative = base.totals(writer)
        if _check_amount(amount) > 0:
            positive += amount
        else:
            negative -= amount
        return cls({writer: positive}, {writer: negative})

    def increment(self, writer: str, amount: int = 1) -> Self:
        """This counter with ``amount`` added by ``writer`` (negative to subtract)."""
        if not isinstance(writer, str):
            raise LatticeTypeError(f"writer must be a str, got {writer!r}")
        if _check_amount(amount) == 0:
            return self
        positive, negative = dict(self.positive), dict(self.negative)
        if amount > 0:
            positive[writer] = positive.get(writer, 0) + amount
        else:
            negative[writer] = negative.get(writer, 0) - amount
        return type(self)(positive, negative)

    def totals(self, writer: str) -> tuple[int, int]:
        """``writer``'s ``(increments, decrements)`` so far."""
        return self.positive.get(writer, 0), self.negative.get(writer, 0)

    def merge(self, other: Self) -> Self:
        """Per writer, the larger of each total."""
        self._check_same_type(other)
        return type(self)(
            max_counts(self.positive, other.positive), max_counts(self.negative, other.negative)
        )

    def leq(self, other: Self) -> bool:
        """Whether every total of ``self`` is at most the same total in ``other``."""
        self._check_same_type(other)
        return counts_leq(self.positive, other.positive) and counts_leq(
            self.negative, other.negative
        )

    @property
    def value(self) -> int:
        """The count: all increments minus all decrements."""
        return sum(self.positive.values()) - sum(self.negative.values())

    def __hash__(self) -> int:
        return hash((frozenset(self.positive.items()), frozenset(self.negative.items())))


def _check_amount(amount: int) -> int:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise LatticeTypeError(f"counter amounts must be int, got {amount!r}")
    return amount
