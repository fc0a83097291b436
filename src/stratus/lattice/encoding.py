"""The byte encoding of lattices: MessagePack arrays, tag first, with no code in them.

A :class:`LatticeCodec` turns a lattice into bytes (``encode``) and back (``decode``,
which raises :class:`~stratus.lattice.LatticeDecodeError` for bytes that are not a valid
encoding). User values (register values, set elements, siblings, map keys, bounds) are
stored in one of two ways:

* as plain MessagePack when it holds them exactly: ``None``, ``bool``, ``int`` (64-bit),
  ``float``, ``str``, ``bytes``, and ``list`` / ``dict`` (``str`` keys) of those, of
  exactly these types. Reading them back runs no code;
* anything else (a tuple, a frozenset, a class instance, a bool subclass, a huge int) as
  MessagePack ext type 1 holding a pickle sealed with the cluster key
  (:class:`~stratus.lattice.sealing.ValueSeal`), opened only after its HMAC verifies.
  A forged envelope raises :class:`~stratus._exceptions.ForgedValue` and is never loaded.

A codec without a seal (``DATA_ONLY``, and the module's ``encode``/``decode``) handles
plain data only: encoding another value raises ``SerializationError``, decoding a sealed
one raises ``LatticeDecodeError``. It serves callers that hold no user objects (vector
clocks) or no key (the file-system tools).

Lists are sorted when encoding (by the encoded bytes of their items), so equal lattices
encode to equal bytes under one key; decoding accepts any order. The schema::

    LWWRegister   ["lww2", wall_ms, logical, node, value]
    GSet          ["gset2", [element, ...]]
    ORSet         ["orset2", [[element, tag], ...], [removed_tag, ...]]
    Counter       ["counter", [[writer, increments, decrements], ...]]
    Max           ["max2", value]
    Min           ["min2", value]
    VectorClock   ["vclock", [[node, counter], ...]]
    LatticeMap    ["map2", [[key, <lattice>], ...]]
    CausalValue   ["causal2", [[[[node, counter], ...],
                                [[key, [[node, counter], ...]], ...],
                                value], ...]]

Strings (tags, node ids, writers, causal keys) are ``str``; counters and totals are
non-negative integers (at most 2**64 - 1). The types that hold user values were renamed
("lww" became "lww2") when values stopped being bare pickles: bytes written before are
refused with a clear ``LatticeDecodeError`` instead of being read as ``bytes`` values or
unpickled (docs/store.md, "Format change").

The Redis store merges in Python (``merge_fn``), so no script depends on this layout. A
script could still merge ``counter`` and ``vclock`` (str and int only), and ``max2`` /
``min2`` of numbers; sealed values are opaque to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from stratus._exceptions import SerializationError
from stratus.lattice.base import (
    Lattice,
    LatticeDecodeError,
    LatticeError,
    LatticeTypeError,
)
from stratus.lattice.bounds import Max, Min
from stratus.lattice.causal import CausalValue, CausalVersion
from stratus.lattice.clock import Timestamp
from stratus.lattice.counter import Counter
from stratus.lattice.maps import LatticeMap
from stratus.lattice.register import LWWRegister
from stratus.lattice.sealing import ValueSeal
from stratus.lattice.sets import GSet, ORSet
from stratus.lattice.vector import VectorClock

_Count = Annotated[int, msgspec.Meta(ge=0)]
_Clock = list[tuple[str, _Count]]
SEALED_EXT = 1  # the MessagePack ext type of a sealed pickle
_INT_RANGE = (-(2**63), 2**64)  # what a MessagePack int holds
_MAX_DEPTH = 32  # plain lists and dicts nested deeper are sealed instead
_SCALARS = frozenset({type(None), bool, float, str, bytes})  # int: only in 64 bits
# Tags of the layout before values were sealed: bytes with them are refused by name.
_UNSEALED_TAGS = frozenset({"lww", "gset", "orset", "max", "min", "map", "causal"})


class _Wire(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of the wire records: each encodes as an array whose first element is its tag.
    Value fields are ``Any``: decoded as plain data, ext type 1 opened by the codec."""


class _LWW(_Wire, tag="lww2"):
    wall_ms: _Count
    logical: _Count
    node: str
    value: Any


class _GSet(_Wire, tag="gset2"):
    elements: list[Any]


class _ORSet(_Wire, tag="orset2"):
    added: list[tuple[Any, str]]
    removed: list[str]


class _Counter(_Wire, tag="counter"):
    totals: list[tuple[str, _Count, _Count]]


class _Max(_Wire, tag="max2"):
    value: Any


class _Min(_Wire, tag="min2"):
    value: Any


class _VectorClock(_Wire, tag="vclock"):
    counters: _Clock


