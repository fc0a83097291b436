"""The ``causal`` level: reads that form a causal cut, writes that carry their past.

Theory of operation: under ``causal`` a key holds a ``CausalValue``: concurrent versions
kept as siblings, each with the vector clock of its write and the clocks of the versions
its writer had read (its *dependencies*). A causal transaction keeps two maps:

* ``seen``: for each key it returned, the clock of the version returned;
* ``required``: for each key, the least clock a read of it must return, the merge of the
  dependencies of every version it returned.

Reading a key whose cached version is older than ``required`` reads it from the store
instead; the store has every committed version, and a version's dependencies were
committed before it (its writer read them there), so that read satisfies the bound.
Reading a version that depends on a newer version of a key already returned would break
the cut: the invocation is re-run (``CausalRetry``) with the bound, so the re-run reads the
newer version first. Writes become new versions whose dependencies are everything seen.
Both maps travel with a DAG's steps, so the cut holds across the whole DAG. The versions one
invocation (or DAG) writes depend on one another, so a reader that sees one of them is
held to see the others: caches cannot show half of an invocation's writes.

What a reader gets: one version's value; for concurrent versions of lattices their merge;
for concurrent plain values, the tuple of siblings (``get_lattice`` gives the
``CausalValue`` itself).
"""

from __future__ import annotations

import functools
from typing import Any

from stratus.kv.transaction import KVTransaction, Reader
from stratus.kv.values import resolve
from stratus.lattice import CausalValue, HybridClock, Lattice, VectorClock, decode, encode
from stratus.store.base import Write


class CausalRetry(BaseException):
    """A read would break the causal cut: run the invocation again with ``required``.

    A ``BaseException``, so that a function catching ``Exception`` cannot swallow it.
    """

    def __init__(self, required: dict[str, VectorClock]) -> None:
        super().__init__("a causal read needs a newer version of a key already read")
        self.required = required


class CausalTransaction(KVTransaction):
    """``ctx.kv`` of a ``causal`` invocation; writes by ``node`` (the executor)."""

    def __init__(
        self,
        reader: Reader,
        clock: HybridClock,
        node: str,
        required: dict[str, VectorClock] | None = None,
        *,
        reserved: tuple[str, ...] = (),
    ) -> None:
        super().__init__(reader, clock, reserved=reserved)
        self._node = node
        self.seen: dict[str, VectorClock] = {}
        self.required: dict[str, VectorClock] = dict(required or {})

    def get(self, key: str, default: Any = None) -> Any:
        value = self.get_lattice(key)
        if isinstance(value, CausalValue) and not value.versions:
            return default
        return default if value is None else resolve(value)

    def put(self, key: str, value: Any) -> None:
        self.check_writable(key)
        current = self.get_lattice(key)
        base = current if isinstance(current, CausalValue) else CausalValue(())
        # Its past: every version read, and everything those versions depend on (the
        # dependencies of a version it supersedes included), so a reader of this write
        # is held to all of it, however many writes later.
        past = dict(self.required)
        for k, clock in self.seen.items():
            known = past.get(k)
            past[k] = clock if known is None else known.merge(clock)
        past.pop(key, None)
        self._writes[key] = ("merge", base.write(self._node, value, past))

    def merge(self, key: str, value: Lattice) -> None:
        self.check_writable(key)
        current = self.get_lattice(key)
        siblings = current.siblings if isinstance(current, CausalValue) else ()
        if siblings and all(isinstance(s, Lattice) for s in siblings):
            value = functools.reduce(lambda a, b: a.merge(b), siblings).merge(value)
        self.put(key, value)

    def writes(self) -> list[Write]:
        """The buffered writes, each new version also depending on the versions this
        invocation writes of the other keys: a causal reader that sees one of them then
        sees them all (the writes of an invocation are atomic for readers too)."""
        written = {
            key: value.clock
            for key, (_, value) in self._writes.items()
            if isinstance(value, CausalValue)
        }
        if len(written) > 1:
            for key, (kind, value) in self._writes.items():
                if isinstance(value, CausalValue) and len(value.versions) == 1:
                    (version,) = value.versions
                    dependencies = dict(version.dependencies)
                    for other, clock in written.items():
                        if other != key:
                            known = dependencies.get(other)
                            dependencies[other] = clock if known is None else known.merge(clock)
                    self._writes[key] = (
                        kind,
                        CausalValue.of(version.clock, version.value, dependencies),
                    )
        return super().writes()

    def _read(self, key: str) -> Lattice | None:
        version, value = self._reader.read(key)
        need = self.required.get(key)
        if need is not None and not _covers(value, need):
            version, value = self._reader.read_fresh(key)
        self.reads.setdefault(key, version)
        if value is None:  # seen absent: a later read depending on it must re-run
            self.seen.setdefault(key, VectorClock())
        elif isinstance(value, CausalValue):
            self.seen.setdefault(key, value.clock)
            for dep, clock in value.dependencies.items():
                need = self.required.get(dep)
                self.required[dep] = clock if need is None else need.merge(clock)
                if dep in self.seen and not clock.leq(self.seen[dep]):
                    raise CausalRetry(self.required)
        return value

    def export(self) -> bytes:
        carried = self._carried()
        carried.seen.update({k: encode(c) for k, c in self.seen.items()})
        carried.required.update({k: encode(c) for k, c in self.required.items()})
        return self._encode(carried)

    def absorb(self, exported: bytes) -> None:
        carried = super()._absorb(exported)
        for key, clock in carried.seen.items():
            self.seen.setdefault(key, _clock(clock))
        for key, clock in carried.required.items():
            need = self.required.get(key)
            self.required[key] = _clock(clock) if need is None else need.merge(_clock(clock))


def _covers(value: Lattice | None, need: VectorClock) -> bool:
    if isinstance(value, CausalValue):
        return need.leq(value.clock)
    return need.leq(VectorClock())


def _clock(data: bytes) -> VectorClock:
    clock = decode(data)
    assert isinstance(clock, VectorClock)
    return clock
