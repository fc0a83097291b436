"""One invocation's view of the kv store: reads recorded, writes buffered.

Theory of operation: an invocation reads through a ``Reader`` (the executor's cache) and
records the version of every key it read, and the prefix version of every listing. Its
writes stay in a buffer, one final operation per key, and its reads see them. When it
returns, ``transaction()`` turns the buffer into one store ``Transaction``: committed
atomically, so other invocations see all of its writes or none; with ``validate`` (the
serializable level) it carries the read versions, and a concurrent change to anything
read makes the commit fail instead. An invocation that raises or dies is never committed,
so it leaves nothing behind and may be run again.

    earlier op on key   then                  buffered op
    ----------------    -------------------   -------------------------
    (none)              put(l) / merge(l)     Put(l) / Merge(l)
    Put(a)              merge(b)              Put(a.merge(b))
    Merge(a)            merge(b)              Merge(a.merge(b))
    Delete              merge(b)              Put(b)
    any                 put(l) / delete       Put(l) / Delete

``incr(key, n)`` is a merge of a ``Counter`` delta under a writer id lent by the process's
``CounterWriters`` (``kv.counters``); whoever commits the transaction calls
``settle_counters`` with the outcome, so the id's totals stay right.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from stratus._exceptions import ConfigurationError, ReservedKey
from stratus.kv.values import as_lattice, resolve
from stratus.lattice import Counter, HybridClock, Lattice, LatticeCodec, LWWRegister, Timestamp
from stratus.store.base import CommitResult, Delete, Merge, Put, Store, Transaction, Write

if TYPE_CHECKING:
    from stratus.kv.cache import KVCache
    from stratus.kv.counters import CounterWriters


class Reader(Protocol):
    """Where a transaction reads committed state from (a cache, or the store itself), and
    the codec of the values stored there."""

    values: LatticeCodec

    def read(self, key: str) -> tuple[int, Lattice | None]:
        """``(version, value)`` of ``key``; ``(0, None)`` if it never existed."""
        ...

    def keys(self, prefix: str) -> list[str]:
        """Live keys under ``prefix``, sorted."""
        ...

    def prefix_version(self, prefix: str) -> int:
        """The highest version under ``prefix``, tombstones included."""
        ...

    def read_fresh(self, key: str) -> tuple[int, Lattice | None]:
        """Like ``read``, but from the store itself, past any cache."""
        ...


_PUT, _MERGE, _DELETE = "put", "merge", "delete"


class KVTransaction:
    """The ``ctx.kv`` of one invocation.

    >>> ctx.kv.put("greeting", "hello")           # a plain value: an LWW register
    >>> ctx.kv.merge("visits", Counter.delta(w, 1))
    >>> ctx.kv.get("greeting")
    'hello'
    """

    def __init__(
        self, reader: Reader, clock: HybridClock, *, reserved: tuple[str, ...] = ()
    ) -> None:
        self._reader = reader
        self._values = reader.values  # encodes the writes as the store's readers decode them
        self._clock = clock
        self.reserved = reserved  # prefixes of the platform's keys, which it may not write
        self.reads: dict[str, int] = {}
        self.prefix_reads: dict[str, int] = {}
        self._writes: dict[str, tuple[str, Lattice | None]] = {}
        self._newest_read: Timestamp | None = None  # of the LWW registers read
        self.counters: CounterWriters | None = None  # lends the writer ids of incr
        self._writer = ""  # the id this transaction's increments are under
        self._deltas: dict[str, Counter] = {}  # key -> this writer's new totals

    # ------------------------------------------------------------------ reading

    def get(self, key: str, default: Any = None) -> Any:
        """The value a reader sees (``LWWRegister`` values unwrapped, a causal value's
        versions resolved as under ``causal``), or ``default``."""
        lattice = self.get_lattice(key)
        return default if lattice is None else resolve(lattice)

    def get_lattice(self, key: str) -> Lattice | None:
        """The lattice stored at ``key`` (with this invocation's writes), or None."""
        op = self._writes.get(key)
        if op is None or op[0] == _MERGE:
            base = self._read(key)
            if op is None:
                return base
            assert op[1] is not None
            return op[1] if base is None else base.merge(op[1])
        return op[1]

    def keys(self, prefix: str = "") -> list[str]:
        """Live keys under ``prefix``, this invocation's writes included."""
        if prefix not in self.prefix_reads:
            self.prefix_reads[prefix] = self._reader.prefix_version(prefix)
        live = set(self._reader.keys(prefix))
        for key, (kind, _) in self._writes.items():
            if key.startswith(prefix):
                if kind == _DELETE:
                    live.discard(key)
                else:
                    live.add(key)
        return sorted(live)

    def __contains__(self, key: str) -> bool:
        return self.get_lattice(key) is not None

    def _read(self, key: str) -> Lattice | None:
        version, value = self._reader.read(key)
        self.reads.setdefault(key, version)
        if isinstance(value, LWWRegister) and (
            self._newest_read is None or value.timestamp > self._newest_read
        ):
            self._newest_read = value.timestamp  # our writes must come after it
        return value

    # ------------------------------------------------------------------ writing

    def put(self, key: str, value: Any) -> None:
        """Set ``key``. A plain value becomes an ``LWWRegister`` stamped now, merged with
        what is stored so the latest write wins; a lattice replaces what is stored."""
        self.check_writable(key)
        if isinstance(value, Lattice):
            self._writes[key] = (_PUT, value)
            return
        if self._newest_read is not None:
            # Whatever the other writer's clock, our write must win over what we read.
            self._clock.observe(self._newest_read, time.time_ns() // 1_000_000)
            self._newest_read = None
        self.merge(key, as_lattice(value, self._clock))

    def merge(self, key: str, value: Lattice) -> None:
        """Merge a lattice into ``key`` (the store merges it with concurrent writes)."""
        self.check_writable(key)
        if not isinstance(value, Lattice):
            self.put(key, value)  # a plain value: an LWW register
            return
        op = self._writes.get(key)
        if op is None:
            self._writes[key] = (_MERGE, value)
        elif op[0] == _DELETE:
            self._writes[key] = (_PUT, value)
        else:
            assert op[1] is not None
            self._writes[key] = (op[0], op[1].merge(value))

    def delete(self, key: str) -> None:
        """Delete ``key`` (a tombstone in the store)."""
        self.check_writable(key)
        self._writes[key] = (_DELETE, None)

    def check_writable(self, key: str) -> None:
        """Raise ``ReservedKey`` for a key of the platform (the file system's...)."""
        if key.startswith(self.reserved):
            raise ReservedKey(key)

    def incr(self, key: str, n: int = 1) -> None:
        """Add ``n`` (negative: subtract) to the counter at ``key``, created at 0.

        Applied once when the invocation commits, even if it is retried; read it back
        with ``get(key)``, an ``int``.

        >>> ctx.kv.incr("visits")
        """
        if not isinstance(n, int) or isinstance(n, bool):
            raise ConfigurationError(f"incr adds an int, not {type(n).__name__}")
        if self.counters is None:
            raise ConfigurationError("incr needs the writer ids of its process (kv.counters)")
        if not self._writer:
            self._writer = self.counters.lease()
        base = self._deltas.get(key) or self.counters.base(self._writer, key)
        delta = Counter.delta(self._writer, n, base=base)
        self._deltas[key] = delta
        self.merge(key, delta)

    def settle_counters(self, committed: bool | None) -> None:
        """After the commit, or instead of it: whether this transaction's increments were
        committed (None: unknown). Returns its writer id to ``counters``; idempotent."""
        if self._writer and self.counters is not None:
            self.counters.release(self._writer, self._deltas, committed)
        self._writer, self._deltas = "", {}

    # ------------------------------------------------------------------ committing

    @property
    def written(self) -> Iterable[str]:
        return self._writes.keys()

    @property
    def has_writes(self) -> bool:
        return bool(self._writes)

    def writes(self) -> list[Write]:
        """The buffered writes as store operations, in the order keys were first written."""
        ops: list[Write] = []
        for key, (kind, value) in self._writes.items():
            if kind == _DELETE:
                ops.append(Delete(key))
            else:
                assert value is not None
                ops.append((Put if kind == _PUT else Merge)(key, self._values.encode(value)))
        return ops

    def export(self) -> bytes:
        """Reads and buffered writes, to continue in the next step of a DAG."""
        return self._encode(self._carried())

    def absorb(self, exported: bytes) -> None:
        """Continue what an upstream step exported (fan-in: each upstream in turn)."""
        self._absorb(exported)

    def _carried(self) -> _Carried:
        writes = [
            (kind, key, b"" if value is None else self._values.encode(value))
            for key, (kind, value) in self._writes.items()
        ]
        return _Carried(dict(self.reads), dict(self.prefix_reads), writes)

    @staticmethod
    def _encode(carried: _Carried) -> bytes:
        return _ENCODER.encode(carried)

    def _absorb(self, exported: bytes) -> _Carried:
        carried = _DECODER.decode(exported)
        for key, version in carried.reads.items():
            self.reads.setdefault(key, version)
        for prefix, version in carried.prefix_reads.items():
            self.prefix_reads.setdefault(prefix, version)
        for kind, key, value in carried.writes:
            if kind == _DELETE:
                self._writes[key] = (_DELETE, None)
            elif kind == _PUT or key not in self._writes:
                self._writes[key] = (kind, self._values.decode(value))
            else:
                KVTransaction.merge(self, key, self._values.decode(value))
        return carried

    def validate_reads(self, store: Store) -> CommitResult:
        """For a read-only transaction: whether every version read is still current."""
        current = store.get_many(self.reads)
        conflicts = [k for k, v in self.reads.items() if current[k].version != v]
        conflicts += [p for p, v in self.prefix_reads.items() if store.prefix_version(p) != v]
        return CommitResult(ok=not conflicts, conflicts=conflicts)

    def remember_commit(self, cache: KVCache, result: CommitResult) -> None:
        """After a successful commit: keep in the cache what is known to be stored.

        A put replaced the value, so it is known exactly. A merge is known when the value
        it was merged into is (the store reports that version): absent, or still in the
        cache. Any other merge met writes this executor never saw, so it is dropped and
        read again when needed.
        """
        for key, (kind, value) in self._writes.items():
            version = result.versions.get(key)
            if version is None:
                cache.invalidate([key])
            elif kind in (_PUT, _DELETE):
                cache.committed(key, version, value)
            else:
                assert value is not None
                into = result.merged_into.get(key)
                base = cache.peek(key, into) if into else None
                if into == 0 or base is not None:
                    cache.committed(key, version, value if base is None else base.merge(value))
                else:
                    cache.invalidate([key])

    def transaction(self, *, validate: bool) -> Transaction:
        """The store transaction to commit; with ``validate``, reads must still hold."""
        if not validate:
            return Transaction(reads={}, writes=self.writes())
        return Transaction(reads=self.reads, writes=self.writes(), prefix_reads=self.prefix_reads)


class _Carried(msgspec.Struct, array_like=True):
    """A DAG step's kv state, handed to the next step."""

    reads: dict[str, int]
    prefix_reads: dict[str, int]
    writes: list[tuple[str, str, bytes]]  # (kind, key, encoded lattice)
    seen: dict[str, bytes] = {}  # causal: encoded clocks of the versions returned
    required: dict[str, bytes] = {}  # causal: encoded least clocks of later reads


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Carried)
