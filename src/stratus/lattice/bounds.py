"""Max and Min registers: a value that only goes up (``Max``) or only down (``Min``).

Any totally ordered values work: numbers, strings, tuples, timestamps. The maximum of two
elements of a total order is their least upper bound, so ``Max.merge`` is a join; ``Min``
is the same lattice upside down. The values of two registers that are merged must be
comparable with each other (merging ``Max(1)`` with ``Max("a")`` raises
:class:`~stratus.lattice.LatticeTypeError`), and NaN, which is not ordered, is refused.

Values that compare equal but differ (``1``, ``1.0`` and ``True``) are ordered by their
canonical (pickle) bytes, as ``LWWRegister`` ties are, so merge picks the same one in
either order and equal states encode to equal bytes.
"""

from __future__ import annotations

import math
from typing import Any, Generic, Self, TypeVar

from stratus.lattice.base import Lattice, LatticeTypeError, LatticeValueError, pickled

T = TypeVar("T")


def _check_ordered(value: Any) -> None:
    if isinstance(value, float) and math.isnan(value):
        raise LatticeValueError("NaN is not ordered and cannot be a Max or Min")


def _less(a: Any, b: Any) -> bool:
    """``a < b``, with values that compare equal ordered by their pickle bytes."""
    try:
        if a < b:
            return True
        if b < a or a is b:
            return False
    except TypeError as e:
        raise LatticeTypeError(f"cannot order {a!r} and {b!r}: {e}") from e
    return pickled(a) < pickled(b)


class Max(Lattice, Generic[T], frozen=True):
    """A value that only grows; merge keeps the larger.

    >>> Max(3).merge(Max(7)).value
    7
    """

    value: T
    """The largest value seen."""

    def __post_init__(self) -> None:
        _check_ordered(self.value)

    def merge(self, other: Self) -> Self:
        """The register with the larger value."""
        self._check_same_type(other)
        return other if _less(self.value, other.value) else self

    def leq(self, other: Self) -> bool:
        """Whether ``self.value <= other.value``."""
        self._check_same_type(other)
        return not _less(other.value, self.value)


class Min(Lattice, Generic[T], frozen=True):
    """A value that only shrinks; merge keeps the smaller.

    >>> Min(3).merge(Min(7)).value
    3
    """

    value: T
    """The smallest value seen."""

    def __post_init__(self) -> None:
        _check_ordered(self.value)

    def merge(self, other: Self) -> Self:
        """The register with the smaller value."""
        self._check_same_type(other)
        return other if _less(other.value, self.value) else self

    def leq(self, other: Self) -> bool:
        """Whether ``self.value >= other.value``: ``other`` has come at least as low."""
        self._check_same_type(other)
        return not _less(self.value, other.value)
