"""The lattice laws, property-tested for every lattice type.

For all ``a``, ``b``, ``c`` of one type: merge is commutative, associative and idempotent;
``leq`` is a partial order; ``a.leq(b)`` exactly when ``a.merge(b) == b``, so a merge never
loses what either side had. The strategies draw from small domains (three nodes, a few
timestamps, tags and values) so that ties, shared writers, overlapping tags and
concurrent clocks are common rather than rare.

The strategies live in ``tests/lattice_strategies.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice_strategies import KINDS, STRATEGIES, causals, clocks
from stratus.lattice import (
    CausalValue,
    Lattice,
    VectorClock,
)

LAWS = settings(max_examples=200, deadline=None)
# Merging lists of states costs more per example and covers what LAWS already checks.
ORDERS = settings(max_examples=60, deadline=None)


def check_commutative(a: Lattice, b: Lattice) -> None:
    assert a.merge(b) == b.merge(a), "merge is not commutative"


def check_associative(a: Lattice, b: Lattice, c: Lattice) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c)), "merge is not associative"


def check_idempotent(a: Lattice, b: Lattice) -> None:
    assert a.merge(a) == a, "merge is not idempotent"
    merged = a.merge(b)
    assert merged.merge(b) == merged, "re-merging a merged state changed it"


def check_upper_bound(a: Lattice, b: Lattice) -> None:
    merged = a.merge(b)
    assert a.leq(merged) and b.leq(merged), "merge lost information"
    assert a.leq(a), "leq is not reflexive"
    assert a.leq(b) == (merged == b), "leq disagrees with merge"
    assert b.leq(a) == (merged == a), "leq disagrees with merge"
    if a.leq(b) and b.leq(a):
        assert a == b, "leq is not antisymmetric"


def check_least(a: Lattice, b: Lattice, c: Lattice) -> None:
    # Any common upper bound of a and b is above their merge; a + c + b is one.
    assert a.merge(b).leq(a.merge(c).merge(b)), "merge is not the least upper bound"
    if a.leq(c) and b.leq(c):
        assert a.merge(b).leq(c), "merge is not the least upper bound"


@pytest.mark.parametrize("kind", KINDS)
@LAWS
@given(data=st.data())
def test_lattice_laws(kind: str, data: st.DataObject) -> None:
    """Commutative, associative, idempotent, an upper bound consistent with leq, least."""
    a, b, c = (data.draw(STRATEGIES[kind], label=name) for name in "abc")
    check_commutative(a, b)
    check_associative(a, b, c)
    check_idempotent(a, b)
    check_upper_bound(a, b)
    check_least(a, b, c)


@pytest.mark.parametrize("kind", KINDS)
@ORDERS
@given(data=st.data())
def test_merge_order_does_not_matter_over_many_states(kind: str, data: st.DataObject) -> None:
    """Replicas that receive the same states in any order, merging either way, agree."""
    states = data.draw(st.lists(STRATEGIES[kind], min_size=1, max_size=4), label="states")
    shuffled = data.draw(st.permutations(states), label="shuffled")
    forward = states[0]
    for state in states[1:]:
        forward = forward.merge(state)
    backward = shuffled[-1]
    for state in reversed(shuffled[:-1]):
        backward = state.merge(backward)
    assert forward == backward


@LAWS
@given(a=clocks, b=clocks)
def test_vector_clock_compare_agrees_with_leq(a: VectorClock, b: VectorClock) -> None:
    expected = {
        (True, True): "equal",
        (True, False): "before",
        (False, True): "after",
        (False, False): "concurrent",
    }[(a.leq(b), b.leq(a))]
    assert a.compare(b) == expected


@LAWS
@given(a=causals)
def test_causal_versions_are_canonical(a: CausalValue) -> None:
    # No version supersedes another, and rebuilding from any order gives the same value.
    for x in a.versions:
        assert not any(x.clock.compare(y.clock) == "before" for y in a.versions)
    assert CausalValue(tuple(reversed(a.versions))) == a
