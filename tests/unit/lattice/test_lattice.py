"""Behaviour of the lattice values: the semantics each one promises beyond the laws."""

from __future__ import annotations

import ast
import doctest
import inspect
import math
import pickle
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stratus.lattice
from lattice_strategies import lattices
from stratus._exceptions import SerializationError, StratusError
from stratus.lattice import (
    CausalValue,
    CausalVersion,
    Counter,
    GSet,
    HybridClock,
    Lattice,
    LatticeError,
    LatticeMap,
    LatticeTypeError,
    LatticeValueError,
    LWWRegister,
    Max,
    Min,
    ORSet,
    Timestamp,
    VectorClock,
    encode,
)

PACKAGE = Path(stratus.lattice.__file__).parent

# --- the package


def test_public_names_are_sorted_and_exist() -> None:
    assert stratus.lattice.__all__ == sorted(stratus.lattice.__all__)
    assert [n for n in stratus.lattice.__all__ if not hasattr(stratus.lattice, n)] == []


def test_lattice_imports_only_the_standard_library_msgspec_and_leaf_modules() -> None:
    allowed = {"msgspec", "stratus._exceptions", "stratus._mac", "stratus.lattice", "__future__"}
    bad = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or any(
                    name == a or name.startswith(a + ".") for a in allowed
                ):
                    continue
                bad.append(f"{path.name} imports {name}")
    assert bad == []


@pytest.mark.parametrize(
    "module", sorted(m.name for m in pkgutil.iter_modules(stratus.lattice.__path__))
)
def test_docstring_examples_hold(module: str) -> None:
    result = doctest.testmod(
        __import__(f"stratus.lattice.{module}", fromlist=["_"]), raise_on_error=False
    )
    assert result.failed == 0


