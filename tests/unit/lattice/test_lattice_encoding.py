"""The MessagePack encoding of lattices: schema, plain data versus sealed objects, forged
values, round trips, garbage, merges a server could do from the bytes alone."""

from __future__ import annotations

import enum
import hmac
import pickle
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forged import forged_register, trap
from lattice_strategies import STRATEGIES, counters, gsets, lattices, values
from stratus._exceptions import ForgedValue, SerializationError
from stratus.lattice import (
    CausalValue,
    CausalVersion,
    Counter,
    GSet,
    Lattice,
    LatticeCodec,
    LatticeDecodeError,
    LatticeMap,
    LatticeTypeError,
    LWWRegister,
    Max,
    Min,
    ORSet,
    Timestamp,
    ValueSeal,
    VectorClock,
)
from stratus.lattice.encoding import DATA_ONLY
from stratus.lattice.sealing import LABEL

ROUND_TRIPS = settings(max_examples=200, deadline=None)
KEY = bytes(range(32))
CODEC = LatticeCodec(ValueSeal(KEY))
encode, decode = CODEC.encode, CODEC.decode


def p(value: object) -> bytes:
    return pickle.dumps(value, protocol=5)


def sealed(value: object) -> msgspec.msgpack.Ext:
    """What a sealed value looks like in the raw MessagePack."""
    data = p(value)
    subkey = hmac.digest(KEY, LABEL, "sha256")
    return msgspec.msgpack.Ext(1, hmac.digest(subkey, data, "sha256") + data)


def raw(lattice: Lattice) -> Any:
    """The encoding as plain MessagePack data, as a Lua script would see it."""
    return msgspec.msgpack.decode(encode(lattice))


def _by_bytes(items: list[Any]) -> list[Any]:
    return sorted(items, key=msgspec.msgpack.encode)


# --- schema