class _Map(_Wire, tag="map2"):
    entries: list[tuple[Any, _AnyWire]]


class _Causal(_Wire, tag="causal2"):
    versions: list[tuple[_Clock, list[tuple[str, _Clock]], Any]]


_AnyWire = _LWW | _GSet | _ORSet | _Counter | _Max | _Min | _VectorClock | _Map | _Causal
_ENCODER = msgspec.msgpack.Encoder()
_PEEK = msgspec.msgpack.Decoder()  # only to name an old layout in an error message


class LatticeCodec:
    """Lattices to store bytes and back; user objects sealed with ``seal`` (if given).

    One per process role, built from the cluster key; ``merge`` is the store's
    ``merge_fn``.

    >>> codec = LatticeCodec(ValueSeal(b"k" * 32))
    >>> codec.decode(codec.encode(LWWRegister(Timestamp(1, 0, "n"), (1, "a")))).value
    (1, 'a')
    """

    __slots__ = ("_decoder", "seal")

    def __init__(self, seal: ValueSeal | None = None) -> None:
        self.seal = seal
        self._decoder = msgspec.msgpack.Decoder(_AnyWire, ext_hook=self._open)

    def __repr__(self) -> str:
        return f"LatticeCodec({'sealed' if self.seal else 'data only'})"

    def encode(self, lattice: Lattice) -> bytes:
        """The MessagePack bytes of ``lattice`` (see the module docstring for the schema).

        Raises :class:`~stratus._exceptions.SerializationError` if a user value cannot be
        stored (not plain data and no seal, or not picklable) or a count does not fit in
        64 bits, and :class:`~stratus.lattice.LatticeTypeError` for an unknown lattice type.
        """
        wire = self._to_wire(lattice)
        try:
            return _ENCODER.encode(wire)
        except OverflowError as e:
            raise SerializationError(f"cannot encode {type(lattice).__name__}: {e}") from e

    def decode(self, data: bytes | bytearray | memoryview) -> Lattice:
        """The lattice encoded in ``data``.

        Raises :class:`~stratus._exceptions.ForgedValue` for a sealed value whose seal does
        not verify, and :class:`~stratus.lattice.LatticeDecodeError` for anything else that
        is not a valid encoding. Plain values are read as data; only verified pickles load.
        """
        try:
            wire = self._decoder.decode(data)
        except (msgspec.MsgspecError, ValueError, RecursionError) as e:
            # ValueError: msgspec reports a str that is not UTF-8 as UnicodeDecodeError.
            raise LatticeDecodeError(f"not a lattice encoding: {e}{_old_layout(data)}") from e
        try:
            return _from_wire(wire)
        except LatticeDecodeError:
            raise
        except (LatticeError, RecursionError) as e:
            raise LatticeDecodeError(f"not a valid lattice: {e}") from e

    def merge(self, old: bytes | None, new: bytes) -> bytes:
        """The store's ``merge_fn``: decode both sides, merge, encode.

        Raises ``LatticeTypeError`` when the two are different lattices (a plain value
        merged into a counter), ``ForgedValue`` if either side is forged; the store then
        writes nothing.
        """
        if old is None:
            return new
        return self.encode(self.decode(old).merge(self.decode(new)))

    # ------------------------------------------------------------------ values

    def _value(self, value: Any) -> msgspec.Raw:
        return msgspec.Raw(self._value_bytes(value))

    def _value_bytes(self, value: Any) -> bytes:
        """The encoded bytes of one user value: plain data, else a sealed pickle."""
        if _is_data(value, 0):
            try:
                return _ENCODER.encode(value)
            except UnicodeEncodeError:
                pass  # a str with lone surrogates: pickle keeps it exactly
        if self.seal is None:
            raise SerializationError(
                f"a {type(value).__name__} is not plain data (None, bool, int, float, str, "
                "bytes, list, dict with str keys): storing it needs the cluster key"
            )
        return _ENCODER.encode(msgspec.msgpack.Ext(SEALED_EXT, self.seal.seal(value)))

    def _open(self, code: int, data: memoryview) -> Any:
        if code != SEALED_EXT:
            raise LatticeDecodeError(f"unknown MessagePack ext type {code} in a stored value")
        if self.seal is None:
            raise LatticeDecodeError("a sealed value can only be read with the cluster key")
        return self.seal.open(data)

    def _sorted(self, values: Any) -> list[msgspec.Raw]:
        return [msgspec.Raw(b) for b in sorted(map(self._value_bytes, values))]

    def _to_wire(self, lattice: Lattice) -> _AnyWire:
        match lattice:
            case LWWRegister(timestamp=ts, value=value):
                return _LWW(ts.wall_ms, ts.logical, ts.node, self._value(value))
            case GSet(elements=elements):
                return _GSet(self._sorted(elements))
            case ORSet(added=added, removed=removed):
                pairs = sorted((self._value_bytes(e), tag) for e, tag in added)
                return _ORSet([(msgspec.Raw(e), tag) for e, tag in pairs], sorted(removed))
            case Counter(positive=positive, negative=negative):
                writers = sorted(positive.keys() | negative.keys())
                return _Counter([(w, positive.get(w, 0), negative.get(w, 0)) for w in writers])
            case Max(value=value):
                return _Max(self._value(value))
            case Min(value=value):
                return _Min(self._value(value))
            case VectorClock(counters=counters):
                return _VectorClock(_clock(counters))
            case LatticeMap(entries=entries):
                keyed = sorted(
                    ((self._value_bytes(k), self._to_wire(v)) for k, v in entries.items()),
                    key=_first,
                )
                return _Map([(msgspec.Raw(k), v) for k, v in keyed])
            case CausalValue(versions=versions):
                return _Causal(
                    [
                        (
                            _clock(v.clock.counters),
                            sorted((key, _clock(c.counters)) for key, c in v.dependencies.items()),
                            self._value(v.value),
                        )
                        for v in versions
                    ]
                )
        raise LatticeTypeError(f"cannot encode {type(lattice).__name__}: not a stratus lattice")