def test_every_public_name_has_a_docstring() -> None:
    for name in stratus.lattice.__all__:
        obj = getattr(stratus.lattice, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name
            methods = [m for n, m in vars(obj).items() if inspect.isfunction(m) and n[0] != "_"]
            assert all(m.__doc__ for m in methods), name


def test_errors_are_typed_and_catchable_as_builtins() -> None:
    assert issubclass(LatticeTypeError, LatticeError)
    assert issubclass(LatticeTypeError, TypeError)
    assert issubclass(LatticeValueError, ValueError)
    assert issubclass(LatticeError, StratusError)
    with pytest.raises(LatticeTypeError, match="GSet with Counter"):
        GSet().merge(Counter())  # type: ignore[arg-type]
    with pytest.raises(LatticeTypeError):
        Max(1).leq(Min(1))  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(lattice=lattices)
def test_lattices_pickle_and_hash_structurally(lattice: Lattice) -> None:
    # They travel inside pickled invocation arguments and results.
    copy = pickle.loads(pickle.dumps(lattice, protocol=5))
    assert copy == lattice
    assert hash(copy) == hash(lattice)


def test_lattices_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Max(1).value = 2  # type: ignore[misc]


# --- hybrid logical clock


def test_clock_follows_the_wall_clock_and_counts_within_a_millisecond() -> None:
    clock = HybridClock("a")
    assert clock.last is None
    assert clock.tick(1000) == Timestamp(1000, 0, "a")
    assert clock.tick(1000) == Timestamp(1000, 1, "a")
    assert clock.tick(1005) == Timestamp(1005, 0, "a")
    assert clock.last == Timestamp(1005, 0, "a")


def test_clock_stays_monotonic_when_the_wall_clock_goes_backwards() -> None:
    clock = HybridClock("a")
    first = clock.tick(5000)
    later = [clock.tick(now) for now in (4000, 3000, 4999, 5000)]
    assert [t.logical for t in later] == [1, 2, 3, 4]
    assert all(t.wall_ms == 5000 for t in later)
    assert first < later[0] < later[1] < later[2] < later[3]
    assert clock.tick(5001) == Timestamp(5001, 0, "a")


def test_observing_a_remote_timestamp_ahead_of_us_moves_past_it() -> None:
    clock = HybridClock("a")
    clock.tick(1000)
    remote = Timestamp(3000, 7, "b")
    assert clock.observe(remote, 1001) == Timestamp(3000, 8, "a")
    assert clock.tick(1002) == Timestamp(3000, 9, "a")


def test_observing_with_equal_walls_takes_the_larger_counter() -> None:
    clock = HybridClock("a")
    clock.tick(1000)
    clock.tick(1000)  # logical 1
    assert clock.observe(Timestamp(1000, 5, "b"), 900) == Timestamp(1000, 6, "a")
    assert clock.observe(Timestamp(1000, 2, "b"), 900) == Timestamp(1000, 7, "a")


def test_observing_an_old_timestamp_is_a_local_event() -> None:
    clock = HybridClock("a")
    clock.tick(2000)
    assert clock.observe(Timestamp(1000, 9, "b"), 1500) == Timestamp(2000, 1, "a")
    assert clock.observe(Timestamp(1000, 9, "b"), 2500) == Timestamp(2500, 0, "a")


def test_a_restarted_clock_continues_after_its_last_timestamp() -> None:
    clock = HybridClock("a", last=Timestamp(9000, 3, "a"))
    assert clock.tick(100) == Timestamp(9000, 4, "a")


def test_timestamps_order_by_wall_then_counter_then_node() -> None:
    ordered = [
        Timestamp(1, 0, "b"),
        Timestamp(1, 1, "a"),
        Timestamp(2, 0, "a"),
        Timestamp(2, 0, "b"),
    ]
    assert sorted(reversed(ordered)) == ordered


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((-1, 0, "a"), LatticeValueError),
        ((0, -1, "a"), LatticeValueError),
        ((1.5, 0, "a"), LatticeTypeError),
        ((0, True, "a"), LatticeTypeError),
        ((0, 0, 7), LatticeTypeError),
    ],
)
def test_invalid_timestamps_are_refused(args: tuple[object, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        Timestamp(*args)  # type: ignore[arg-type]


def test_the_clock_refuses_bad_times() -> None:
    clock = HybridClock("a")
    with pytest.raises(LatticeValueError):
        clock.tick(-5)
    with pytest.raises(LatticeTypeError):
        clock.tick(1.5)  # type: ignore[arg-type]
    with pytest.raises(LatticeTypeError):
        clock.observe((1, 2, "b"), 10)  # type: ignore[arg-type]
    with pytest.raises(LatticeTypeError):
        HybridClock(3)  # type: ignore[arg-type]


# (physical time, remote timestamp to observe or None for a local tick)
events = st.lists(
    st.tuples(
        st.integers(0, 50),
        st.none() | st.builds(Timestamp, st.integers(0, 60), st.integers(0, 5), st.just("b")),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(events=events)
def test_clock_timestamps_increase_and_stay_close_to_physical_time(
    events: list[tuple[int, Timestamp | None]],
) -> None:
    clock = HybridClock("a")
    issued: list[Timestamp] = []
    highest_wall = -1  # the largest physical or remote wall time seen so far
    for now, remote in events:
        highest_wall = max(highest_wall, now)
        if remote is None:
            stamp = clock.tick(now)
        else:
            highest_wall = max(highest_wall, remote.wall_ms)
            stamp = clock.observe(remote, now)
            assert (stamp.wall_ms, stamp.logical) > (remote.wall_ms, remote.logical)
        assert stamp.node == "a"
        assert stamp.wall_ms >= now
        assert stamp.wall_ms <= highest_wall  # never runs ahead of any clock it saw
        if issued:
            assert stamp > issued[-1]
        issued.append(stamp)


# --- last-writer-wins register


def test_the_later_write_wins_whatever_the_merge_order() -> None:
    clock_a, clock_b = HybridClock("a"), HybridClock("b")
    first = LWWRegister.write("first", clock_a, 1000)
    second = LWWRegister.write("second", clock_b, clock_b.observe(first.timestamp, 900).wall_ms)
    assert first.merge(second).value == "second"
    assert second.merge(first).value == "second"


def test_equal_timestamps_break_ties_by_value_bytes_in_both_orders() -> None:
    stamp = Timestamp(1, 0, "a")
    x, y = LWWRegister(stamp, "apple"), LWWRegister(stamp, "banana")
    winner = max(x, y, key=lambda r: pickle.dumps(r.value, protocol=5))
    assert x.merge(y) is winner
    assert y.merge(x) is winner
    assert x.leq(winner) and y.leq(winner)


def test_ties_between_equal_but_different_values_are_deterministic() -> None:
    # 1 == True == 1.0, so structural equality cannot tell these apart; the merge still
    # picks the same object whatever the order.
    stamp = Timestamp(1, 0, "a")
    registers = [LWWRegister(stamp, v) for v in (1, True, 1.0)]
    for a in registers:
        for b in registers:
            assert type(a.merge(b).value) is type(b.merge(a).value)


def test_a_tie_with_unpicklable_values_is_a_serialization_error() -> None:
    stamp = Timestamp(1, 0, "a")
    with pytest.raises(SerializationError):
        LWWRegister(stamp, lambda: 1).merge(LWWRegister(stamp, lambda: 2))


def test_register_needs_a_timestamp() -> None:
    with pytest.raises(LatticeTypeError):
        LWWRegister((1, 0, "a"), "x")  # type: ignore[arg-type]


# --- sets


def test_gset_grows_by_union() -> None:
    s = GSet[int]().add(1).add(2)
    assert s.value == {1, 2}
    assert 1 in s and 3 not in s
    assert s.merge(GSet(frozenset({3}))).value == {1, 2, 3}
    assert GSet([1, 1, 2]) == GSet(frozenset({1, 2}))  # type: ignore[arg-type]


def test_gset_refuses_unhashable_elements() -> None:
    with pytest.raises(LatticeTypeError):
        GSet([[1]])  # type: ignore[arg-type]
    with pytest.raises(LatticeTypeError):
        GSet[object]().add([1])


def test_orset_removes_what_it_observed() -> None:
    s = ORSet[str]().add("x", "t1").add("y", "t2").add("x", "t3")
    removed = s.remove("x")
    assert removed.value == {"y"}
    assert "x" not in removed and "y" in removed
    assert removed.removed == {"t1", "t3"}
    assert removed.merge(s).value == {"y"}  # merging the older state does not resurrect it


def test_orset_add_wins_over_a_concurrent_remove() -> None:
    base = ORSet[str]().add("x", "t1")
    removed_here = base.remove("x")
    added_there = base.add("x", "t2")  # concurrently, on another replica
    assert removed_here.merge(added_there).value == {"x"}
    assert added_there.merge(removed_here).value == {"x"}
    # A remove that has seen both adds removes both.
    assert removed_here.merge(added_there).remove("x").value == frozenset()


def test_orset_remove_of_an_unseen_element_changes_nothing() -> None:
    s = ORSet[str]().add("x", "t1")
    assert s.remove("nope") is s
    other = ORSet[str]().add("late", "t9")
    assert s.remove("late").merge(other).value == {"x", "late"}


def test_orset_adds_and_removes_are_idempotent() -> None:
    s = ORSet[str]().add("x", "t1")
    assert s.add("x", "t1") is s  # a retried add with the same tag
    gone = s.remove("x")
    assert gone.remove("x") is gone
    assert gone.add("x", "t1").value == frozenset()  # a removed tag stays removed
    assert gone.add("x", "t2").value == {"x"}  # a fresh tag adds it back


def test_orset_refuses_a_tag_reused_for_another_element() -> None:
    s = ORSet[str]().add("x", "t1")
    with pytest.raises(LatticeValueError, match="t1"):
        s.add("y", "t1")
    with pytest.raises(LatticeTypeError):
        s.add("y", 5)  # type: ignore[arg-type]
    with pytest.raises(LatticeTypeError):
        ORSet(frozenset({("x", 1)}))  # type: ignore[arg-type]


# --- counter


def test_counter_sums_increments_from_two_writers() -> None:
    a = Counter().increment("e1").increment("e1", 4)
    b = Counter().increment("e2", 10).increment("e2", -3)
    total = a.merge(b)
    assert total.value == 12
    assert total.totals("e2") == (10, 3)
    assert total.merge(a).merge(b).value == 12  # re-merging counts nothing twice


def test_counter_deltas_merge_like_full_states() -> None:
    store = Counter().increment("e2", 7)
    mine = Counter.delta("e1", 5)
    store = store.merge(mine)
    mine = Counter.delta("e1", -2, base=mine)
    assert mine == Counter({"e1": 5}, {"e1": 2})
    store = store.merge(mine).merge(mine)  # delivered twice: harmless
    assert store.value == 7 + 5 - 2
    assert store == Counter().increment("e2", 7).increment("e1", 5).increment("e1", -2)


def test_two_writers_sharing_an_id_lose_an_increment() -> None:
    # Why each writer id must belong to one writer: the documented limitation.
    base = Counter().increment("shared", 1)
    assert base.increment("shared").merge(base.increment("shared")).value == 2


def test_counter_normalises_and_validates_totals() -> None:
    assert Counter({"a": 0}, {}) == Counter()
    assert Counter().increment("a", 0) == Counter()
    with pytest.raises(LatticeValueError):
        Counter({"a": -1})
    with pytest.raises(LatticeTypeError):
        Counter({"a": 1.5})  # type: ignore[dict-item]
    with pytest.raises(LatticeTypeError):
        Counter().increment("a", 1.5)  # type: ignore[arg-type]
    with pytest.raises(LatticeTypeError):
        Counter({1: 1})  # type: ignore[dict-item]
    with pytest.raises(LatticeTypeError):
        Counter().increment(1)  # type: ignore[arg-type]


def test_counter_copies_the_mappings_it_is_given() -> None:
    totals = {"a": 1}
    counter = Counter(totals)
    totals["a"] = 99
    assert counter.value == 1
    assert hash(counter) == hash(Counter({"a": 1}))


# --- max and min


def test_max_and_min_keep_the_extreme() -> None:
    assert Max(3).merge(Max(9)).value == 9
    assert Min(3).merge(Min(9)).value == 3
    assert Max("pear").merge(Max("apple")).value == "pear"
    assert Max(Timestamp(1, 0, "a")).merge(Max(Timestamp(1, 0, "b"))).value.node == "b"


def test_max_and_min_break_ties_between_equal_values_deterministically() -> None:
    # 0 == 0.0 == False == -0.0, yet the merge picks the same one in either order.
    bounds: list[Any] = [0, 0.0, False, -0.0]
    kinds: list[Callable[[Any], Lattice]] = [Max, Min]
    for kind in kinds:
        for a in bounds:
            for b in bounds:
                x, y = kind(a), kind(b)
                assert encode(x.merge(y)) == encode(y.merge(x))
                assert x.leq(y) != y.leq(x) or encode(x) == encode(y)


def test_max_refuses_nan_and_incomparable_values() -> None:
    with pytest.raises(LatticeValueError):
        Max(math.nan)
    with pytest.raises(LatticeValueError):
        Min(float("nan"))
    with pytest.raises(LatticeTypeError):
        Max(1).merge(Max("a"))  # type: ignore[arg-type]


# --- vector clock


def test_vector_clock_comparisons() -> None:
    a = VectorClock({"x": 1})
    assert a.compare(a) == "equal"
    assert a.compare(a.increment("x")) == "before"
    assert a.increment("y").compare(a) == "after"
    assert a.increment("y").compare(a.increment("x")) == "concurrent"
    assert a.increment("y")["y"] == 1 and a["nobody"] == 0


def test_vector_clock_drops_zeros_and_refuses_negative_counts() -> None:
    assert VectorClock({"x": 0}) == VectorClock()
    assert VectorClock({"x": 0}).value == {}
    assert hash(VectorClock({"x": 1, "y": 2})) == hash(VectorClock({"y": 2, "x": 1}))
    with pytest.raises(LatticeValueError):
        VectorClock({"x": -1})
    with pytest.raises(LatticeTypeError):
        VectorClock([("x", 1)])  # type: ignore[arg-type]


# --- maps


def test_map_merges_key_by_key() -> None:
    a = LatticeMap({"n": Counter().increment("e1"), "only_a": Max(1)})
    b = LatticeMap({"n": Counter().increment("e2", 2), "only_b": GSet(frozenset({"x"}))})
    merged = a.merge(b)
    assert merged.value == {"n": 3, "only_a": 1, "only_b": {"x"}}
    assert set(merged) == {"n", "only_a", "only_b"}
    assert "n" in merged and merged.get("missing") is None
    assert isinstance(merged["n"], Counter)


def test_nested_maps_merge_recursively() -> None:
    a = LatticeMap({"user": LatticeMap({"visits": Counter().increment("e1")})})
    b = LatticeMap({"user": LatticeMap({"visits": Counter().increment("e2"), "best": Max(5)})})
    assert a.merge(b).value == {"user": {"visits": 2, "best": 5}}
    assert a.merge_at("user", LatticeMap({"best": Max(9)})).value == {
        "user": {"visits": 1, "best": 9}
    }


def test_map_refuses_two_lattice_types_under_one_key() -> None:
    a = LatticeMap({"k": Counter()})
    b = LatticeMap({"k": GSet()})
    with pytest.raises(LatticeTypeError, match=r"'k'.*Counter.*GSet"):
        a.merge(b)
    with pytest.raises(LatticeTypeError, match="'k'"):
        b.merge(a)
    with pytest.raises(LatticeTypeError):
        a.leq(b)
    with pytest.raises(LatticeTypeError, match="must be a lattice"):
        LatticeMap({"k": 3})  # type: ignore[dict-item]


# --- causal values


def test_concurrent_writes_are_kept_as_siblings() -> None:
    base = CausalValue().write("a", "v0")
    left = base.write("a", "left", {"other": VectorClock({"a": 4})})
    right = base.write("b", "right", {"other": VectorClock({"b": 2})})
    both = left.merge(right)
    assert both == right.merge(left)
    assert sorted(both.value) == ["left", "right"]
    assert both.siblings == both.value
    assert both.clock == VectorClock({"a": 2, "b": 1})
    assert both.dependencies == {"other": VectorClock({"a": 4, "b": 2})}


def test_a_write_that_saw_the_siblings_replaces_them() -> None:
    base = CausalValue().write("a", "v0")
    both = base.write("a", "left").merge(base.write("b", "right"))
    resolved = both.write("c", "resolved", {"k": VectorClock({"c": 1})})
    assert both.merge(resolved).value == ("resolved",)
    assert resolved.merge(both) == resolved
    assert both.merge(resolved).dependencies == {"k": VectorClock({"c": 1})}
    # A write that saw only one sibling replaces that one and keeps the other.
    partial = base.write("a", "left").write("a", "newer")
    assert sorted(both.merge(partial).value) == ["newer", "right"]


def test_writes_with_equal_clocks_and_different_values_are_both_kept() -> None:
    clock = VectorClock({"a": 1})
    merged = CausalValue.of(clock, "x").merge(CausalValue.of(clock, "y"))
    assert sorted(merged.value) == ["x", "y"]
    assert CausalValue.of(clock, "x").merge(CausalValue.of(clock, "x")).value == ("x",)


def test_causal_merge_is_associative_where_annas_single_clock_is_not() -> None:
    a = CausalValue.of(VectorClock({"x": 1}), "A")
    b = CausalValue.of(VectorClock({"y": 1}), "B")
    c = CausalValue.of(VectorClock({"x": 2}), "C")  # supersedes a, concurrent with b
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert sorted(a.merge(b).merge(c).value) == ["B", "C"]


def test_sibling_order_is_deterministic() -> None:
    versions = [CausalValue.of(VectorClock({n: 1}), n.upper()) for n in "dcab"]
    forward = versions[0].merge(versions[1]).merge(versions[2]).merge(versions[3])
    backward = versions[3].merge(versions[2]).merge(versions[1]).merge(versions[0])
    assert forward.value == backward.value == ("A", "B", "C", "D")


def test_empty_causal_value_is_the_bottom() -> None:
    empty = CausalValue()
    one = empty.write("a", 1)
    assert empty.value == () and empty.clock == VectorClock()
    assert empty.merge(one) == one and empty.leq(one)
    assert one.clock == VectorClock({"a": 1})


def test_causal_versions_validate_their_parts() -> None:
    with pytest.raises(LatticeTypeError):
        CausalVersion({"a": 1}, "x")  # type: ignore[arg-type]
    with pytest.raises(LatticeTypeError):
        CausalVersion(VectorClock(), "x", {"k": {"a": 1}})  # type: ignore[dict-item]
    with pytest.raises(LatticeTypeError):
        CausalValue(("not a version",))  # type: ignore[arg-type]