@pytest.mark.parametrize(
    ("lattice", "expected"),
    [
        (LWWRegister(Timestamp(1700, 2, "n1"), "v"), ["lww2", 1700, 2, "n1", "v"]),
        (LWWRegister(Timestamp(1, 0, "n"), (1, "a")), ["lww2", 1, 0, "n", sealed((1, "a"))]),
        (GSet(frozenset({2, 1, "x"})), ["gset2", [1, 2, "x"]]),
        (
            ORSet[str]().add("x", "t1").add("y", "t2").remove("x"),
            ["orset2", [["x", "t1"], ["y", "t2"]], ["t1"]],
        ),
        (Counter({"b": 2, "a": 1}, {"a": 3}), ["counter", [["a", 1, 3], ["b", 2, 0]]]),
        (Max(7), ["max2", 7]),
        (Min(-2.5), ["min2", -2.5]),
        (Max(True), ["max2", True]),
        (Max(2**60), ["max2", 2**60]),
        (Max(2**64), ["max2", sealed(2**64)]),
        (Min("text"), ["min2", "text"]),
        (VectorClock({"y": 2, "x": 1}), ["vclock", [["x", 1], ["y", 2]]]),
        (
            LatticeMap({"k": Max(1), 2: LatticeMap({})}),
            ["map2", _by_bytes([["k", ["max2", 1]], [2, ["map2", []]]])],
        ),
        (
            CausalValue.of(VectorClock({"a": 1}), "v", {"dep": VectorClock({"b": 2})}),
            ["causal2", [[[["a", 1]], [["dep", [["b", 2]]]], "v"]]],
        ),
        (CausalValue(), ["causal2", []]),
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


# --- plain data or sealed objects


def _nested(depth: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(depth):
        value = [value]
    return value


class Colour(enum.IntEnum):
    RED = 1


PLAIN = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    1.0,
    -0.0,
    float("inf"),
    "",
    "é",
    b"\x00",
    [],
    [1, [2.5, "x"], {"a": None}],
    {"k": {"n": [b"b"]}},
]
NOT_PLAIN = [
    (1, 2),
    [1, (2,)],
    {1: "int key"},
    {"k": (1,)},
    frozenset({1}),
    2**64,
    -(2**63) - 1,
    Colour.RED,
    bytearray(b"x"),
    "\ud800",
    Timestamp(1, 2, "x"),
    _nested(40),
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_values_are_stored_as_data_and_keep_their_types(value: Any) -> None:
    register = LWWRegister(Timestamp(1, 0, "n"), value)
    for codec in (CODEC, DATA_ONLY):
        encoded = codec.encode(register)
        assert msgspec.msgpack.decode(encoded)[4] == value  # data, no envelope
        back = codec.decode(encoded).value
        assert back == value and type(back) is type(value)


@pytest.mark.parametrize("value", NOT_PLAIN, ids=lambda v: type(v).__name__)
def test_other_values_are_sealed_and_keep_their_types(value: Any) -> None:
    register = LWWRegister(Timestamp(1, 0, "n"), value)
    assert isinstance(raw(register)[4], msgspec.msgpack.Ext)
    back = decode(encode(register)).value
    assert back == value and type(back) is type(value)


def test_without_a_key_objects_are_refused_both_ways(tmp_path: Path) -> None:
    with pytest.raises(SerializationError, match="needs the cluster key"):
        DATA_ONLY.encode(LWWRegister(Timestamp(1, 0, "n"), (1, 2)))
    genuine = CODEC.encode(LWWRegister(Timestamp(1, 0, "n"), (1, 2)))
    with pytest.raises(LatticeDecodeError, match="cluster key"):
        DATA_ONLY.decode(genuine)
    with pytest.raises(LatticeDecodeError):
        DATA_ONLY.decode(forged_register(trap(tmp_path / "ran")))
    assert not (tmp_path / "ran").exists()


def test_a_forged_envelope_is_refused_and_never_loaded(tmp_path: Path) -> None:
    payload = trap(tmp_path / "ran")
    other_cluster = ValueSeal(b"another cluster key").seal(0)[:32]
    frame_mac = hmac.digest(KEY, payload, "sha256")  # signed with the frame key itself
    for forged in (
        forged_register(payload),
        forged_register(payload, tag=other_cluster),
        forged_register(payload, tag=frame_mac),
        forged_register(b"", tag=b"short"),
    ):
        with pytest.raises(ForgedValue):
            decode(forged)
    assert not (tmp_path / "ran").exists()
    assert isinstance(ForgedValue("x"), SerializationError)


def test_a_forged_value_inside_a_lattice_is_refused(tmp_path: Path) -> None:
    envelope = msgspec.msgpack.Ext(1, b"\1" * 32 + trap(tmp_path / "ran"))
    for shape in (
        ["gset2", [1, envelope]],
        ["map2", [[envelope, ["max2", 1]]]],
        ["causal2", [[[["a", 1]], [], envelope]]],
        ["max2", envelope],
    ):
        with pytest.raises(ForgedValue):
            decode(msgspec.msgpack.encode(shape))
    assert not (tmp_path / "ran").exists()


def test_a_bare_pickle_is_bytes_and_the_old_layout_is_refused(tmp_path: Path) -> None:
    payload = trap(tmp_path / "ran")
    as_data = decode(msgspec.msgpack.encode(["lww2", 1, 0, "n", payload]))
    assert as_data.value == payload  # just bytes: nothing loads them
    with pytest.raises(LatticeDecodeError, match="before values were sealed"):
        decode(msgspec.msgpack.encode(["lww", 1, 0, "n", payload]))
    assert not (tmp_path / "ran").exists()


def test_unknown_ext_types_and_bad_genuine_pickles_are_decode_errors() -> None:
    with pytest.raises(LatticeDecodeError, match="ext type 7"):
        decode(msgspec.msgpack.encode(["max2", msgspec.msgpack.Ext(7, b"")]))
    seal = ValueSeal(KEY)
    unloadable = msgspec.msgpack.Ext(1, _sealed_bytes(seal, b"junk"))
    with pytest.raises(LatticeDecodeError, match="does not unpickle"):
        decode(msgspec.msgpack.encode(["max2", unloadable]))


def _sealed_bytes(seal: ValueSeal, data: bytes) -> bytes:
    subkey = hmac.digest(KEY, LABEL, "sha256")
    return hmac.digest(subkey, data, "sha256") + data


@given(st.binary(max_size=300))
def test_the_seal_is_hmac_sha256_under_the_derived_key(data: bytes) -> None:
    subkey = hmac.digest(KEY, LABEL, "sha256")
    envelope = ValueSeal(KEY).seal(data)
    assert envelope[:32] == hmac.digest(subkey, envelope[32:], "sha256")


def test_the_seal_key_is_derived_and_never_shown() -> None:
    seal = ValueSeal(KEY)
    envelope = seal.seal("x")
    assert envelope[:32] != hmac.digest(KEY, envelope[32:], "sha256")
    assert KEY.hex() not in repr(seal) and "data only" in repr(DATA_ONLY)
    with pytest.raises(TypeError):
        ValueSeal(b"")


def test_merging_sealed_values_with_the_codec() -> None:
    a = CODEC.encode(GSet(frozenset({(1, 2)})))
    b = CODEC.encode(GSet(frozenset({(3, 4), 5})))
    assert CODEC.decode(CODEC.merge(a, b)).value == {(1, 2), (3, 4), 5}
    assert CODEC.merge(None, b) == b


# --- errors


def test_encoding_unpicklable_values_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        encode(LWWRegister(Timestamp(1, 0, "a"), threading.Lock()))
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
        b"\x92\xa4max2\x01trailing",
        _bad("max2"),
        _bad("max2", 1, 2),
        _bad("nope", 1),
        _bad(7, 1),
        _bad("max2", float("nan")),
        _bad("lww2", -1, 0, "n", 1),
        _bad("lww2", 1, 0, b"node", 1),
        _bad("gset2", [[1]]),
        _bad("counter", [["a", 1, 0], ["a", 2, 0]]),
        _bad("counter", [["a", -1, 0]]),
        _bad("counter", [["a", 1]]),
        _bad("counter", {"a": [1, 0]}),
        _bad("vclock", [["x", 1], ["x", 2]]),
        _bad("map2", [["k", ["max2", 1]], ["k", ["max2", 2]]]),
        _bad("map2", [[[1], ["max2", 1]]]),
        _bad("map2", [["k", ["bogus"]]]),
        _bad("causal2", [[[["a", 1]], [["d", []], ["d", []]], 1]]),
        _bad("orset2", [["x", 5]], []),
        _bad("lww", 1, 0, "n", p(1)),
        msgspec.msgpack.encode({"max2": 1}),
        b"\x92\xa4map2\x91\x92\xc4\x01k" * 3000,
    ],
    ids=repr,
)
def test_decoding_garbage_raises_a_decode_error(data: bytes) -> None:
    with pytest.raises(LatticeDecodeError):
        decode(data)


def test_deeply_nested_maps_are_a_decode_error_not_a_crash() -> None:
    # ["map2", [[b"k", ["map2", [[b"k", ...]]]]]], far deeper than any stack.
    data = b"\x92\xa4map2\x91\x92\xc4\x01k" * 100_000 + b"\x92\xa4max2\x01"
    with pytest.raises(LatticeDecodeError):
        decode(data)


def _check_garbage(data: bytes) -> None:
    try:
        result = decode(data)
    except (LatticeDecodeError, ForgedValue):  # a damaged envelope looks forged
        return
    assert isinstance(result, Lattice)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_bytes_decode_or_raise_a_decode_error(data: bytes) -> None:
    _check_garbage(data)


tags = st.sampled_from(
    ["lww2", "gset2", "orset2", "counter", "max2", "min2", "vclock", "map2", "causal2", "lww"]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=4),
    st.binary(max_size=8),
    values.map(p),
    st.builds(msgspec.msgpack.Ext, st.integers(0, 2), st.binary(max_size=40)),
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


# --- merging from the encoding alone, as a Redis Lua script could


def server_merge(a: bytes, b: bytes) -> bytes:
    """A reference for the merges a script could do, using only what it sees: numbers,
    strings and each element's bytes, never an unpickled value. (``lww2`` is not among
    them: its ties compare the values' pickles, which sealed bytes do not order.)"""
    x, y = msgspec.msgpack.decode(a), msgspec.msgpack.decode(b)
    assert x[0] == y[0]
    match x[0]:
        case "max2" | "min2":
            assert all(isinstance(r[1], int | float) for r in (x, y))
            if x[0] == "max2":
                return b if y[1] > x[1] else a
            return b if y[1] < x[1] else a
        case "counter":
            totals: dict[str, list[int]] = {}
            for writer, up, down in x[1] + y[1]:
                mine = totals.setdefault(writer, [0, 0])
                mine[0], mine[1] = max(mine[0], up), max(mine[1], down)
            return msgspec.msgpack.encode(["counter", [[w, *t] for w, t in totals.items()]])
        case "gset2":
            union = {msgspec.msgpack.encode(e) for e in x[1] + y[1]}
            return msgspec.msgpack.encode(["gset2", [msgspec.Raw(e) for e in union]])
    raise AssertionError(x[0])


SERVER_MERGED = {
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
    if kind in ("Max", "Min") and a.value != b.value:
        assert merged == encode(a.merge(b))  # the winner's bytes, unchanged
    # Equal bounds of different types (0 and 0.0): the script may keep either.


def test_versions_with_shared_values_encode_each_value_once_per_version() -> None:
    clock = VectorClock({"a": 1})
    value = CausalValue((CausalVersion(clock, "x"), CausalVersion(VectorClock({"b": 1}), "x")))
    assert len(raw(value)[1]) == 2
    assert decode(encode(value)) == value
