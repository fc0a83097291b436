"""Causal values: a key's concurrent versions, each with its vector clock and dependencies.

This is the multi-key causal lattice of Anna and Cloudburst, with one change that makes
it a lattice. A *version* is a value, the vector clock of the write that made it, and its
*dependencies*: for each other key the write had read, the clock of the version it read
(a causal read of this version must see those keys at least that new). A ``CausalValue``
holds the versions no other version has superseded:

* a version whose clock is strictly before another's is dropped (a dominating write
  replaces it, dependencies included);
* versions with concurrent (or equal) clocks and different contents are all kept, as
  *siblings*, in a deterministic order, for the reader (or a later write) to resolve.

Merge is the union of the versions, less the dominated ones. That is the join of the
lattice of down-sets of versions (ordered by their clocks), represented by maximal
elements, so it is commutative, associative and idempotent.

Why per-version clocks: Anna keeps one clock for the whole value and merges it with the
other side's when they are concurrent. That is not associative. With ``a = ({x:1}, A)``,
``b = ({y:1}, B)``, ``c = ({x:2}, C)`` (``c`` supersedes ``a``), ``(a+b)+c`` keeps
``A``, because ``a+b``'s merged clock ``{x:1, y:1}`` is concurrent with ``c``'s, while
``a+(b+c)`` drops it. Replicas merging in different orders would disagree for ever.

A writer's node id must be used by one writer (an executor) whose every write starts
from a state including its own previous write, as :meth:`CausalValue.write` assumes;
otherwise a newer write could appear to supersede an older one it never saw.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, Self

import msgspec

from stratus.lattice.base import Lattice, LatticeTypeError, pickled
from stratus.lattice.vector import VectorClock


class CausalVersion(msgspec.Struct, frozen=True):
    """One write of a key: its clock, its value, and the versions of other keys it saw."""

    clock: VectorClock
    """The vector clock of the write."""
    value: Any
    """The value written (any picklable Python value)."""
    dependencies: Mapping[str, VectorClock] = {}
    """Key to the clock of the version of that key the write depended on (copied on
    construction, never mutated)."""

    def __post_init__(self) -> None:
        if not isinstance(self.clock, VectorClock):
            raise LatticeTypeError(f"CausalVersion.clock must be a VectorClock: {self.clock!r}")
        try:
            dependencies = dict(self.dependencies)
        except (TypeError, ValueError) as e:
            raise LatticeTypeError(f"dependencies must be a mapping: {e}") from e
        for key, clock in dependencies.items():
            if not isinstance(key, str) or not isinstance(clock, VectorClock):
                raise LatticeTypeError(
                    f"dependencies map str keys to VectorClock, got {key!r}: {clock!r}"
                )
        msgspec.structs.force_setattr(self, "dependencies", dependencies)

    def __hash__(self) -> int:
        return hash((self.clock, self.value, frozenset(self.dependencies.items())))


class CausalValue(Lattice, frozen=True):
    """The unsuperseded versions of a key; ``value`` is the tuple of their values.

    >>> base = CausalValue().write("a", "v0")
    >>> left, right = base.write("a", "v1"), base.write("b", "v2")
    >>> both = left.merge(right)  # concurrent writes: both kept
    >>> sorted(both.value)
    ['v1', 'v2']
    >>> both.merge(both.write("a", "v3")).value  # a write that saw both replaces them
    ('v3',)
    """

    versions: tuple[CausalVersion, ...] = ()
    """The versions, none dominated by another, sorted (any iterable is accepted and
    normalised: dominated versions and duplicates are dropped)."""

    def __post_init__(self) -> None:
        versions = tuple(self.versions)
        for version in versions:
            if not isinstance(version, CausalVersion):
                raise LatticeTypeError(f"CausalValue holds CausalVersions, not {version!r}")
        if len(versions) > 1:
            versions = _canonical(versions)
        msgspec.structs.force_setattr(self, "versions", versions)

    @classmethod
    def of(
        cls, clock: VectorClock, value: Any, dependencies: Mapping[str, VectorClock] | None = None
    ) -> Self:
        """A value with a single version."""
        return cls((CausalVersion(clock, value, dependencies or {}),))

    def write(
        self, node: str, value: Any, dependencies: Mapping[str, VectorClock] | None = None
    ) -> Self:
        """The result of ``node`` writing ``value`` after reading ``self``: one version
        whose clock (``self.clock`` with ``node`` incremented) supersedes every sibling.

        Merge the result into the store; siblings written meanwhile elsewhere survive.
        """
        return self.of(self.clock.increment(node), value, dependencies)

    @property
    def clock(self) -> VectorClock:
        """The merge of the versions' clocks: everything this value has seen."""
        return functools.reduce(VectorClock.merge, (v.clock for v in self.versions), VectorClock())

    @property
    def dependencies(self) -> dict[str, VectorClock]:
        """Key to the merged clocks the versions depend on: what a causal reader of this
        value must see of other keys."""
        merged: dict[str, VectorClock] = {}
        for version in self.versions:
            for key, clock in version.dependencies.items():
                mine = merged.get(key)
                merged[key] = clock if mine is None else mine.merge(clock)
        return merged

    @property
    def siblings(self) -> tuple[Any, ...]:
        """The values of the versions, in the versions' deterministic order."""
        return tuple(version.value for version in self.versions)

    @property
    def value(self) -> tuple[Any, ...]:
        """The siblings: one value when writes were ordered, several after concurrent
        writes (empty for a key never written)."""
        return self.siblings

    def merge(self, other: Self) -> Self:
        """All versions of both sides, less those a version of the other supersedes."""
        self._check_same_type(other)
        return type(self)(self.versions + other.versions)

    def leq(self, other: Self) -> bool:
        """Whether each version of ``self`` is in ``other`` or superseded by one there."""
        self._check_same_type(other)
        return all(
            any(_dominated(mine, theirs) or _same(mine, theirs) for theirs in other.versions)
            for mine in self.versions
        )


