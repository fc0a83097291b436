"""Writer ids for ``incr``: counters that count each committed increment once.

Theory of operation
-------------------
A :class:`~stratus.lattice.Counter` keeps one running total per writer and merges by the
per-writer maximum, so a writer must build each new total on its own latest one. ``incr``
hides that: each process has a :class:`CounterWriters`, which lends every transaction that
increments a writer id of its own (``<process name>.<random token>.<slot>``) and remembers,
per id and key, the totals the store holds for it. A slot is lent to one transaction at a
time (an executor may run a nested invocation while an outer one is open), and returned
with what became of the commit:

    outcome of the commit         the id's totals            the id
    ---------------------------   ------------------------   ------------------------------
    committed                     advanced to what it wrote  lent again
    not committed (conflict,      unchanged                  lent again
      error before the commit,
      an earlier attempt's record)
    unknown (the store failed     unknown                    retired: a new id replaces it
      mid-commit; a DAG step
      whose sink commits)

Exactly once: a retried invocation finds its invocation record and does not commit again,
so an increment is applied once whichever id carried it. Bounded state: a counter holds
one entry per id ever used on it, which grows with the processes (and their nesting depth)
and with retired ids, never with the number of invocations.
"""

from __future__ import annotations

import secrets
import threading

from stratus.lattice import Counter


class CounterWriters:
    """The writer ids of one process (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self._prefix = f"{name}.{secrets.token_hex(4)}."
        self._lock = threading.Lock()
        self._free: list[str] = []
        self._slots = 0
        self._totals: dict[tuple[str, str], Counter] = {}  # (writer, key) -> its totals

    def lease(self) -> str:
        """A writer id no other open transaction of this process holds."""
        with self._lock:
            if self._free:
                return self._free.pop()
            self._slots += 1
            return f"{self._prefix}{self._slots}"

    def base(self, writer: str, key: str) -> Counter:
        """What the store holds of ``writer``'s totals on ``key`` (empty for a new id)."""
        return self._totals.get((writer, key), Counter())

    def release(self, writer: str, written: dict[str, Counter], committed: bool | None) -> None:
        """Return ``writer``: ``written`` (key -> delta) was committed (True), was not
        (False), or may have been (None: the id is retired)."""
        with self._lock:
            if committed is None:
                for held in [k for k in self._totals if k[0] == writer]:
                    del self._totals[held]
                return  # never lent again: the store may hold totals we do not know
            if committed:
                for key, delta in written.items():
                    self._totals[(writer, key)] = delta
            self._free.append(writer)
