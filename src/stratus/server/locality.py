"""Which executors cache which Ref keys, for every client: a state machine without I/O.

Theory of operation: a client's placement remembers where it sent each Ref itself
(``ref_homes``), but another client calling with the same Ref would not know. So each
executor lists, in its load reports, the Ref keys it caches (``app.put`` objects, most
recently used first, at most ``MAX_CACHED_REPORTED``, and only when the list changed);
this directory keeps key -> executors and tells the coordinator what to push to clients
(``RefHints``), only when something changed and at most every ``push_every`` s. Clients
treat a hinted executor like one they sent the Ref to themselves.

Bounds: an executor's list is cut to ``MAX_CACHED_REPORTED`` keys, so the directory holds
at most that many keys per live executor; an executor that leaves is forgotten at once.

    event                 effect                                  instructions
    -------------------   -------------------------------------   ---------------------------
    Reported(e, keys)     e's keys replace its previous ones      PushHints(changed) if due
    Left(e)               e forgotten                             PushHints(changed) if due
    Flush                 (the shell's timer, at ``wake_at``)     PushHints(changed) if due
    Snapshot              (a client said Hello)                   PushHints(every key, complete)

A change not pushed at once (the last push was under ``push_every`` s ago) sets
``wake_at``, when the shell feeds ``Flush``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stratus.protocol.messages import MAX_CACHED_REPORTED

PUSH_EVERY = 0.1  # s between two pushes of hints to clients at least


@dataclass(frozen=True, slots=True)
class Reported:
    """Executor ``executor_id`` caches ``keys`` (most recently used first)."""

    executor_id: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Left:
    """Executor ``executor_id`` is gone: it caches nothing any more."""

    executor_id: str


@dataclass(frozen=True, slots=True)
class Flush:
    """The shell's timer: push what changed, if due."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A client just connected: it needs every hint."""


Event = Reported | Left | Flush | Snapshot


@dataclass(frozen=True, slots=True)
class PushHints:
    """Send ``homes`` (key -> executors caching it, sorted; empty: none) to clients;
    ``complete``: to the one client that asked for a snapshot, else to all."""

    homes: dict[str, list[str]]
    complete: bool = False


@dataclass(slots=True)
class RefDirectory:
    """Key -> executors caching it, and when to tell clients; see the module docstring.

    >>> d = RefDirectory()
    >>> d.handle(Reported("e1", ("~objects/a",)), 0.0)
    [PushHints(homes={'~objects/a': ['e1']}, complete=False)]
    >>> d.handle(Reported("e2", ("~objects/a",)), 0.05)  # too soon: pushed at wake_at
    []
    >>> d.wake_at
    0.1
    >>> d.handle(Flush(), 0.1)
    [PushHints(homes={'~objects/a': ['e1', 'e2']}, complete=False)]
    """

    push_every: float = PUSH_EVERY
    wake_at: float = math.inf  # feed Flush at this time (or later)
    _by_executor: dict[str, frozenset[str]] = field(default_factory=dict)
    _homes: dict[str, set[str]] = field(default_factory=dict)
    _changed: set[str] = field(default_factory=set)
    _pushed_at: float = -math.inf

    def homes(self, key: str) -> frozenset[str]:
        """The executors known to cache ``key``."""
        return frozenset(self._homes.get(key, ()))

    def __len__(self) -> int:
        """Keys cached by some executor."""
        return len(self._homes)

    def handle(self, event: Event, now: float) -> list[PushHints]:
        match event:
            case Reported(executor_id, keys):
                self._replace(executor_id, frozenset(keys[:MAX_CACHED_REPORTED]))
            case Left(executor_id):
                self._replace(executor_id, frozenset())
                self._by_executor.pop(executor_id, None)
            case Snapshot():
                return [PushHints({k: sorted(v) for k, v in self._homes.items()}, True)]
            case Flush():
                pass
        return self._push_if_due(now)

    def _replace(self, executor_id: str, keys: frozenset[str]) -> None:
        before = self._by_executor.get(executor_id, frozenset())
        if keys == before:
            return
        self._by_executor[executor_id] = keys
        for key in before - keys:
            homes = self._homes[key]
            homes.discard(executor_id)
            if not homes:
                del self._homes[key]
            self._changed.add(key)
        for key in keys - before:
            self._homes.setdefault(key, set()).add(executor_id)
            self._changed.add(key)

    def _push_if_due(self, now: float) -> list[PushHints]:
        if not self._changed:
            self.wake_at = math.inf
            return []
        due = self._pushed_at + self.push_every
        if now < due:
            self.wake_at = due
            return []
        homes = {k: sorted(self._homes.get(k, ())) for k in sorted(self._changed)}
        self._changed.clear()
        self._pushed_at = now
        self.wake_at = math.inf
        return [PushHints(homes)]