DATA_ONLY = LatticeCodec()
"""The codec without a key: plain data only (see the module docstring)."""


def encode(lattice: Lattice) -> bytes:
    """``DATA_ONLY.encode``: the bytes of a lattice whose values are all plain data.

    >>> decode(encode(Max(3))) == Max(3)
    True
    """
    return DATA_ONLY.encode(lattice)


def decode(data: bytes | bytearray | memoryview) -> Lattice:
    """``DATA_ONLY.decode``: a lattice from bytes; sealed values are refused, not loaded."""
    return DATA_ONLY.decode(data)


def _is_data(value: Any, depth: int) -> bool:
    """Whether MessagePack gives ``value`` back exactly: same types, same values."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is int:
        return bool(_INT_RANGE[0] <= value < _INT_RANGE[1])
    if depth >= _MAX_DEPTH:
        return False
    if kind is list:
        items = value
    elif kind is dict:
        if not all(type(k) is str for k in value):
            return False
        items = value.values()
    else:
        return False
    # Scalars inline: a container of them costs one loop, not one call per item.
    return all(type(item) in _SCALARS or _is_data(item, depth + 1) for item in items)


def _old_layout(data: bytes | bytearray | memoryview) -> str:
    try:
        peeked = _PEEK.decode(data)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return ""
    if (
        isinstance(peeked, list)
        and peeked
        and isinstance(peeked[0], str)
        and peeked[0] in _UNSEALED_TAGS
    ):
        return (
            f" ({peeked[0]!r} is the layout of stratus before values were sealed, "
            "which is not read: see docs/store.md)"
        )
    return ""


def _first(pair: tuple[bytes, Any]) -> bytes:
    return pair[0]


def _clock(counters: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counters.items())


def _from_wire(wire: _AnyWire) -> Lattice:
    match wire:
        case _LWW(wall_ms=wall_ms, logical=logical, node=node, value=value):
            return LWWRegister(Timestamp(wall_ms, logical, node), value)
        case _GSet(elements=elements):
            return GSet(_set(elements))
        case _ORSet(added=added, removed=removed):
            return ORSet(_set([(e, tag) for e, tag in added]), frozenset(removed))
        case _Counter(totals=totals):
            writers = _unique([writer for writer, _, _ in totals], "counter writer")
            positive = {w: p for w, (_, p, _) in zip(writers, totals, strict=True)}
            negative = {w: n for w, (_, _, n) in zip(writers, totals, strict=True)}
            return Counter(positive, negative)
        case _Max(value=value):
            return Max(value)
        case _Min(value=value):
            return Min(value)
        case _VectorClock(counters=counters):
            return VectorClock(_unclock(counters))
        case _Map(entries=entries):
            keys = _unique([key for key, _ in entries], "map key")
            return LatticeMap({k: _from_wire(v) for k, (_, v) in zip(keys, entries, strict=True)})
        case _Causal(versions=versions):
            return CausalValue(
                tuple(
                    CausalVersion(
                        VectorClock(_unclock(clock)),
                        value,
                        {
                            key: VectorClock(_unclock(c))
                            for key, c in _unique_pairs(dependencies, "dependency key")
                        },
                    )
                    for clock, dependencies, value in versions
                )
            )
    raise LatticeDecodeError(f"unknown lattice wire type {type(wire).__name__}")


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
