"""Unit tests of the store's pure helpers and of the memory backend's own behaviour
(the shared semantics are in tests/integration/store/test_store_conformance.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.store import Entry, MemoryStore, Put, StoreClosed, Transaction
from stratus.store.base import check_transaction, prefix_end

chars = st.characters(codec="utf-8")  # every code point but the surrogates


@given(st.text(chars, max_size=4), st.text(chars, max_size=6))
def test_prefix_end_bounds_exactly_the_strings_with_the_prefix(prefix: str, s: str) -> None:
    end = prefix_end(prefix)
    in_range = prefix <= s and (end is None or s < end)
    assert in_range == s.startswith(prefix)
    assert in_range == s.encode().startswith(prefix.encode())  # same order as UTF-8 bytes


def test_prefix_end_examples() -> None:
    assert prefix_end("ab") == "ac"
    assert prefix_end("") is None
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\ud7ff") == "\ue000"  # skips the surrogates


def test_check_transaction_copies_byte_like_values_once() -> None:
    txn = Transaction(reads={}, writes=[Put("a", b"x")])
    assert check_transaction(txn, 10) is txn
    mutable = bytearray(b"y")
    checked = check_transaction(Transaction(reads={}, writes=[Put("a", mutable)]), 10)  # type: ignore[arg-type]
    mutable[0] = 0
    assert checked.writes == [Put("a", b"y")]


def test_the_memory_store_copies_mutable_values() -> None:
    store = MemoryStore(lambda old, new: new)
    value = bytearray(b"abc")
    store.put("a", value)  # type: ignore[arg-type]
    value[0] = 0
    assert store.get("a") == Entry(b"abc", 1)


def test_closing_the_memory_store_drops_its_data() -> None:
    with MemoryStore(lambda old, new: new) as store:
        store.put("a", b"")
    with pytest.raises(StoreClosed):
        store.keys()


def test_values_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        MemoryStore(lambda old, new: new).put("a", "text")  # type: ignore[arg-type]
