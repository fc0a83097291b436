"""Frames and their signatures.

A frame is ``length (u32, big-endian) | HMAC-SHA256 (32 bytes) | body``, where the body is
one msgpack-encoded message and the HMAC is computed over the body with the cluster key.
``length`` counts the HMAC and the body. A frame is checked in this order: size, then
signature, then schema; only a frame that passes all three reaches a handler, so a pickle
from a peer without the key is never loaded.

The first frame of a stream may be at most ``FIRST_FRAME_LIMIT`` bytes: until a peer has
signed one frame it is a stranger, and a stranger's 60 MiB length prefix must not make us
buffer 60 MiB before we can check its signature (docs/reliability.md, "Hostile clients").
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from stratus import _mac
from stratus._exceptions import BadSignature as BadSignature  # defined with the others
from stratus._exceptions import ProtocolError

_HEADER = struct.Struct("!I")
_MAC_SIZE = _mac.SIZE
FRAME_OVERHEAD = _HEADER.size + _MAC_SIZE + 4096  # header, MAC and message fields around a payload
# Every first message (Hello, ExecutorHello, Welcome, a fork server's report) is far smaller.
FIRST_FRAME_LIMIT = 64 * 1024


class Codec:
    """Encodes and signs outgoing messages; verifies and decodes incoming frames.

    ``inbound`` is the tagged union this end accepts; anything else is rejected.
    """

    def __init__(self, key: bytes, inbound: Any, *, max_frame: int) -> None:
        if len(key) < 16:
            raise ValueError("the cluster key must be at least 16 bytes")
        self._mac = _mac.Mac(key)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(inbound)
        self.max_frame = max_frame

    def encode(self, message: msgspec.Struct) -> bytes:
        body = self._encoder.encode(message)
        return _HEADER.pack(len(body) + _MAC_SIZE) + self._mac.tag(body) + body

    def decode(self, frame: memoryview) -> Any:
        """Verify and decode one frame (without its length header)."""
        mac, body = frame[:_MAC_SIZE], frame[_MAC_SIZE:]
        if not self._mac.verify(body, mac):
            raise BadSignature("bad frame signature")
        try:
            return self._decoder.decode(body)
        except (msgspec.MsgspecError, UnicodeDecodeError) as e:  # msgspec: bad UTF-8 in a str
            raise ProtocolError(f"malformed message: {e}") from None


class FrameReader:
    """Splits a byte stream into frames. Raises ``ProtocolError`` on an oversized frame,
    after which the connection must be closed: its stream can no longer be trusted.

    The stream's first frame may be at most ``first_frame`` bytes (default
    ``FIRST_FRAME_LIMIT``), later ones ``max_frame``: the reader holds at most
    ``first_frame`` bytes of a peer that has not yet been able to prove it has the key.
    """

    __slots__ = ("_buf", "_first", "_max", "frames")

    def __init__(self, max_frame: int, *, first_frame: int = FIRST_FRAME_LIMIT) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._first = min(first_frame, max_frame)
        self.frames = 0  # complete frames returned so far

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf)

    @property
    def limit(self) -> int:
        """The largest frame the reader takes next."""
        return self._max if self.frames else self._first

    def feed(self, data: bytes | memoryview) -> list[memoryview]:
        buf = self._buf
        buf += data
        bounds: list[tuple[int, int]] = []
        pos, end = 0, len(buf)
        while end - pos >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buf, pos)
            limit = self._max if self.frames or bounds else self._first
            if length > limit or length < _MAC_SIZE:
                first = "" if self.frames or bounds else "first "
                raise ProtocolError(f"{first}frame of {length} bytes refused (limit {limit})")
            if end - pos - _HEADER.size < length:
                break
            bounds.append((pos + _HEADER.size, pos + _HEADER.size + length))
            pos += _HEADER.size + length
        if not pos:
            return []
        self.frames += len(bounds)
        # Copy the complete frames once; a partial one stays in the buffer.
        view = memoryview(bytes(buf[:pos]))
        del buf[:pos]
        return [view[a:b] for a, b in bounds]
