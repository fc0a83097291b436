"""Maps of lattices: a document whose fields merge independently.

A ``LatticeMap`` maps keys to lattice values of any type. Merge takes the union of the
keys and merges the values of keys present on both sides. A missing key behaves as the
bottom of its value's lattice, so this is the product of the value lattices, and merge
is a join as long as each key holds one lattice type on every replica. Merging two
different types under one key (a ``Counter`` here, a ``GSet`` there) has no sensible
result and raises :class:`~stratus.lattice.LatticeTypeError` naming the key.

Values may themselves be ``LatticeMap`` s, for nested documents.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any, Self

import msgspec

from stratus.lattice.base import Lattice, LatticeTypeError


class LatticeMap(Lattice, frozen=True):
    """A map of keys to lattices, merged key by key.

    >>> from stratus.lattice import Counter, GSet
    >>> a = LatticeMap({"visits": Counter().increment("e1"), "tags": GSet(frozenset({"x"}))})
    >>> b = LatticeMap({"visits": Counter().increment("e2")})
    >>> a.merge(b).value == {"visits": 2, "tags": {"x"}}
    True
    """

    entries: Mapping[Hashable, Lattice] = {}
    """Key to lattice (copied on construction, never mutated). Keys must be hashable and
    picklable."""

    def __post_init__(self) -> None:
        try:
            entries = dict(self.entries)
        except (TypeError, ValueError) as e:
            raise LatticeTypeError(f"LatticeMap entries must be a mapping: {e}") from e
        for key, lattice in entries.items():
            if not isinstance(lattice, Lattice):
                raise LatticeTypeError(
                    f"LatticeMap[{key!r}] must be a lattice, got {type(lattice).__name__}"
                )
        msgspec.structs.force_setattr(self, "entries", entries)

    def __getitem__(self, key: Hashable) -> Lattice:
        return self.entries[key]

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.entries)

    def get(self, key: Hashable, default: Lattice | None = None) -> Lattice | None:
        """The lattice under ``key``, or ``default``."""
        return self.entries.get(key, default)

    def merge_at(self, key: Hashable, lattice: Lattice) -> Self:
        """This map with ``lattice`` merged into the value under ``key`` (or put there).

        >>> from stratus.lattice import Max
        >>> LatticeMap().merge_at("best", Max(3)).merge_at("best", Max(2))["best"]
        Max(value=3)
        """
        return self.merge(type(self)({key: lattice}))

    def merge(self, other: Self) -> Self:
        """The union of the keys; values under a shared key are merged."""
        self._check_same_type(other)
        small, large = sorted((self.entries, other.entries), key=len)
        merged = dict(large)
        for key, lattice in small.items():
            mine = merged.get(key)
            if mine is None:
                merged[key] = lattice
                continue
            # Always self's value merged with other's, whichever side was copied.
            ours, theirs = (mine, lattice) if large is self.entries else (lattice, mine)
            _check_key(key, ours, theirs)
            merged[key] = ours.merge(theirs)
        return type(self)(merged)

    def leq(self, other: Self) -> bool:
        """Whether every key of ``self`` is in ``other`` with a value at least as large."""
        self._check_same_type(other)
        for key, lattice in self.entries.items():
            theirs = other.entries.get(key)
            if theirs is None:
                return False
            _check_key(key, lattice, theirs)
            if not lattice.leq(theirs):
                return False
        return True

    @property
    def value(self) -> dict[Hashable, Any]:
        """A plain ``dict`` of each key to its lattice's ``value`` (recursively)."""
        return {key: lattice.value for key, lattice in self.entries.items()}

    def __hash__(self) -> int:
        return hash(frozenset(self.entries.items()))


def _check_key(key: Hashable, ours: Lattice, theirs: Lattice) -> None:
    if type(ours) is not type(theirs):
        raise LatticeTypeError(
            f"LatticeMap key {key!r} holds a {type(ours).__name__} here and a "
            f"{type(theirs).__name__} in the other map; they cannot be merged"
        )
