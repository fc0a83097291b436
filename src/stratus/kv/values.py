"""How user values become stored bytes, and how the store merges them.

A lattice is stored as its encoding (``stratus.lattice.encode``). A plain Python value is
stored as an ``LWWRegister`` stamped by the writer's hybrid logical clock, so concurrent
writers of one key agree on the winner whatever order their commits reach the store in.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from stratus.lattice import CausalValue, HybridClock, Lattice, LWWRegister, decode, encode


def as_lattice(value: Any, clock: HybridClock) -> Lattice:
    """``value`` itself if it is a lattice, else an LWW register holding it."""
    if isinstance(value, Lattice):
        return value
    return LWWRegister.write(value, clock, time.time_ns() // 1_000_000)


def merge_encoded(old: bytes | None, new: bytes) -> bytes:
    """The store's ``merge_fn``: decode both sides, merge, encode.

    Raises ``LatticeTypeError`` when the two are different lattices (say a plain value
    merged into a counter); the store then writes nothing.
    """
    if old is None:
        return new
    return encode(decode(old).merge(decode(new)))


def resolve(value: Lattice) -> Any:
    """What a reader sees of a stored value: a causal value's single version; the merge of
    concurrent versions that are lattices; else the tuple of its siblings."""
    if not isinstance(value, CausalValue):
        return value.value
    siblings = value.siblings
    if len(siblings) == 1:
        only = siblings[0]
        return only.value if isinstance(only, Lattice) else only
    if siblings and all(isinstance(s, Lattice) for s in siblings):
        return functools.reduce(lambda a, b: a.merge(b), siblings).value
    return siblings
