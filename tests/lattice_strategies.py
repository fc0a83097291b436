"""Hypothesis strategies for every lattice type, shared by the lattice tests.

They draw from small domains (three nodes, a few timestamps, tags and values) so that
ties, shared writers, overlapping tags and concurrent clocks are common rather than rare.
"""

from __future__ import annotations

from hypothesis import strategies as st

from stratus.lattice import (
    CausalValue,
    CausalVersion,
    Counter,
    GSet,
    Lattice,
    LatticeMap,
    LWWRegister,
    Max,
    Min,
    ORSet,
    Timestamp,
    VectorClock,
)

NODES = ("a", "b", "é")
nodes = st.sampled_from(NODES)
# Values whose == agrees with their pickle bytes (no 1 == True == 1.0), so that structural
# equality is the lattice's own notion of "same"; test_lattice covers the others.
values = st.one_of(
    st.none(),
    st.integers(-2, 2),
    st.text("xy", max_size=2),
    st.binary(max_size=2),
    st.tuples(st.integers(0, 1), st.text("xy", max_size=1)),
)
timestamps = st.builds(Timestamp, st.integers(0, 2), st.integers(0, 1), nodes)
registers = st.builds(LWWRegister, timestamps, values)
gsets = st.builds(GSet, st.frozensets(st.integers(0, 4) | st.sampled_from(["p", "q"])))


def _tag(element: int, serial: int) -> str:
    return f"{element}/{serial}"


# Each tag belongs to one element, as ORSet.add guarantees; states overlap in their tags.
_tagged = st.builds(lambda e, i: (e, _tag(e, i)), st.integers(0, 3), st.integers(0, 2))
orsets = st.builds(
    ORSet,
    st.frozensets(_tagged, max_size=6),
    st.frozensets(st.builds(_tag, st.integers(0, 3), st.integers(0, 2)), max_size=4),
)


def _per_node(high: int) -> st.SearchStrategy[dict[str, int]]:
    """A count for each of the three nodes (zeros are dropped by the lattices); cheaper to
    draw than ``st.dictionaries`` and just as varied over three nodes."""
    counts = st.tuples(*(st.integers(0, high) for _ in NODES))
    return counts.map(lambda c: dict(zip(NODES, c, strict=True)))


counters = st.builds(Counter, _per_node(4), _per_node(4))
maxes = st.builds(Max, st.integers(-3, 3))
mins = st.builds(Min, st.text("abc", max_size=3))
clocks = st.builds(VectorClock, _per_node(2))
_versions = st.builds(
    CausalVersion,
    clocks,
    values,
    st.fixed_dictionaries({}, optional={"k1": clocks, "k2": clocks}),
)
causals = st.builds(CausalValue, st.lists(_versions, max_size=3).map(tuple))


def maps(depth: int = 2) -> st.SearchStrategy[LatticeMap]:
    """Maps whose keys always hold the same lattice type (mixing raises, see test_lattice);
    keys of several types, and a nested map down to ``depth``."""
    optional: dict[object, st.SearchStrategy[Lattice]] = {
        "hits": counters,
        "tags": gsets,
        "name": registers,
        7: maxes,
        ("clock", 1): clocks,
    }
    if depth:
        optional["sub"] = maps(depth - 1)
    return st.fixed_dictionaries({}, optional=optional).map(LatticeMap)


STRATEGIES: dict[str, st.SearchStrategy[Lattice]] = {
    "LWWRegister": registers,
    "GSet": gsets,
    "ORSet": orsets,
    "Counter": counters,
    "Max": maxes,
    "Min": mins,
    "VectorClock": clocks,
    "LatticeMap": maps(),
    "CausalValue": causals,
}
KINDS = sorted(STRATEGIES)
lattices = st.one_of(*STRATEGIES.values())
