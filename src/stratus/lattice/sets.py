"""Sets as lattices: the grow-only set and the observed-remove (add/remove) set.

``GSet`` is ordered by inclusion and merged by union, the join of the subset order.

``ORSet`` supports removal without coordination. Every add carries a unique *tag*; a
remove tombstones the tags of the element that the remover has seen. The state is two
grow-only sets, the ``(element, tag)`` pairs ever added and the tags ever removed, so it
is the product of two ``GSet`` lattices and merge (union of both) is a join. An element
is present while one of its tags is not tombstoned, which gives the usual semantics:

* a remove takes away only the adds it observed;
* an add concurrent with a remove wins (its fresh tag was not observed, so it lives);
* re-applying an add or a remove (a retried invocation with the same tag) changes nothing.

Tombstones are never collected: an ``ORSet`` grows with every add and remove.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, Self, TypeVar

import msgspec

from stratus.lattice.base import Lattice, LatticeTypeError, LatticeValueError

T = TypeVar("T", bound=Hashable)
U = TypeVar("U")


def _frozenset(items: Iterable[U], what: str) -> frozenset[U]:
    try:
        return frozenset(items)
    except TypeError as e:
        raise LatticeTypeError(f"{what} must be hashable: {e}") from e


class GSet(Lattice, Generic[T], frozen=True):
    """A grow-only set; merge is union. Elements must be hashable and picklable.

    >>> GSet(frozenset({1, 2})).merge(GSet(frozenset({2, 3}))).value == {1, 2, 3}
    True
    """

    elements: frozenset[T] = frozenset()
    """The elements (any iterable is accepted and frozen)."""

    def __post_init__(self) -> None:
        if type(self.elements) is not frozenset:
            msgspec.structs.force_setattr(
                self, "elements", _frozenset(self.elements, "GSet elements")
            )

    def add(self, element: T) -> Self:
        """This set with ``element`` added."""
        added = _frozenset((element,), "GSet elements")
        if added <= self.elements:
            return self
        return type(self)(self.elements | added)

    def __contains__(self, element: object) -> bool:
        return element in self.elements

    def merge(self, other: Self) -> Self:
        """The union of both sets."""
        self._check_same_type(other)
        if other.elements <= self.elements:
            return self
        return type(self)(self.elements | other.elements)

    def leq(self, other: Self) -> bool:
        """Whether ``self`` is a subset of ``other``."""
        self._check_same_type(other)
        return self.elements <= other.elements

    @property
    def value(self) -> frozenset[T]:
        """The elements, as a ``frozenset``."""
        return self.elements


class ORSet(Lattice, Generic[T], frozen=True):
    """An observed-remove set: adds and removes from anywhere, concurrent add wins.

    Tags must be unique per add (an invocation id plus a counter, or a hybrid clock
    timestamp as a string); reusing an add's tag makes the add idempotent.

    >>> s = ORSet().add("x", "t1").add("y", "t2")
    >>> s.remove("x").value == {"y"}
    True
    >>> concurrent_add = s.add("x", "t3")
    >>> s.remove("x").merge(concurrent_add).value == {"x", "y"}
    True
    """

    added: frozenset[tuple[T, str]] = frozenset()
    """Every ``(element, tag)`` pair ever added."""
    removed: frozenset[str] = frozenset()
    """Every tag ever removed (tombstones)."""

    def __post_init__(self) -> None:
        if type(self.added) is not frozenset:
            msgspec.structs.force_setattr(self, "added", _frozenset(self.added, "ORSet added"))
        if type(self.removed) is not frozenset:
            msgspec.structs.force_setattr(
                self, "removed", _frozenset(self.removed, "ORSet removed")
            )
        for pair in self.added:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], str)):
                raise LatticeTypeError(f"ORSet.added holds (element, str tag) pairs, not {pair!r}")
        for tag in self.removed:
            if not isinstance(tag, str):
                raise LatticeTypeError(f"ORSet tags must be str, got {tag!r}")

    def add(self, element: T, tag: str) -> Self:
        """This set with ``element`` added under the fresh ``tag``.

        Adding the same ``(element, tag)`` again changes nothing; a tag that was removed
        stays removed, so a new add needs a new tag. Raises :class:`LatticeValueError` if
        ``tag`` already belongs to a different element.
        """
        if not isinstance(tag, str):
            raise LatticeTypeError(f"ORSet tags must be str, got {tag!r}")
        pair = (element, tag)
        if pair in self.added:
            return self
        for other, other_tag in self.added:
            if other_tag == tag:
                raise LatticeValueError(f"tag {tag!r} already added element {other!r}")
        return type(self)(self.added | _frozenset((pair,), "ORSet elements"), self.removed)

    def remove(self, element: T) -> Self:
        """This set without ``element``: every tag of it seen here is tombstoned.

        Removing an element that is not present changes nothing; adds of it that this
        replica has not seen yet survive the merge.
        """
        tags = {tag for other, tag in self.added if other == element} - self.removed
        if not tags:
            return self
        return type(self)(self.added, self.removed | tags)

    def __contains__(self, element: object) -> bool:
        return any(other == element and tag not in self.removed for other, tag in self.added)

    def merge(self, other: Self) -> Self:
        """The union of the adds and of the tombstones."""
        self._check_same_type(other)
        if other.added <= self.added and other.removed <= self.removed:
            return self
        return type(self)(self.added | other.added, self.removed | other.removed)

    def leq(self, other: Self) -> bool:
        """Whether ``other`` has seen every add and remove ``self`` has."""
        self._check_same_type(other)
        return self.added <= other.added and self.removed <= other.removed

    @property
    def value(self) -> frozenset[T]:
        """The elements with at least one tag that was not removed."""
        return frozenset(element for element, tag in self.added if tag not in self.removed)
