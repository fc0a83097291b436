"""The MessagePack encoding of lattices: schema, round trips, garbage, server-side merges."""

from __future__ import annotations

import pickle
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice_strategies import STRATEGIES, counters, gsets, lattices, values
from stratus._exceptions import SerializationError
from stratus.lattice import (
    CausalValue,
    CausalVersion,
    Counter,
    GSet,
    Lattice,
    LatticeDecodeError,
    LatticeMap,
    LatticeTypeError,
    LWWRegister,
    Max,
    Min,
    ORSet,
    Timestamp,
    VectorClock,
    decode,
    encode,
)

ROUND_TRIPS = settings(max_examples=200, deadline=None)


def p(value: object) -> bytes:
    return pickle.dumps(value, protocol=5)


def raw(lattice: Lattice) -> Any:
    """The encoding as plain MessagePack data, as a Lua script would see it."""
    return msgspec.msgpack.decode(encode(lattice))


# --- schema


@pytest.mark.parametrize(
    ("lattice", "expected"),
    [
        (LWWRegister(Timestamp(1700, 2, "n1"), "v"), ["lww", 1700, 2, "n1", p("v")]),
        (GSet(frozenset({2, 1})), ["gset", sorted([p(1), p(2)])]),
        (
            ORSet[str]().add("x", "t1").add("y", "t2").remove("x"),
            ["orset", sorted([[p("x"), "t1"], [p("y"), "t2"]]), ["t1"]],
        ),
        (Counter({"b": 2, "a": 1}, {"a": 3}), ["counter", [["a", 1, 3], ["b", 2, 0]]]),
        (Max(7), ["max", 7]),
        (Min(-2.5), ["min", -2.5]),
        (Max(True), ["max", p(True)]),
        (Max(2**60), ["max", p(2**60)]),
        (Min("text"), ["min", p("text")]),
        (VectorClock({"y": 2, "x": 1}), ["vclock", [["x", 1], ["y", 2]]]),
        (
            LatticeMap({"k": Max(1), 2: LatticeMap({})}),
            ["map", sorted([[p("k"), ["max", 1]], [p(2), ["map", []]]])],
        ),
        (
            CausalValue.of(VectorClock({"a": 1}), "v", {"dep": VectorClock({"b": 2})}),
            ["causal", [[[["a", 1]], [["dep", [["b", 2]]]], p("v")]]],
        ),
        (CausalValue(), ["causal", []]),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, Lattice) else "",
)
def test_schema(lattice: Lattice, expected: Any) -> None:
    assert raw(lattice) == expected
    assert decode(encode(lattice)) == lattice


def test_decode_accepts_lists_in_any_order() -> None:
    data = msgspec.msgpack.encode(["counter", [["b", 2, 0], ["a", 1, 3]]])
    assert decode(data) == Counter({"a": 1, "b": 2}, {"a": 3})
    assert decode(bytearray(data)) == decode(memoryview(data))


# --- round trips


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@ROUND_TRIPS
@given(data=st.data())
def test_every_lattice_round_trips(kind: str, data: st.DataObject) -> None:
    lattice = data.draw(STRATEGIES[kind])
    encoded = encode(lattice)
    assert decode(encoded) == lattice
    assert encode(decode(encoded)) == encoded


@ROUND_TRIPS
@given(data=st.data())
def test_equal_states_encode_to_equal_bytes(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(STRATEGIES)))
    a, b = data.draw(STRATEGIES[kind]), data.draw(STRATEGIES[kind])
    assert encode(a.merge(b)) == encode(b.merge(a))


def test_user_values_round_trip_by_pickle() -> None:
    value = {"nested": [1, 2.5, None], "when": Timestamp(1, 2, "x")}
    register = LWWRegister(Timestamp(5, 0, "n"), value)
    assert decode(encode(register)) == register


# --- errors


def test_encoding_unpicklable_values_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        encode(LWWRegister(Timestamp(1, 0, "a"), lambda: 1))
    with pytest.raises(SerializationError):
        encode(Counter({"a": 2**65}))


def test_encoding_a_foreign_lattice_is_a_type_error() -> None:
    class Mine(Lattice, frozen=True):
        pass

    with pytest.raises(LatticeTypeError):
        encode(Mine())


def _bad(*parts: object) -> bytes:
    return msgspec.msgpack.encode(list(parts))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x92\xa3max\x01trailing",
        _bad("max"),
        _bad("max", 1, 2),
        _bad("nope", 1),
        _bad(7, 1),
        _bad("max", "a string, not a pickle"),
        _bad("max", float("nan")),
        _bad("max", b"not a pickle"),
        _bad("lww", -1, 0, "n", p(1)),
        _bad("lww", 1, 0, b"node", p(1)),
        _bad("gset", [p([1])]),
        _bad("counter", [["a", 1, 0], ["a", 2, 0]]),
        _bad("counter", [["a", -1, 0]]),
        _bad("counter", [["a", 1]]),
        _bad("counter", {"a": [1, 0]}),
        _bad("vclock", [["x", 1], ["x", 2]]),
        _bad("map", [[p("k"), ["max", 1]], [p("k"), ["max", 2]]]),
        _bad("map", [[p([1]), ["max", 1]]]),
        _bad("map", [[p("k"), ["bogus"]]]),
        _bad("causal", [[[["a", 1]], [["d", []], ["d", []]], p(1)]]),
        _bad("orset", [[p("x"), 5]], []),
        msgspec.msgpack.encode({"max": 1}),
        b"\x92\xa3map\x91\x92\xc4\x01k" * 3000,
    ],
    ids=repr,
)
def test_decoding_garbage_raises_a_decode_error(data: bytes) -> None:
    with pytest.raises(LatticeDecodeError):
        decode(data)


