"""Function versions and DAG validation in the coordinator's registry."""

from __future__ import annotations

import pytest

from stratus._exceptions import ConfigurationError, FunctionNotFound
from stratus.protocol.messages import DagNode, FunctionInfo, FunctionOptions
from stratus.server.registry import Registry, validate_dag

OPTIONS = FunctionOptions()


def registry_with(*names: str) -> Registry:
    registry = Registry()
    for name in names:
        registry.register(name, f"code of {name}".encode(), OPTIONS)
    return registry


def node(function: str, *upstream: int) -> DagNode:
    return DagNode(function, list(upstream))


# --- functions and versions


def test_first_registration_is_version_1() -> None:
    assert Registry().register("f", b"v1", OPTIONS).version == 1


def test_reregistering_increases_the_version() -> None:
    registry = Registry()
    versions = [registry.register("f", b"code", OPTIONS).version for _ in range(3)]
    assert versions == [1, 2, 3]


def test_versions_are_counted_per_name() -> None:
    registry = registry_with("f", "f")
    assert registry.register("g", b"g", OPTIONS).version == 1


def test_latest_is_the_newest_version() -> None:
    registry = Registry()
    registry.register("f", b"old", OPTIONS)
    registry.register("f", b"new", OPTIONS)
    assert registry.latest("f").code == b"new"


def test_old_versions_stay_fetchable() -> None:
    registry = Registry()
    registry.register("f", b"old", OPTIONS)
    registry.register("f", b"new", OPTIONS)
    assert registry.get("f", 1).code == b"old"
    assert registry.get("f", 2).code == b"new"


def test_info_describes_the_version() -> None:
    entry = registry_with("f", "f").latest("f")
    assert entry.info() == FunctionInfo("f", 2, OPTIONS)


def test_latest_of_an_unknown_name_raises_function_not_found() -> None:
    with pytest.raises(FunctionNotFound):
        Registry().latest("nope")


@pytest.mark.parametrize(("name", "version"), [("f", 0), ("f", 3), ("f", -1), ("g", 1)])
def test_get_of_a_missing_version_raises_function_not_found(name: str, version: int) -> None:
    with pytest.raises(FunctionNotFound):
        registry_with("f", "f").get(name, version)


# --- DAG registration


def test_register_dag_stores_its_nodes() -> None:
    registry = registry_with("a", "b")
    nodes = [node("a"), node("b", 0)]
    registry.register_dag("pipeline", nodes)
    assert registry.dags["pipeline"] == nodes


def test_dag_of_an_unregistered_function_raises_function_not_found() -> None:
    registry = registry_with("a")
    with pytest.raises(FunctionNotFound):
        registry.register_dag("pipeline", [node("a"), node("missing", 0)])
    assert "pipeline" not in registry.dags


def test_dag_named_like_a_function_is_refused() -> None:
    registry = registry_with("a", "b")
    with pytest.raises(ConfigurationError, match="name of a function"):
        registry.register_dag("a", [node("a"), node("b", 0)])


def test_function_named_like_a_dag_is_refused() -> None:
    registry = registry_with("a", "b")
    registry.register_dag("pipeline", [node("a"), node("b", 0)])
    with pytest.raises(ConfigurationError, match="name of a DAG"):
        registry.register("pipeline", b"code", OPTIONS)


def test_invalid_dag_is_not_stored() -> None:
    registry = registry_with("a", "b")
    with pytest.raises(ConfigurationError):
        registry.register_dag("pipeline", [node("a"), node("b")])
    assert registry.dags == {}


# --- DAG shapes


@pytest.mark.parametrize(
    ("nodes", "sink"),
    [
        ([node("a")], 0),
        ([node("a"), node("b", 0), node("c", 1)], 2),
        ([node("a"), node("b", 0), node("c", 0), node("d", 1, 2)], 3),
        ([node("a"), node("b"), node("c", 0, 1)], 2),
    ],
    ids=["single", "chain", "diamond", "fan-in"],
)
def test_validate_dag_returns_the_single_sink(nodes: list[DagNode], sink: int) -> None:
    assert validate_dag(nodes) == sink


def test_empty_dag_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least one"):
        validate_dag([])


def test_function_twice_in_a_dag_is_accepted() -> None:
    assert validate_dag([node("a"), node("b", 0), node("a", 1)]) == 2


@pytest.mark.parametrize(
    "nodes",
    [
        [node("a", 1), node("b")],  # upstream listed later
        [node("a", 0)],  # its own upstream
        [node("a"), node("b", 2)],  # out of range
        [node("a"), node("b", -1)],  # negative
    ],
    ids=["forward", "self", "out-of-range", "negative"],
)
def test_dag_out_of_topological_order_is_refused(nodes: list[DagNode]) -> None:
    with pytest.raises(ConfigurationError, match="topological"):
        validate_dag(nodes)


@pytest.mark.parametrize(
    "nodes",
    [
        [node("a"), node("b")],
        [node("a"), node("b", 0), node("c", 0)],
    ],
    ids=["disconnected", "fan-out"],
)
def test_dag_with_several_sinks_is_refused(nodes: list[DagNode]) -> None:
    with pytest.raises(ConfigurationError, match="exactly one sink"):
        validate_dag(nodes)
