"""The byte encoding of lattices: MessagePack arrays, tag first.

``encode(lattice)`` gives bytes; ``decode(data)`` gives the lattice back, or raises
:class:`~stratus.lattice.LatticeDecodeError` (and nothing else) for bytes that are not a
valid encoding. User values (register values, set elements, siblings, map keys) are
pickled (protocol 5) into MessagePack ``bin``; everything else is plain MessagePack, so
a Redis Lua script (``cmsgpack``) can read it. Lists are sorted when encoding, so equal
lattices encode to equal bytes; decoding accepts any order. The schema::

    LWWRegister   ["lww", wall_ms, logical, node, value]
    GSet          ["gset", [element, ...]]
    ORSet         ["orset", [[element, tag], ...], [removed_tag, ...]]
    Counter       ["counter", [[writer, increments, decrements], ...]]
    Max           ["max", value]
    Min           ["min", value]
    VectorClock   ["vclock", [[node, counter], ...]]
    LatticeMap    ["map", [[key, <lattice>], ...]]
    CausalValue   ["causal", [[[[node, counter], ...],
                               [[key, [[node, counter], ...]], ...],
                               value], ...]]

Strings (tags, node ids, writers, causal keys) are ``str``; counters and totals are
non-negative integers (at most 2**64 - 1); element, value and map key are ``bin`` holding
a pickle. ``Max`` and ``Min`` store an ``int`` within +-2**53 or a ``float`` natively,
and any other value (a bool, a large int, a string) as a pickle.

Merging on the server, from these encodings alone (the two inputs ``a`` and ``b`` as
decoded by ``cmsgpack.unpack``):

* ``lww``: compare ``(wall_ms, logical)`` numerically, then ``node``, then ``value``
  byte by byte (shorter prefix first), keep the larger *input string unchanged*.
  Compare bytes explicitly: Lua's ``<`` on strings follows the server's locale.
* ``max``/``min``: if both values are numbers keep the larger (smaller) input string;
  if either is a string (a pickle) leave the merge to Python. Equal numbers of different
  types (``0`` and ``0.0``) may be kept either way: they decode to equal values.
* ``counter``: per writer the maximum of each total; re-encoding with ``cmsgpack`` is
  fine (only str and int; arrays, never maps, so an empty list stays a list).
* ``gset``: the union of the element strings, deduplicated byte-wise. ``cmsgpack``
  writes Lua strings as MessagePack ``str``, which this decoder rejects for pickles, so
  the script writes each element's ``bin`` header itself (``0xc4``/``0xc5``/``0xc6``).

Ints above 2**53 lose precision in Lua, so a script must not merge counters that large.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from stratus._exceptions import SerializationError
from stratus.lattice.base import (
    Lattice,
    LatticeDecodeError,
    LatticeError,
    LatticeTypeError,
    pickled,
)
from stratus.lattice.bounds import Max, Min
from stratus.lattice.causal import CausalValue, CausalVersion
from stratus.lattice.clock import Timestamp
from stratus.lattice.counter import Counter
from stratus.lattice.maps import LatticeMap
from stratus.lattice.register import LWWRegister
from stratus.lattice.sets import GSet, ORSet
from stratus.lattice.vector import VectorClock

_Count = Annotated[int, msgspec.Meta(ge=0)]
_Clock = list[tuple[str, _Count]]
# Ints Lua can hold exactly (its numbers are doubles).
_EXACT = 2**53


class _Wire(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of the wire records: each encodes as an array whose first element is its tag."""


class _LWW(_Wire, tag="lww"):
    wall_ms: _Count
    logical: _Count
    node: str
    value: bytes


class _GSet(_Wire, tag="gset"):
    elements: list[bytes]


class _ORSet(_Wire, tag="orset"):
    added: list[tuple[bytes, str]]
    removed: list[str]


class _Counter(_Wire, tag="counter"):
    totals: list[tuple[str, _Count, _Count]]


class _Max(_Wire, tag="max"):
    value: int | float | bytes


class _Min(_Wire, tag="min"):
    value: int | float | bytes


class _VectorClock(_Wire, tag="vclock"):
    counters: _Clock


class _Map(_Wire, tag="map"):
    entries: list[tuple[bytes, _AnyWire]]


class _Causal(_Wire, tag="causal"):
    versions: list[tuple[_Clock, list[tuple[str, _Clock]], bytes]]


_AnyWire = _LWW | _GSet | _ORSet | _Counter | _Max | _Min | _VectorClock | _Map | _Causal
_DECODER = msgspec.msgpack.Decoder(_AnyWire)
_ENCODER = msgspec.msgpack.Encoder()


def encode(lattice: Lattice) -> bytes:
    """The MessagePack bytes of ``lattice`` (see the module docstring for the schema).

    Raises :class:`~stratus._exceptions.SerializationError` if a user value cannot be
    pickled or a count does not fit in 64 bits, and
    :class:`~stratus.lattice.LatticeTypeError` for a lattice type it does not know.

    >>> decode(encode(Max(3))) == Max(3)
    True
    """
    wire = _to_wire(lattice)
    try:
        return _ENCODER.encode(wire)
    except OverflowError as e:
        raise SerializationError(f"cannot encode {type(lattice).__name__}: {e}") from e


