"""How user values become stored bytes, and how the store merges them.

A lattice is stored as its encoding (``stratus.lattice.encode``). A plain Python value is
stored as an ``LWWRegister`` stamped by the writer's hybrid logical clock, so concurrent
writers of one key agree on the winner whatever order their commits reach the store in.
"""

from __future__ import annotations

import time
from typing import Any

from stratus.lattice import HybridClock, Lattice, LWWRegister, decode, encode


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
