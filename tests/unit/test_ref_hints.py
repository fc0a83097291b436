"""Data locality across clients, driven with a fake clock: the coordinator's directory of
which executors cache which Ref keys, and the placement's use of its hints."""

from __future__ import annotations

import math

import pytest

from stratus.client.placement import (
    REF_HOMES,
    HintsChanged,
    Placement,
    PoolsChanged,
    Send,
    Settled,
    Submit,
)
from stratus.objects import ObjectStore
from stratus.protocol.messages import MAX_CACHED_REPORTED
from stratus.server.locality import (
    PUSH_EVERY,
    Flush,
    Left,
    PushHints,
    RefDirectory,
    Reported,
    Snapshot,
)
from stratus.store import MemoryStore
from stratus.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ---------------------------------------------------------------- what an executor reports


def test_an_object_store_lists_its_cached_refs_most_recent_first() -> None:
    objects = ObjectStore(MemoryStore(lambda old, new: new), b"k" * 32, cache_bytes=2500)
    refs = [objects.put(bytes([i]) * 1000) for i in range(3)]
    assert objects.cached_refs(10) == []  # put does not cache: reading does
    for ref in refs:
        objects.get(ref)
    # 2500 bytes hold two payloads: the oldest went
    assert objects.cached_refs(10) == [refs[2].key, refs[1].key]
    objects.get(refs[1])
    assert objects.cached_refs(10) == [refs[1].key, refs[2].key]
    assert objects.cached_refs(1) == [refs[1].key]


# ---------------------------------------------------------------- the coordinator's directory


def test_a_report_is_pushed_at_once_when_nothing_was_pushed_lately(clock: FakeClock) -> None:
    d = RefDirectory()
    assert d.handle(Reported("e1", ("a", "b")), clock()) == [PushHints({"a": ["e1"], "b": ["e1"]})]
    assert d.homes("a") == {"e1"} and len(d) == 2
    assert d.wake_at == math.inf


def test_an_unchanged_report_pushes_nothing(clock: FakeClock) -> None:
    d = RefDirectory()
    d.handle(Reported("e1", ("a", "b")), clock())
    clock.advance(1.0)
    assert d.handle(Reported("e1", ("b", "a")), clock()) == []  # order is recency only
    assert d.wake_at == math.inf


def test_pushes_are_rate_limited_and_changes_coalesce_until_the_flush(clock: FakeClock) -> None:
    d = RefDirectory()
    d.handle(Reported("e1", ("a",)), clock())
    clock.advance(PUSH_EVERY / 4)
    assert d.handle(Reported("e2", ("a",)), clock()) == []
    assert d.handle(Reported("e1", ("b",)), clock()) == []  # e1 dropped a, took b
    assert d.wake_at == pytest.approx(PUSH_EVERY)
    assert d.handle(Flush(), clock()) == []  # too early still
    clock.advance(PUSH_EVERY)
    assert d.handle(Flush(), clock()) == [PushHints({"a": ["e2"], "b": ["e1"]})]
    assert d.wake_at == math.inf
    assert d.handle(Flush(), clock()) == []  # nothing new


def test_an_executor_that_leaves_is_forgotten_and_its_keys_go_empty(clock: FakeClock) -> None:
    d = RefDirectory()
    d.handle(Reported("e1", ("a", "b")), clock())
    d.handle(Reported("e2", ("a",)), clock())
    clock.advance(1.0)
    d.handle(Flush(), clock())
    clock.advance(1.0)
    assert d.handle(Left("e1"), clock()) == [PushHints({"a": ["e2"], "b": []})]
    assert d.homes("b") == frozenset() and len(d) == 1
    clock.advance(1.0)
    assert d.handle(Left("e1"), clock()) == []  # twice: nothing more
    assert d.handle(Left("never-seen"), clock()) == []


def test_a_report_is_cut_to_its_bound(clock: FakeClock) -> None:
    d = RefDirectory()
    keys = tuple(f"k{i}" for i in range(MAX_CACHED_REPORTED * 3))
    d.handle(Reported("e1", keys), clock())
    assert len(d) == MAX_CACHED_REPORTED
    assert d.homes("k0") == {"e1"} and d.homes(keys[-1]) == frozenset()  # the most recent kept