def decode(data: bytes | bytearray | memoryview) -> Lattice:
    """The lattice encoded in ``data``; :class:`~stratus.lattice.LatticeDecodeError` if
    ``data`` is not a valid encoding (malformed, wrong shape, or a pickle that fails).

    Pickles are loaded with ``pickle``: decode only bytes this cluster wrote.
    """
    try:
        wire = _DECODER.decode(data)
    except (msgspec.MsgspecError, ValueError, RecursionError) as e:
        # ValueError: msgspec reports a str that is not UTF-8 as UnicodeDecodeError.
        raise LatticeDecodeError(f"not a lattice encoding: {e}") from e
    try:
        return _from_wire(wire)
    except LatticeDecodeError:
        raise
    except (LatticeError, RecursionError) as e:
        raise LatticeDecodeError(f"not a valid lattice: {e}") from e


def _to_wire(lattice: Lattice) -> _AnyWire:
    match lattice:
        case LWWRegister(timestamp=ts, value=value):
            return _LWW(ts.wall_ms, ts.logical, ts.node, pickled(value))
        case GSet(elements=elements):
            return _GSet(sorted(pickled(e) for e in elements))
        case ORSet(added=added, removed=removed):
            return _ORSet(sorted((pickled(e), tag) for e, tag in added), sorted(removed))
        case Counter(positive=positive, negative=negative):
            writers = sorted(positive.keys() | negative.keys())
            return _Counter([(w, positive.get(w, 0), negative.get(w, 0)) for w in writers])
        case Max(value=value):
            return _Max(_bound(value))
        case Min(value=value):
            return _Min(_bound(value))
        case VectorClock(counters=counters):
            return _VectorClock(_clock(counters))
        case LatticeMap(entries=entries):
            return _Map(sorted(((pickled(k), _to_wire(v)) for k, v in entries.items()), key=_first))
        case CausalValue(versions=versions):
            return _Causal(
                [
                    (
                        _clock(v.clock.counters),
                        sorted((key, _clock(c.counters)) for key, c in v.dependencies.items()),
                        pickled(v.value),
                    )
                    for v in versions
                ]
            )
    raise LatticeTypeError(f"cannot encode {type(lattice).__name__}: not a stratus lattice")


def _first(pair: tuple[bytes, Any]) -> bytes:
    return pair[0]


def _clock(counters: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counters.items())


def _bound(value: Any) -> int | float | bytes:
    if type(value) is float or (type(value) is int and -_EXACT <= value <= _EXACT):
        return value
    return pickled(value)


def _from_wire(wire: _AnyWire) -> Lattice:
    match wire:
        case _LWW(wall_ms=wall_ms, logical=logical, node=node, value=value):
            return LWWRegister(Timestamp(wall_ms, logical, node), _unpickle(value))
        case _GSet(elements=elements):
            return GSet(_set([_unpickle(e) for e in elements]))
        case _ORSet(added=added, removed=removed):
            return ORSet(_set([(_unpickle(e), tag) for e, tag in added]), frozenset(removed))
        case _Counter(totals=totals):
            writers = _unique([writer for writer, _, _ in totals], "counter writer")
            positive = {w: p for w, (_, p, _) in zip(writers, totals, strict=True)}
            negative = {w: n for w, (_, _, n) in zip(writers, totals, strict=True)}
            return Counter(positive, negative)
        case _Max(value=value):
            return Max(_unbound(value))
        case _Min(value=value):
            return Min(_unbound(value))
        case _VectorClock(counters=counters):
            return VectorClock(_unclock(counters))
        case _Map(entries=entries):
            keys = _unique([_unpickle(key) for key, _ in entries], "map key")
            return LatticeMap({k: _from_wire(v) for k, (_, v) in zip(keys, entries, strict=True)})
        case _Causal(versions=versions):
            return CausalValue(
                tuple(
                    CausalVersion(
                        VectorClock(_unclock(clock)),
                        _unpickle(value),
                        {
                            key: VectorClock(_unclock(c))
                            for key, c in _unique_pairs(dependencies, "dependency key")
                        },
                    )
                    for clock, dependencies, value in versions
                )
            )
    raise LatticeDecodeError(f"unknown lattice wire type {type(wire).__name__}")


def _unpickle(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except Exception as e:
        raise LatticeDecodeError(f"a value does not unpickle: {type(e).__name__}: {e}") from e


def _unbound(value: int | float | bytes) -> Any:
    return _unpickle(value) if isinstance(value, bytes) else value


def _set(items: list[Any]) -> frozenset[Any]:
    try:
        return frozenset(items)
    except TypeError as e:
        raise LatticeDecodeError(f"unhashable set element: {e}") from e


def _unique(items: list[Any], what: str) -> list[Any]:
    try:
        if len(set(items)) != len(items):
            raise LatticeDecodeError(f"duplicate {what}")
    except TypeError as e:
        raise LatticeDecodeError(f"unhashable {what}: {e}") from e
    return items


def _unique_pairs(pairs: list[tuple[str, _Clock]], what: str) -> list[tuple[str, _Clock]]:
    _unique([key for key, _ in pairs], what)
    return pairs


def _unclock(counters: _Clock) -> dict[str, int]:
    _unique([node for node, _ in counters], "vector clock node")
    return dict(counters)
