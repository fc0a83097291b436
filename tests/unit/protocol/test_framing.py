"""Signed frames: encoding, verification, strict decoding and stream splitting."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import struct

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stratus._exceptions import ProtocolError
from stratus.protocol import messages as m
from stratus.protocol.framing import FIRST_FRAME_LIMIT, Codec, FrameReader

KEY = b"k" * 32
MAX_FRAME = 1 << 16
HEADER = 4
MAC = 32

ADDRESS = m.ExecutorAddress("x1", "unix:@x1", "tcp://10.0.0.1:7071")
PLAN = m.DagPlan(
    "pipeline",
    [
        m.PlanNode("a", 1, ADDRESS, 3.0, [], [1]),
        m.PlanNode("b", 2, ADDRESS, None, [0], []),
    ],
    sink=1,
)


def codec(inbound: object = m.ToClient, key: bytes = KEY) -> Codec:
    return Codec(key, inbound, max_frame=MAX_FRAME)


def body_of(frame: bytes) -> memoryview:
    """A whole encoded frame without its length header, as ``FrameReader`` yields it."""
    return memoryview(frame)[HEADER:]


def flip(frame: bytes, index: int) -> bytes:
    data = bytearray(frame)
    data[index] ^= 0x01
    return bytes(data)


# --- codec


@pytest.mark.parametrize(
    ("message", "inbound"),
    [
        (m.Result(rid=1, attempt=1, value=b"\x80\x05K*."), m.ToClient),
        (m.Failure(2, 3, m.ErrorInfo("RemoteError", "boom", "ValueError", "tb")), m.ToClient),
        (m.Resolved(4, "f", [m.FunctionInfo("f", 2, m.FunctionOptions())], None, []), m.ToClient),
        (m.ExecutorsChanged([ADDRESS]), m.ToClient),
        (m.ShutdownExecutor(), m.ToExecutorLink),
        (m.FunctionCode(0, "f", 1, b"code", m.FunctionOptions()), m.ToExecutorLink),
        (m.Call(5, "i1", "a", 1, b"args", 1, None, "unix:@c", plan=PLAN, node=0), m.ToExecutor),
        (m.DagInput(6, "i1", 1, "unix:@c", PLAN, node=1, source=0, value=b"v"), m.ToExecutor),
        (m.Hello("client-1", "client"), m.ToExecutor),
        (m.ExecutorHello(ADDRESS, 1234, m.Resources(2.0, 1024, 1)), m.ToCoordinator),
        (m.RegisterDag(7, "dag", [m.DagNode("a", []), m.DagNode("b", [0])]), m.ToCoordinator),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, msgspec.Struct) else "",
)
def test_message_round_trips(message: msgspec.Struct, inbound: object) -> None:
    c = codec(inbound)
    assert c.decode(body_of(c.encode(message))) == message


def test_frame_layout_is_length_mac_body() -> None:
    frame = codec().encode(m.Result(1, 1, b"v"))
    (length,) = struct.unpack("!I", frame[:HEADER])
    body = frame[HEADER + MAC :]
    assert length == len(frame) - HEADER
    assert frame[HEADER : HEADER + MAC] == hmac.digest(KEY, body, "sha256")


@pytest.mark.parametrize("where", ["mac-first", "mac-last", "body-first", "body-last"])
def test_flipped_byte_is_refused(where: str) -> None:
    frame = codec().encode(m.Result(1, 1, b"value"))
    index = {
        "mac-first": HEADER,
        "mac-last": HEADER + MAC - 1,
        "body-first": HEADER + MAC,
        "body-last": len(frame) - 1,
    }[where]
    with pytest.raises(ProtocolError, match="signature"):
        codec().decode(body_of(flip(frame, index)))


def test_frame_signed_with_another_key_is_refused() -> None:
    frame = codec(key=b"another key of 16+ bytes").encode(m.Result(1, 1, b"v"))
    with pytest.raises(ProtocolError, match="signature"):
        codec().decode(body_of(frame))


def test_frame_shorter_than_a_mac_is_refused() -> None:
    with pytest.raises(ProtocolError):
        codec().decode(memoryview(b"short"))


def test_signed_message_outside_the_receiving_union_is_refused() -> None:
    frame = codec(m.ToClient).encode(m.Result(1, 1, b"v"))
    with pytest.raises(ProtocolError, match="malformed"):
        codec(m.ToExecutor).decode(body_of(frame))


def test_signed_body_that_is_not_msgpack_is_refused() -> None:
    body = b"\xc1 not msgpack"
    frame = hmac.digest(KEY, body, "sha256") + body
    with pytest.raises(ProtocolError, match="malformed"):
        codec().decode(memoryview(frame))


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Codec(b"short", m.ToClient, max_frame=MAX_FRAME)


# --- frame reader


def frames(n: int) -> list[bytes]:
    c = codec()
    return [c.encode(m.Result(i, 1, bytes(i * 10))) for i in range(n)]


def test_reader_splits_a_stream_fed_byte_by_byte() -> None:
    sent = frames(3)
    reader = FrameReader(MAX_FRAME)
    got = [bytes(f) for byte in b"".join(sent) for f in reader.feed(bytes([byte]))]
    assert got == [f[HEADER:] for f in sent]


def test_reader_splits_several_frames_fed_at_once() -> None:
    sent = frames(5)
    got = FrameReader(MAX_FRAME).feed(b"".join(sent))
    assert [bytes(f) for f in got] == [f[HEADER:] for f in sent]


def test_reader_keeps_a_partial_frame_for_the_next_feed() -> None:
    first, second = frames(2)
    reader = FrameReader(MAX_FRAME)
    cut = len(second) // 2
    assert [bytes(f) for f in reader.feed(first + second[:cut])] == [first[HEADER:]]
    assert [bytes(f) for f in reader.feed(second[cut:])] == [second[HEADER:]]


def test_reader_frames_decode() -> None:
    message = m.Result(9, 2, b"payload")
    [frame] = FrameReader(MAX_FRAME).feed(codec().encode(message))
    assert codec().decode(frame) == message


def test_reader_accepts_a_frame_of_exactly_the_limit() -> None:
    frame = struct.pack("!I", MAX_FRAME) + bytes(MAX_FRAME)
    assert len(FrameReader(MAX_FRAME).feed(frame)) == 1


def test_reader_refuses_an_oversized_length_header() -> None:
    with pytest.raises(ProtocolError, match="refused"):
        FrameReader(MAX_FRAME).feed(struct.pack("!I", MAX_FRAME + 1))


def test_reader_refuses_an_oversized_frame_before_its_body_arrives() -> None:
    reader = FrameReader(MAX_FRAME)
    with pytest.raises(ProtocolError):
        reader.feed(frames(1)[0] + struct.pack("!I", 0xFFFFFFFF))


def test_reader_refuses_a_length_shorter_than_a_mac() -> None:
    with pytest.raises(ProtocolError):
        FrameReader(MAX_FRAME).feed(struct.pack("!I", MAC - 1) + bytes(MAC))


BIG = 1 << 20


def test_the_first_frame_is_refused_above_the_first_frame_limit() -> None:
    reader = FrameReader(BIG, first_frame=1024)
    refused = r"first frame of 60000000 bytes refused \(limit 1024\)"
    with pytest.raises(ProtocolError, match=refused):
        reader.feed(struct.pack("!I", 60_000_000) + b"junk")
    assert FrameReader(BIG).limit == FIRST_FRAME_LIMIT == 64 * 1024


def test_after_the_first_frame_the_full_limit_applies_even_in_the_same_feed() -> None:
    reader = FrameReader(BIG, first_frame=1024)
    hello = codec().encode(m.Result(1, 1, b"hello"))
    large = struct.pack("!I", BIG) + bytes(BIG)
    got = reader.feed(hello + large[:1000])  # a client pipelines Hello and a large call
    assert [bytes(f) for f in got] == [hello[HEADER:]]
    assert reader.limit == BIG and reader.buffered == 1000
    assert len(reader.feed(large[1000:])) == 1 and reader.buffered == 0


def test_a_first_frame_limit_above_the_frame_limit_is_the_frame_limit() -> None:
    assert FrameReader(1000, first_frame=5000).limit == 1000


# --- fuzzing


def decode_stream(chunks: list[bytes], inbound: object) -> None:
    reader, c = FrameReader(MAX_FRAME), codec(inbound)
    for chunk in chunks:
        for frame in reader.feed(chunk):
            c.decode(frame)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200), max_size=10))
def test_arbitrary_bytes_raise_only_protocol_errors(chunks: list[bytes]) -> None:
    with contextlib.suppress(ProtocolError):
        decode_stream(chunks, m.ToClient)


TAGS = ["result", "failure", "call", "dag_input", "hello", "resolved", "executor_hello", "nope"]
MSGPACK_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(), st.binary()
)
MSGPACK_VALUES = st.recursive(
    MSGPACK_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# Arrays that look like messages (a tag, then fields) reach the schema checks, not only msgpack's.
MESSAGE_LIKE = st.builds(
    lambda tag, fields: msgspec.msgpack.encode([tag, *fields]),
    st.sampled_from(TAGS),
    st.lists(MSGPACK_VALUES, max_size=12),
)


@example(body=b"\x91\xa4\x00\x00\x00\x80", inbound=m.ToClient)  # a tag of bad UTF-8
@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=300) | MESSAGE_LIKE,
    inbound=st.sampled_from([m.ToClient, m.ToExecutor, m.ToExecutorLink, m.ToCoordinator]),
)
def test_arbitrary_signed_bodies_raise_only_protocol_errors(body: bytes, inbound: object) -> None:
    mac = hmac.new(KEY, body, hashlib.sha256).digest()
    frame = struct.pack("!I", len(mac) + len(body)) + mac + body
    with contextlib.suppress(ProtocolError):
        decode_stream([frame], inbound)