def test_a_snapshot_lists_every_key_and_leaves_the_pending_changes(clock: FakeClock) -> None:
    d = RefDirectory()
    d.handle(Reported("e1", ("a",)), clock())
    d.handle(Reported("e2", ("a", "b")), clock())  # pending: pushed too recently
    assert d.handle(Snapshot(), clock()) == [PushHints({"a": ["e1", "e2"], "b": ["e2"]}, True)]
    clock.advance(PUSH_EVERY)
    assert d.handle(Flush(), clock()) == [PushHints({"a": ["e1", "e2"], "b": ["e2"]})]


# ---------------------------------------------------------------- the placement's hints


def placement(clock: FakeClock) -> Placement:
    p = Placement()
    p.handle(PoolsChanged(frozenset({"e1", "e2"}), {"f": ["e1", "e2"]}), clock())
    return p


def test_a_hinted_executor_takes_calls_with_its_ref(clock: FakeClock) -> None:
    p = placement(clock)
    assert p.handle(Submit(1, "f"), clock()) == [Send(1, 1, "e1")]  # e1 comes first
    p.handle(Settled(1, 1), clock())
    p.handle(HintsChanged({"k": ["e2"]}), clock())
    for rid in range(2, 6):  # the client never sent k to e2 itself
        assert p.handle(Submit(rid, "f", refs=("k",)), clock()) == [Send(rid, 1, "e2")]
        p.handle(Settled(rid, 1), clock())
    assert p.handle(Submit(9, "f"), clock()) == [Send(9, 1, "e1")]  # no Ref: no preference


def test_a_hint_is_a_preference_not_a_pin(clock: FakeClock) -> None:
    p = placement(clock)
    p.handle(HintsChanged({"k": ["e2"]}), clock())
    assert p.handle(Submit(1, "f", refs=("k",)), clock()) == [Send(1, 1, "e2")]
    # e2 is busy (nothing measured: one call per executor): the call goes to e1
    assert p.handle(Submit(2, "f", refs=("k",)), clock()) == [Send(2, 1, "e1")]


def test_a_hinted_executor_outside_the_pool_is_not_used(clock: FakeClock) -> None:
    p = placement(clock)
    p.handle(HintsChanged({"k": ["e9"]}), clock())
    assert p.handle(Submit(1, "f", refs=("k",)), clock()) == [Send(1, 1, "e1")]


def test_hints_change_by_key_and_a_complete_one_replaces_all(clock: FakeClock) -> None:
    p = placement(clock)
    p.handle(HintsChanged({"a": ["e2"], "b": ["e2"]}, complete=True), clock())
    p.handle(HintsChanged({"a": []}), clock())  # e2 dropped a
    assert p.ref_hints == {"b": frozenset({"e2"})}
    p.handle(HintsChanged({"c": ["e1", "e2"]}, complete=True), clock())
    assert p.ref_hints == {"c": frozenset({"e1", "e2"})}


def test_hints_are_bounded(clock: FakeClock) -> None:
    p = placement(clock)
    p.handle(HintsChanged({f"k{i}": ["e1"] for i in range(REF_HOMES + 5)}), clock())
    assert len(p.ref_hints) == REF_HOMES
    assert "k0" not in p.ref_hints and f"k{REF_HOMES + 4}" in p.ref_hints


def test_own_sends_and_hints_both_count(clock: FakeClock) -> None:
    p = placement(clock)
    p.handle(HintsChanged({"k": ["e2"]}), clock())
    p.handle(Submit(1, "f", refs=("k",)), clock())  # to e2, hinted
    p.handle(Submit(2, "f"), clock())  # e1 busy too
    p.handle(Settled(1, 1), clock())
    p.handle(Settled(2, 1), clock())
    assert p.ref_homes == {"k": "e2"}
    p.handle(HintsChanged({"k": []}), clock())  # e2 evicted it: its own memory still counts
    assert p.handle(Submit(3, "f", refs=("k",)), clock()) == [Send(3, 1, "e2")]