def test_deeply_nested_maps_are_a_decode_error_not_a_crash() -> None:
    # ["map", [[b"k", ["map", [[b"k", ...]]]]]], far deeper than any stack.
    data = b"\x92\xa3map\x91\x92\xc4\x01k" * 100_000 + b"\x92\xa3max\x01"
    with pytest.raises(LatticeDecodeError):
        decode(data)


def _check_garbage(data: bytes) -> None:
    try:
        result = decode(data)
    except LatticeDecodeError:
        return
    assert isinstance(result, Lattice)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_bytes_decode_or_raise_a_decode_error(data: bytes) -> None:
    _check_garbage(data)


tags = st.sampled_from(["lww", "gset", "orset", "counter", "max", "min", "vclock", "map", "causal"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=4),
    st.binary(max_size=8),
    values.map(p),
)
shapes = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.builds(lambda t, rest: [t, *rest], tags, st.lists(inner, max_size=4))
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(shape=st.builds(lambda t, rest: [t, *rest], tags, st.lists(shapes, max_size=4)))
def test_well_formed_msgpack_of_the_wrong_shape_decodes_or_raises(shape: list[Any]) -> None:
    _check_garbage(msgspec.msgpack.encode(shape))


@settings(max_examples=300, deadline=None)
@given(lattice=lattices, data=st.data())
def test_corrupted_encodings_decode_or_raise(lattice: Lattice, data: st.DataObject) -> None:
    encoded = bytearray(encode(lattice))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    _check_garbage(bytes(encoded))
    _check_garbage(bytes(encoded[:cut]))


# --- merging from the encoding alone, as a Redis Lua script would


def _lua_bytes(s: str | bytes) -> bytes:
    # cmsgpack turns str and bin alike into Lua strings: byte strings, compared byte-wise.
    return s.encode() if isinstance(s, str) else s


def server_merge(a: bytes, b: bytes) -> bytes:
    """A reference for the documented server-side merges, using only what a Lua script
    sees: numbers and byte strings, never an unpickled value."""
    x, y = msgspec.msgpack.decode(a), msgspec.msgpack.decode(b)
    assert x[0] == y[0]
    match x[0]:
        case "lww":

            def order(r: list[Any]) -> tuple[Any, ...]:
                return (r[1], r[2], _lua_bytes(r[3]), _lua_bytes(r[4]))

            return b if order(y) > order(x) else a
        case "max" | "min":
            # Pickled bounds (strings, bools, huge ints) are left to Python.
            assert all(isinstance(r[1], int | float) for r in (x, y))
            if x[0] == "max":
                return b if y[1] > x[1] else a
            return b if y[1] < x[1] else a
        case "counter":
            totals: dict[str, list[int]] = {}
            for writer, up, down in x[1] + y[1]:
                mine = totals.setdefault(writer, [0, 0])
                mine[0], mine[1] = max(mine[0], up), max(mine[1], down)
            return msgspec.msgpack.encode(["counter", [[w, *t] for w, t in totals.items()]])
        case "gset":
            union = {bytes(e) for e in x[1]} | {bytes(e) for e in y[1]}
            return msgspec.msgpack.encode(["gset", list(union)])
    raise AssertionError(x[0])


# Node ids beyond ASCII and values of different lengths check the byte-wise comparisons.
server_registers = st.builds(
    LWWRegister,
    st.builds(Timestamp, st.integers(0, 2), st.integers(0, 1), st.sampled_from(["a", "é", "z"])),
    values,
)
SERVER_MERGED = {
    "LWWRegister": server_registers,
    "Max": st.builds(Max, st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False)),
    "Min": st.builds(Min, st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False)),
    "Counter": counters,
    "GSet": gsets,
}


@pytest.mark.parametrize("kind", sorted(SERVER_MERGED))
@ROUND_TRIPS
@given(data=st.data())
def test_server_side_merge_of_the_encoding_agrees_with_merge(
    kind: str, data: st.DataObject
) -> None:
    a, b = data.draw(SERVER_MERGED[kind]), data.draw(SERVER_MERGED[kind])
    merged = server_merge(encode(a), encode(b))
    assert decode(merged) == a.merge(b)
    if kind == "LWWRegister" or (kind in ("Max", "Min") and a.value != b.value):
        assert merged == encode(a.merge(b))  # the winner's bytes, unchanged
    # Equal bounds of different types (0 and 0.0): the script may keep either.


def test_versions_with_shared_values_encode_each_value_once_per_version() -> None:
    clock = VectorClock({"a": 1})
    value = CausalValue((CausalVersion(clock, "x"), CausalVersion(VectorClock({"b": 1}), "x")))
    assert len(raw(value)[1]) == 2
    assert decode(encode(value)) == value
