"""The hot-path HMAC (stratus._mac) is RFC 2104's HMAC-SHA256, for every key and message."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from stratus._mac import SIZE, Mac


@given(key=st.binary(min_size=1, max_size=200), data=st.binary(max_size=500))
def test_tag_is_hmac_sha256(key: bytes, data: bytes) -> None:
    tag = Mac(key).tag(data)
    assert tag == hmac.digest(key, data, "sha256")
    assert len(tag) == SIZE


@given(data=st.binary(max_size=100), flip=st.integers(min_value=0, max_value=SIZE * 8 - 1))
def test_verify_refuses_any_changed_bit(data: bytes, flip: int) -> None:
    mac = Mac(b"k" * 32)
    tag = bytearray(mac.tag(data))
    assert mac.verify(data, bytes(tag))
    tag[flip // 8] ^= 1 << (flip % 8)
    assert not mac.verify(data, bytes(tag))


def test_one_mac_serves_many_messages() -> None:
    mac = Mac(b"k" * 32)  # its states are copied per tag, never changed
    first = mac.tag(b"a")
    assert mac.tag(b"b") != first
    assert mac.tag(b"a") == first
    assert "kkkk" not in repr(mac)
