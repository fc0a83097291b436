"""The ``>>`` graph builder of ``Function`` handles."""

from __future__ import annotations

import pickle

import pytest

from stratus._exceptions import ClusterClosed, ConfigurationError
from stratus.client.handles import Function, Graph
from stratus.protocol.messages import DagNode, FunctionOptions


def fn(name: str) -> Function:
    return Function(client=None, name=name, version=1, options=FunctionOptions())


a, b, c, d, e = (fn(n) for n in "abcde")


def shape(graph: Graph) -> list[tuple[str, list[int]]]:
    return [(n.function, n.upstream) for n in graph.nodes()]


def test_single_function_is_a_one_node_graph() -> None:
    assert Graph.of(a).nodes() == [DagNode("a", [])]


def test_two_functions_make_a_graph() -> None:
    assert isinstance(a >> b, Graph)
    assert shape(a >> b) == [("a", []), ("b", [0])]


def test_chain() -> None:
    assert shape(a >> b >> c) == [("a", []), ("b", [0]), ("c", [1])]


def test_fan_out() -> None:
    assert shape(a >> [b, c]) == [("a", []), ("b", [0]), ("c", [0])]


def test_fan_out_then_fan_in() -> None:
    assert shape(a >> [b, c] >> d) == [("a", []), ("b", [0]), ("c", [0]), ("d", [1, 2])]


def test_fan_in_from_a_list() -> None:
    assert shape([a, b] >> c) == [("a", []), ("b", []), ("c", [0, 1])]


def test_fan_in_keeps_the_written_order() -> None:
    assert shape([b, a] >> c) == [("b", []), ("a", []), ("c", [0, 1])]


def test_fan_out_from_a_tuple() -> None:
    assert shape(a >> (b, c)) == [("a", []), ("b", [0]), ("c", [0])]


def test_nested_graph_on_the_right() -> None:
    assert shape(a >> (b >> c)) == [("a", []), ("b", [0]), ("c", [1])]


def test_branches_of_different_lengths() -> None:
    graph = a >> [b >> c, d] >> e
    assert shape(graph) == [("a", []), ("b", [0]), ("d", [0]), ("c", [1]), ("e", [3, 2])]


def test_graph_on_the_left_of_a_list() -> None:
    assert shape((a >> b) >> [c, d]) == [("a", []), ("b", [0]), ("c", [1]), ("d", [1])]


def test_upstream_indexes_always_point_backwards() -> None:
    nodes = ([a, b] >> c >> [d, e]).nodes()
    assert all(u < i for i, n in enumerate(nodes) for u in n.upstream)


def test_cycle_is_detected() -> None:
    with pytest.raises(ConfigurationError, match="cycle"):
        Graph.of([a >> b, b >> a]).nodes()


def test_longer_cycle_is_detected() -> None:
    with pytest.raises(ConfigurationError, match="cycle"):
        Graph.of([a >> b >> c, c >> a]).nodes()


def test_the_same_function_twice_in_a_chain_is_two_steps() -> None:
    assert shape(a >> a) == [("a", []), ("a", [0])]
    assert shape(a >> b >> a) == [("a", []), ("b", [0]), ("a", [1])]
    assert shape(a >> a >> a) == [("a", []), ("a", [0]), ("a", [1])]


def test_a_repeated_function_keeps_the_shape_of_its_branch() -> None:
    assert shape(a >> [a, b] >> c) == [("a", []), ("a", [0]), ("b", [0]), ("c", [1, 2])]
    assert shape((a >> b) >> (a >> b)) == [("a", []), ("b", [0]), ("a", [1]), ("b", [2])]


@pytest.mark.parametrize("item", [[], "a", 3, None], ids=repr)
def test_non_function_cannot_be_composed(item: object) -> None:
    with pytest.raises(ConfigurationError, match="cannot put"):
        a >> item  # type: ignore[operator]


def test_composing_leaves_the_original_graph_unchanged() -> None:
    graph = a >> b
    _ = graph >> c
    assert shape(graph) == [("a", []), ("b", [0])]


def test_fan_in_after_branches_sharing_their_last_node_connects_it_once() -> None:
    graph = [a >> c, b >> c] >> d
    assert shape(graph) == [("a", []), ("b", []), ("c", [0, 1]), ("d", [2])]


def test_pickled_function_keeps_its_identity_but_not_its_client() -> None:
    options = FunctionOptions(retries=5)
    handle = Function(object(), "f", 3, options)  # type: ignore[arg-type]
    copy = pickle.loads(pickle.dumps(handle))
    assert (copy.name, copy.version, copy.options) == ("f", 3, options)
    with pytest.raises(ClusterClosed):
        copy.remote(1)
