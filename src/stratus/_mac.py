"""HMAC-SHA256 for the hot paths: every frame on the wire and every sealed value.

``hmac.digest`` costs ~2.3 us on these VMs for a 200-byte message, because OpenSSL 3
looks the hash algorithm up and builds a context on every call. RFC 2104's HMAC is two
hashes over the key padded to one block; keeping the hash states after the padded keys
and copying them costs ~0.8 us. A synchronous call signs and checks four frames, so this
is ~6 us of its round trip. ``test_mac`` checks it against ``hmac.digest``.
"""

from __future__ import annotations

import hashlib
import hmac

SIZE = 32  # bytes of a tag
_BLOCK = 64  # SHA-256's block


class Mac:
    """HMAC-SHA256 under one key.

    >>> import hmac
    >>> Mac(b"k" * 32).tag(b"body") == hmac.digest(b"k" * 32, b"body", "sha256")
    True
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def __repr__(self) -> str:
        return "Mac(<key>)"  # never the key itself

    def tag(self, data: bytes | memoryview) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verify(self, data: bytes | memoryview, tag: bytes | memoryview) -> bool:
        """Whether ``tag`` is ``data``'s, compared in constant time."""
        return hmac.compare_digest(self.tag(data), tag)