def _dominated(a: CausalVersion, b: CausalVersion) -> bool:
    return a.clock.compare(b.clock) == "before"


def _key(version: CausalVersion) -> tuple[Any, ...]:
    """A sort key of everything in a version but its value (node ids and keys are str)."""
    dependencies = sorted(
        (key, sorted(clock.counters.items())) for key, clock in version.dependencies.items()
    )
    return (sorted(version.clock.counters.items()), dependencies)


def _same(a: CausalVersion, b: CausalVersion) -> bool:
    return _key(a) == _key(b) and (a.value is b.value or pickled(a.value) == pickled(b.value))


def _canonical(versions: Iterable[CausalVersion]) -> tuple[CausalVersion, ...]:
    """The maximal versions, sorted by clock, dependencies, then value bytes, without
    duplicates. Values are pickled only to order versions whose metadata is equal."""
    candidates = list(versions)
    maximal = [v for v in candidates if not any(_dominated(v, w) for w in candidates)]
    keyed = [(_key(v), v) for v in maximal]
    cached: dict[int, bytes] = {}

    def value_bytes(version: CausalVersion) -> bytes:
        if id(version) not in cached:
            cached[id(version)] = pickled(version.value)
        return cached[id(version)]

    def order(a: tuple[Any, CausalVersion], b: tuple[Any, CausalVersion]) -> int:
        if a[0] != b[0]:
            return -1 if a[0] < b[0] else 1
        if a[1].value is b[1].value:
            return 0
        x, y = value_bytes(a[1]), value_bytes(b[1])
        return (x > y) - (x < y)

    keyed.sort(key=functools.cmp_to_key(order))
    result: list[tuple[Any, CausalVersion]] = []
    for item in keyed:
        if not result or order(result[-1], item) != 0:
            result.append(item)
    return tuple(version for _, version in result)
