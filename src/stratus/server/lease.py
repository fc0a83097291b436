"""The coordinator's lease on its store: a state machine without I/O.

Theory of operation: two coordinators must never serve one store, and a coordinator
that died (or hangs) must be replaceable from another host. The lease is one key of the
store (``protocol/lease.py``), written only by check-and-set on its version (a validated
commit), so that of two writers that saw the same version one wins and the other learns
it lost. No wall clocks are compared across hosts: a contender measures, on its own
monotonic clock, how long the key's version has stayed the same.

- A holder renews every ``duration / 4``; each renewal changes the version. It serves
  until ``SERVE_FRACTION`` of ``duration`` after it *sent* its last successful write:
  past that it stops (``Lose``), renewed or not.
- A contender first sees version ``v`` at ``t`` (after ``v`` was written, so after its
  holder sent it); it claims only if ``v`` is still there at ``t + duration``, later than
  the holder's own deadline by at least a quarter of ``duration``. A version that changes
  meanwhile is a live holder: the contender is refused (``CoordinatorActive``).
- A holder that stopped cleanly marks the lease released, and one that died on the
  contender's own host (same boot and pid namespace, its pid gone) is seen dead at once:
  both are claimed without waiting.

    phase      event                                         instructions, next phase
    --------   -------------------------------------------   --------------------------------
    watching   Observed: none, released, or holder gone      Write(claim, epoch + 1): claiming
    watching   Observed: a version first seen                Watch(next look): watching
    watching   Observed: same version for ``duration``       Write(claim, epoch + 1): claiming
    watching   Observed: the version changed                 Refuse: refused
    claiming   Written(ok)                                   Serve(epoch): held
    claiming   Written(conflict)                             Refuse: refused
    claiming   StoreFailed                                   Lose(the store failed): lost
    held       Tick, renewal due                             Write(renew): held
    held       Written(ok)                                   (deadline moves on): held
    held       Written(conflict)                             Lose(taken by another): lost
    held       Tick, past the deadline                       Lose(not renewed): lost
    held       Release                                       Write(release): released
    held       StoreFailed                                   (the next tick tries again)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

import msgspec

from stratus.protocol.lease import LeaseRecord

SERVE_FRACTION = 0.75  # of the lease: how long a holder serves after a successful write
RENEW_FRACTION = 0.25  # of the lease: how often a holder renews (and a contender looks)


@dataclass(frozen=True, slots=True)
class Observed:
    """The lease as read from the store (``record`` None: none, or unreadable), and
    whether its holder is known dead (it ran on this host and its process is gone)."""

    record: LeaseRecord | None
    version: int
    holder_gone: bool = False


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a ``Write`` that was sent at ``sent``: ``ok`` with the key's new
    ``version``, or a conflict (the version had changed)."""

    ok: bool
    version: int
    sent: float


@dataclass(frozen=True, slots=True)
class StoreFailed:
    """The store could not be read or written; ``error`` says why."""

    error: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed (the shell ticks every ``renew_every``)."""


@dataclass(frozen=True, slots=True)
class Release:
    """The coordinator stops cleanly: let a successor start at once."""


Event = Observed | Written | StoreFailed | Tick | Release


@dataclass(frozen=True, slots=True)
class Write:
    """Write ``record`` if the lease's version is still ``expected`` (check-and-set)."""

    record: LeaseRecord
    expected: int
    purpose: Literal["claim", "renew", "release"]


@dataclass(frozen=True, slots=True)
class Watch:
    """Read the lease again at ``at`` (someone else holds it)."""

    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Serve:
    """The lease is ours: serve as epoch ``epoch``."""

    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """A live coordinator holds the lease: do not serve."""

    reason: str
    address: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Lose:
    """We lost the lease: stop serving now."""

    reason: str


Instruction = Write | Watch | Serve | Refuse | Lose

Phase = Literal["watching", "claiming", "held", "refused", "lost", "released"]


