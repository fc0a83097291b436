"""Lattice values: the immutable, mergeable values of the kv store.

Every lattice has ``merge`` (commutative, associative, idempotent: replicas agree
whatever order merges arrive in, however often), ``leq`` (the partial order merge
respects: ``a.leq(a.merge(b))``) and ``value`` (what a reader sees).

=================  ===================================================  ===============
type               merge                                                ``value``
=================  ===================================================  ===============
``LWWRegister``    later hybrid-clock timestamp wins, ties by bytes     the value
``GSet``           union                                                ``frozenset``
``ORSet``          union of add-tags and of tombstones                  ``frozenset``
``Counter``        per-writer maximum of the totals                     ``int``
``Max``/``Min``    larger / smaller                                     the value
``LatticeMap``     union of keys, merge per key                         ``dict``
``VectorClock``    pointwise maximum                                    ``dict``
``CausalValue``    union of versions less the superseded ones           siblings tuple
=================  ===================================================  ===============

A ``LatticeCodec`` turns any of them into MessagePack bytes and back, with user objects
that are not plain data pickled under the cluster's ``ValueSeal``; ``encode`` and
``decode`` are the codec without a key (plain data only).
"""

from __future__ import annotations

from stratus.lattice.base import (
    Lattice,
    LatticeDecodeError,
    LatticeError,
    LatticeTypeError,
    LatticeValueError,
)
from stratus.lattice.bounds import Max, Min
from stratus.lattice.causal import CausalValue, CausalVersion
from stratus.lattice.clock import HybridClock, Timestamp
from stratus.lattice.counter import Counter
from stratus.lattice.encoding import LatticeCodec, decode, encode
from stratus.lattice.maps import LatticeMap
from stratus.lattice.register import LWWRegister
from stratus.lattice.sealing import ValueSeal
from stratus.lattice.sets import GSet, ORSet
from stratus.lattice.vector import Causality, VectorClock

__all__ = [
    "CausalValue",
    "CausalVersion",
    "Causality",
    "Counter",
    "GSet",
    "HybridClock",
    "LWWRegister",
    "Lattice",
    "LatticeCodec",
    "LatticeDecodeError",
    "LatticeError",
    "LatticeMap",
    "LatticeTypeError",
    "LatticeValueError",
    "Max",
    "Min",
    "ORSet",
    "Timestamp",
    "ValueSeal",
    "VectorClock",
    "decode",
    "encode",
]
