"""Registered functions (every version of each) and DAGs. No I/O.

Re-registering a name adds a version; old versions stay fetchable, so calls already
sent with an old version finish on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stratus._exceptions import ConfigurationError, FunctionNotFound
from stratus.protocol.messages import DagNode, FunctionInfo, FunctionOptions


@dataclass(frozen=True)
class FunctionVersion:
    name: str
    version: int
    code: bytes
    options: FunctionOptions

    def info(self) -> FunctionInfo:
        return FunctionInfo(self.name, self.version, self.options)


@dataclass
class Registry:
    functions: dict[str, list[FunctionVersion]] = field(default_factory=dict)
    dags: dict[str, list[DagNode]] = field(default_factory=dict)

    def register(self, name: str, code: bytes, options: FunctionOptions) -> FunctionVersion:
        if name in self.dags:
            raise ConfigurationError(f"{name!r} is already the name of a DAG")
        versions = self.functions.setdefault(name, [])
        entry = FunctionVersion(name, len(versions) + 1, code, options)
        versions.append(entry)
        return entry

    def register_dag(self, name: str, nodes: list[DagNode]) -> None:
        if name in self.functions:
            raise ConfigurationError(f"{name!r} is already the name of a function")
        validate_dag(nodes)
        for node in nodes:
            self.latest(node.function)
        self.dags[name] = nodes

    def delete_dag(self, name: str) -> None:
        if self.dags.pop(name, None) is None:
            raise FunctionNotFound(name)

    def latest(self, name: str) -> FunctionVersion:
        versions = self.functions.get(name)
        if not versions:
            raise FunctionNotFound(name)
        return versions[-1]

    def get(self, name: str, version: int) -> FunctionVersion:
        versions = self.functions.get(name)
        if not versions or not 1 <= version <= len(versions):
            raise FunctionNotFound(f"{name} (version {version})")
        return versions[version - 1]


def validate_dag(nodes: list[DagNode]) -> int:
    """Check a DAG's shape; return the index of its single sink."""
    if not nodes:
        raise ConfigurationError("a DAG needs at least one function")
    for i, node in enumerate(nodes):
        if any(not 0 <= u < i for u in node.upstream):
            raise ConfigurationError("DAG nodes must be listed in topological order")
    has_downstream = {u for node in nodes for u in node.upstream}
    sinks = [i for i in range(len(nodes)) if i not in has_downstream]
    if len(sinks) != 1:
        raise ConfigurationError(f"a DAG needs exactly one sink, this one has {len(sinks)}")
    return sinks[0]