class Lease:
    """One coordinator's side of the store's lease (see the module doc).

    >>> lease = Lease(address="tcp://10.0.0.5:7070", cluster_id="c1", duration=8.0)
    >>> [type(i).__name__ for i in lease.handle(Observed(None, 0), now=0.0)]
    ['Write']
    """

    def __init__(
        self,
        *,
        address: str,
        cluster_id: str,
        duration: float,
        host: str = "",
        pid: int = 0,
        holder: str | None = None,
    ) -> None:
        if not duration > 0:
            raise ValueError(f"a lease lasts > 0 seconds, not {duration!r}")
        self.address, self.cluster_id, self.duration = address, cluster_id, duration
        self.host, self.pid = host, pid
        self.holder = holder or secrets.token_hex(8)
        self.phase: Phase = "watching"
        self.record: LeaseRecord | None = None  # ours, once claimed
        self.version = 0  # of the lease key, as last written or seen
        self.deadline = 0.0  # held: we serve until then
        self.renew_at = 0.0
        self._seen: tuple[int, float] | None = None  # (version, first seen at): watching
        self._others: LeaseRecord | None = None  # the holder we watch
        self._written_at = 0.0  # when our last successful write was sent
        self._claim_reason = ""

    @property
    def renew_every(self) -> float:
        return self.duration * RENEW_FRACTION

    def serving(self, now: float) -> bool:
        """Whether we may serve at ``now``: the lease is ours and not past its deadline."""
        return self.phase == "held" and now < self.deadline

    def handle(self, event: Event, now: float) -> list[Instruction]:
        match event:
            case Observed() if self.phase == "watching":
                return self._observed(event, now)
            case Written() if self.phase in ("claiming", "held"):
                return self._written(event, now)
            case Tick() if self.phase == "held":
                if now >= self.deadline:
                    return self._lose(
                        f"no renewal of the lease succeeded for {now - self._written_at:.1f} s "
                        "(the store was unreachable, or this process was stopped)"
                    )
                if now >= self.renew_at and self.record is not None:
                    renewed = _replace(self.record, renewals=self.record.renewals + 1)
                    self.renew_at = now + self.renew_every  # one write in flight at most
                    return [Write(renewed, self.version, "renew")]
            case StoreFailed(error) if self.phase == "claiming":
                return self._lose(f"the store failed while we claimed the lease: {error}")
            case Release() if self.phase == "held" and self.record is not None:
                self.phase = "released"
                return [Write(_replace(self.record, released=True), self.version, "release")]
        return []

    def _observed(self, seen: Observed, now: float) -> list[Instruction]:
        record, version = seen.record, seen.version
        if version == 0 or seen.holder_gone or (record is not None and record.released):
            why = (
                "no coordinator held it"
                if version == 0
                else "its holder stopped"
                if record is not None and record.released
                else "its holder's process is gone from this host"
            )
            return self._claim(record, version, why)
        if self._seen is None:
            self._seen, self._others = (version, now), record
            return [Watch(now + self.renew_every, self._watching(record))]
        first_version, since = self._seen
        if version != first_version:
            self.phase = "refused"
            return [self._refuse(record, "renews it")]
        if now - since >= self.duration:
            return self._claim(record, version, f"it was not renewed for {now - since:.1f} s")
        return [Watch(min(since + self.duration, now + self.renew_every), self._watching(record))]

    def _claim(self, previous: LeaseRecord | None, version: int, why: str) -> list[Instruction]:
        self.phase = "claiming"
        epoch = (previous.epoch if previous is not None else 0) + 1
        self.record = LeaseRecord(
            holder=self.holder,
            address=self.address,
            cluster_id=self.cluster_id,
            epoch=epoch,
            duration=self.duration,
            host=self.host,
            pid=self.pid,
        )
        self._claim_reason = why
        return [Write(self.record, version, "claim")]

    def _written(self, written: Written, now: float) -> list[Instruction]:
        assert self.record is not None
        if not written.ok:
            if self.phase == "claiming":
                self.phase = "refused"
                return [self._refuse(None, "took the lease first")]
            return self._lose("another coordinator took the lease (its version changed)")
        self.version, self._written_at = written.version, written.sent
        self.deadline = written.sent + self.duration * SERVE_FRACTION
        if self.phase == "claiming":
            self.phase = "held"
            self.renew_at = written.sent + self.renew_every
            return [Serve(self.record.epoch, self._claim_reason)]
        self.record = _replace(self.record, renewals=self.record.renewals + 1)
        return []

    def _lose(self, reason: str) -> list[Instruction]:
        self.phase = "lost"
        return [Lose(reason)]

    def _refuse(self, record: LeaseRecord | None, what: str) -> Refuse:
        record = record or self._others
        who = _who(record)
        return Refuse(
            f"{who} {what}: it serves this store; stop it first (two coordinators never "
            "serve one store)",
            record.address if record is not None else "",
            record.epoch if record is not None else 0,
        )

    def _watching(self, record: LeaseRecord | None) -> str:
        wait = f"waiting up to {self.duration:g} s for a renewal"
        return f"{_who(record)} holds the store's lease: {wait}"


def _who(record: LeaseRecord | None) -> str:
    if record is None:
        return "another coordinator"
    which = f"cluster {record.cluster_id}, epoch {record.epoch}"
    return f"the coordinator at {record.address} ({which})"


def _replace(record: LeaseRecord, **changes: object) -> LeaseRecord:
    return msgspec.structs.replace(record, **changes)
