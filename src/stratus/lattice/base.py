"""What a lattice is here, the errors of this package, and helpers the lattices share.

A lattice value is an immutable value with a ``merge`` (the *join*, least upper bound) that
is commutative, associative and idempotent, and a partial order ``leq`` consistent with
it: ``a.leq(b)`` exactly when ``a.merge(b) == b``. Replicas that apply the same merges in
any order, any number of times, end with the same value; that is what lets the kv store
accept writes anywhere and merge them later without coordination.

Every lattice type derives from :class:`Lattice` (a frozen ``msgspec.Struct``), so
equality is structural and values are safe to share between threads and caches.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from typing import Any, Self

import msgspec

# The lattice errors are defined with the others, and re-exported here.
from stratus._exceptions import LatticeDecodeError as LatticeDecodeError
from stratus._exceptions import LatticeError as LatticeError
from stratus._exceptions import LatticeTypeError as LatticeTypeError
from stratus._exceptions import LatticeValueError as LatticeValueError
from stratus._exceptions import SerializationError


class Lattice(msgspec.Struct, frozen=True):
    """Base of every lattice value: frozen, structurally equal, mergeable.

    Subclasses implement ``merge``, ``leq`` and ``value``. They hold only immutable
    containers, or dicts that are copied on construction and never mutated after.
    """

    def merge(self, other: Self) -> Self:
        """The join of ``self`` and ``other``: the smallest value both are ``leq`` to.

        Raises :class:`LatticeTypeError` if ``other`` is a different lattice type.
        """
        raise NotImplementedError

    def leq(self, other: Self) -> bool:
        """Whether ``other`` already contains everything ``self`` does, i.e. whether
        ``self.merge(other) == other``."""
        raise NotImplementedError

    @property
    def value(self) -> Any:
        """The plain Python value a reader sees."""
        raise NotImplementedError

    def _check_same_type(self, other: object) -> None:
        # Merging a GSet into a Counter must fail loudly, not with an AttributeError.
        if type(other) is not type(self):
            raise LatticeTypeError(
                f"cannot merge or compare {type(self).__name__} with {type(other).__name__}"
            )


def pickled(value: Any) -> bytes:
    """The canonical bytes of a user value: ``pickle`` protocol 5.

    Used to break ties deterministically, and (sealed with the cluster key) to store the
    user values that MessagePack cannot hold exactly.
    Raises :class:`~stratus._exceptions.SerializationError` if ``value`` cannot be pickled.
    """
    try:
        return pickle.dumps(value, protocol=5)
    except Exception as e:
        raise SerializationError(
            f"lattice values must be picklable: {type(e).__name__}: {e}"
        ) from e


def sorted_by_pickle(values: Iterable[Any]) -> list[Any]:
    """``values`` in a deterministic order: by their canonical bytes."""
    return sorted(values, key=pickled)


def counts(mapping: Mapping[str, int], what: str) -> dict[str, int]:
    """A fresh ``{name: count}`` dict with zero entries dropped, so that equal lattices
    are structurally equal; raise on non-``str`` names and negative or non-``int`` counts."""
    result: dict[str, int] = {}
    try:
        items = mapping.items()
    except AttributeError:
        raise LatticeTypeError(f"{what} must be a mapping of str to int") from None
    for name, count in items:
        if not isinstance(name, str):
            raise LatticeTypeError(f"{what}: names must be str, got {type(name).__name__}")
        if not isinstance(count, int) or isinstance(count, bool):
            raise LatticeTypeError(f"{what}[{name!r}] must be an int, got {count!r}")
        if count < 0:
            raise LatticeValueError(f"{what}[{name!r}] must be >= 0, got {count}")
        if count:
            result[name] = count
    return result


def max_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """The pointwise maximum of two count maps (a missing name counts as zero)."""
    if len(a) < len(b):
        a, b = b, a
    result = dict(a)
    for name, count in b.items():
        if count > result.get(name, 0):
            result[name] = count
    return result


def counts_leq(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """Whether every count of ``a`` is at most the same name's count in ``b``."""
    return all(count <= b.get(name, 0) for name, count in a.items())
