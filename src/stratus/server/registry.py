"""Registered functions (every version of each) and DAGs. No I/O.

Re-registering a name adds a version; old versions stay fetchable, so calls already
sent with an old version finish on it. A server keeps its registry in the store
(``saved_registry.py``): the coordinator checks a change here, stores it, then applies it.
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
        entry = self.next_version(name, code, options)
        self.add(entry)
        return entry

    def next_version(self, name: str, code: bytes, options: FunctionOptions) -> FunctionVersion:
        """The entry that registering ``code`` under ``name`` would add (checked, not
        added: the coordinator stores it first)."""
        if name in self.dags:
            raise ConfigurationError(f"{name!r} is already the name of a DAG")
        versions = self.functions.get(name)
        return FunctionVersion(name, versions[-1].version + 1 if versions else 1, code, options)

    def add(self, entry: FunctionVersion) -> None:
        """Add a checked (or reloaded) entry; versions stay in increasing order."""
        versions = self.functions.setdefault(entry.name, [])
        versions.append(entry)
        if len(versions) > 1 and versions[-2].version > entry.version:
            versions.sort(key=lambda v: v.version)

    def register_dag(self, name: str, nodes: list[DagNode]) -> None:
        self.check_dag(name, nodes)
        self.dags[name] = nodes

    def check_dag(self, name: str, nodes: list[DagNode]) -> None:
        """Raise ``ConfigurationError`` or ``FunctionNotFound`` unless ``nodes`` can be
        registered as the DAG ``name``."""
        if name in self.functions:
            raise ConfigurationError(f"{name!r} is already the name of a function")
        validate_dag(nodes)
        for node in nodes:
            self.latest(node.function)

    def delete_dag(self, name: str) -> None:
        if self.dags.pop(name, None) is None:
            raise FunctionNotFound(name)

    def latest(self, name: str) -> FunctionVersion:
        versions = self.functions.get(name)
        if not versions:
            raise FunctionNotFound(name)
        return versions[-1]

    def get(self, name: str, version: int) -> FunctionVersion:
        # Versions are 1, 2, ... unless a reloaded one was refused: look it up.
        for entry in reversed(self.functions.get(name, ())):
            if entry.version == version:
                return entry
        raise FunctionNotFound(f"{name} (version {version})")


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
