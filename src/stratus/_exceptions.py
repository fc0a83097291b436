"""The one exception hierarchy of stratus.

::

    StratusError
    ├── ConfigurationError        bad options given to connect(), a function or a DAG
    │   ├── UnsupportedFunction   a function the platform cannot call (signature, async, generator)
    │   └── WrongClusterKey       a coordinator started with another key than its store's
    ├── ConnectionFailed          the cluster cannot be reached or refused our key
    ├── CoordinatorActive         another live coordinator holds the store's lease
    ├── ClusterClosed             the client was closed, or its cluster went away (past reconnect)
    │   └── StoreClosed           a store used after close or fork
    ├── MergeContention           a Redis merge that kept losing its race
    ├── StoreUnavailable          the store could not write: nothing was written
    │   ├── StoreFull             the store's disk (or memory) is full; reads keep working
    │   └── StoreLockTimeout      its write lock stayed taken past the deadline
    ├── ProtocolError             a peer sent a frame we could not accept
    │   └── BadSignature          a frame not signed with the cluster key
    ├── FunctionNotFound          no function or DAG of that name is registered
    ├── SerializationError        arguments or results that cannot be pickled or unpickled
    │   ├── ForgedValue           a stored object without the cluster's seal (never unpickled)
    │   └── ObjectCorrupt         an app.put object whose chunks fail its manifest's tag
    ├── PayloadTooLarge           a pickled value above the cluster's size limit
    ├── NoCapacity                no executor offers what the function requests
    ├── ReservedKey               writing a kv key that belongs to the platform
    ├── ObjectNotFound            a Ref to an app.put object that was deleted or never stored
    ├── ObjectExists              app.put(obj, key=...) with a key that names an object
    ├── VolumeNotFound            no file-system volume of that name
    ├── VolumeExists              creating a volume whose name is taken
    ├── Overloaded                the function's queue of waiting calls is full
    │   └── QuotaExceeded         a tenant's quota (calls at once, calls/s, stored bytes) spent
    ├── AccessDenied              no valid token, or a token whose tenant may not do this
    ├── TenantNotFound            no tenant of that name
    ├── LatticeError              a lattice value misused
    │   ├── LatticeTypeError      merging lattices of different types
    │   ├── LatticeValueError     a value a lattice cannot hold
    │   └── LatticeDecodeError    stored bytes that are not a lattice (also a SerializationError)
    └── InvocationError           an invocation failed (carries invocation id, function, DAG step)
        ├── RemoteError           the function raised; carries the remote type and traceback
        │   └── RemoteError[T]    made per original type T: ``except KeyError`` catches it too
        ├── InvocationTimeout     the function ran past its timeout and was killed
        ├── ConflictError         a serializable invocation kept conflicting and gave up
        ├── MemoryLimitExceeded   the function used more than its memory_mb and was stopped
        ├── ExecutorLost          its executor died and the retries were spent
        ├── ExecutorStartFailed   no executor could start to run it; carries the start error
        ├── ResultLost            it was applied, but its result was too large to keep
        └── StreamInterrupted     a streamed generator call failed after items were delivered

Every exception class of stratus is defined here (other modules re-export some of them),
and each has a wire kind in ``stratus.protocol.errors``.

Local failures (the first group) and remote ones (``InvocationError``) are different
types, so a caller can tell "my call was malformed" from "the function failed".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class StratusError(Exception):
    """Root of every error stratus raises."""


class ConfigurationError(StratusError, ValueError):
    """Options given to stratus are invalid (bad address, unknown consistency level...)."""


class UnsupportedFunction(ConfigurationError, TypeError):
    """A function registered that the platform could not call: its first parameter is not
    the ``Context`` (``def f(ctx, ...)``), or it is an ``async def`` or a generator, which
    executors do not run yet. Raised by ``app.function``, before anything is sent."""


class WrongClusterKey(ConfigurationError):
    """A coordinator was started with another cluster key than the one its store was set
    up with (the store's key check does not match): it would sign frames and values that
    the store's registry, sealed values and node agents do not accept, so it refuses to
    start. Give it the cluster's key (``$STRATUS_KEY``, ``--key-file``)."""


class ConnectionFailed(StratusError, ConnectionError):
    """The cluster could not be reached, or it did not accept our cluster key."""


class CoordinatorActive(StratusError):
    """Another coordinator serves this store: it holds the store's coordinator lease and
    renews it (``address``, ``epoch``). Two coordinators never serve one store; stop the
    other one first, or wait for its lease to expire if it is dead."""

    def __init__(self, message: str, *, address: str = "", epoch: int = 0) -> None:
        super().__init__(message)
        self.address = address
        self.epoch = epoch


class ClusterClosed(StratusError):
    """The client has been closed, or the cluster it talked to has gone away: an embedded
    cluster's coordinator died, or a server stayed away past the client's reconnect window."""


class StoreClosed(ClusterClosed):
    """The store was closed, or was opened by the parent of this forked process."""


class MergeContention(StratusError):
    """A merge (or a commit with merges) lost its optimistic race ``attempts`` times in a
    row: other writers keep changing ``keys``. Nothing of it was written."""

    def __init__(self, keys: Sequence[str], attempts: int) -> None:
        super().__init__(
            f"merging into {', '.join(map(repr, keys))} lost to concurrent writers "
            f"{attempts} times in a row; nothing was written"
        )
        self.keys = list(keys)
        self.attempts = attempts


class ProtocolError(StratusError):
    """A peer sent a frame that is unsigned, badly signed, malformed or too large."""


class BadSignature(ProtocolError):
    """The frame was not signed with the cluster key: its sender is not one of us."""


class FunctionNotFound(StratusError, LookupError):
    """No function or DAG with this name is registered in the cluster."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no function or DAG named {name!r} is registered")
        self.name = name


class SerializationError(StratusError):
    """A value could not be pickled, or could not be unpickled on the other side."""


class ForgedValue(SerializationError):
    """A value read from the store holds a pickle that does not carry the cluster's seal
    (an HMAC under a key derived from the cluster key): someone without the key wrote it.
    It was not unpickled; the key keeps its bytes until it is written again."""


class ObjectCorrupt(SerializationError):
    """An object stored by ``app.put`` whose chunks do not match its manifest: a chunk
    missing, truncated or written by someone without the cluster key (its tag, an HMAC
    under a key derived from the cluster key, does not verify). Nothing was unpickled."""


class ObjectNotFound(StratusError, LookupError):
    """A ``Ref`` names an object of ``app.put`` that was deleted, or never stored."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no stored object named {name!r} (deleted, or never put)")
        self.name = name


class ObjectExists(StratusError):
    """``app.put(obj, key=...)`` with a key that already names an object: objects are
    immutable; delete it first (``app.delete(ref)``) or put under another key."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an object named {name!r} exists: objects are immutable")
        self.name = name


class PayloadTooLarge(StratusError):
    """A pickled value is larger than the cluster's ``max_payload`` (default 64 MiB)."""

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class NoCapacity(StratusError):
    """No executor of the cluster offers the resources the function requests."""


class ReservedKey(StratusError, ValueError):
    """A kv write to a key that belongs to the platform (the file system's ``fs/...``
    keys, metering records): those are written only through their own APIs."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"key {key!r} belongs to the stratus platform (file system or metering) "
            "and cannot be written through the kv API"
        )
        self.key = key


class VolumeNotFound(StratusError, LookupError):
    """No file-system volume of this name exists (or it was deleted meanwhile)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no volume named {name!r}")
        self.name = name


class VolumeExists(StratusError):
    """A volume of this name already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a volume named {name!r} already exists")
        self.name = name


class Overloaded(StratusError):
    """A call was turned away: its function's pool is at its size limit and the calls
    already waiting for it fill the queue (``max_queued``). Nothing of it ran."""


class QuotaExceeded(Overloaded):
    """A tenant's call or write was turned away: one of its quotas (concurrent calls,
    calls per second, stored bytes) is spent. Nothing of it ran or was written."""


class AccessDenied(StratusError, PermissionError):
    """The gateway refused the request: no token, an unknown or revoked one, or a
    tenant's token for something only the operator may do."""


class TenantNotFound(StratusError, LookupError):
    """No tenant of this name exists (``stratus tenant list`` names them)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no tenant named {name!r}")
        self.name = name


class LatticeError(StratusError):
    """Root of the errors raised by ``stratus.lattice``."""


class LatticeTypeError(LatticeError, TypeError):
    """Two lattices of different types were merged or compared (``GSet`` with ``Counter``,
    or two types under one key of a ``LatticeMap``), or a lattice was given contents of
    the wrong type (an unhashable set element, a non-``int`` counter)."""


class LatticeValueError(LatticeError, ValueError):
    """A lattice was given contents of the right type but an impossible value: a negative
    counter total, a NaN bound, an ``ORSet`` tag reused for another element."""


class LatticeDecodeError(LatticeError, SerializationError):
    """Bytes handed to :func:`stratus.lattice.decode` are not a lattice encoding."""


class InvocationError(StratusError):
    """An invocation failed. ``invocation_id`` and ``function`` say which one; when a
    step of a DAG failed, ``step`` names its function and ``step_index`` its position
    (0-based, in the DAG's topological order; ``None`` outside a DAG)."""

    def __init__(
        self,
        message: str,
        *,
        invocation_id: str = "",
        function: str = "",
        step: str = "",
        step_index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.invocation_id = invocation_id
        self.function = function
        self.step = step
        self.step_index = step_index


class RemoteError(InvocationError):
    """The function raised. ``remote_type``, ``remote_traceback`` and, when it could be
    pickled, the original ``exception`` describe what happened on the executor.

    When the original exception's type could be unpickled here, the error raised is of a
    class made from both (built once per type), so ``except KeyError`` catches a remote
    ``KeyError`` as ``except RemoteError`` does::

        try:
            lookup.remote("missing").result()
        except KeyError as e:           # e is also a RemoteError
            print(e.remote_traceback)
    """

    def __init__(
        self,
        message: str,
        *,
        remote_type: str,
        remote_traceback: str,
        exception: BaseException | None = None,
        invocation_id: str = "",
        function: str = "",
        step: str = "",
        step_index: int | None = None,
    ) -> None:
        # Not ``super().__init__``: in a class made with the original type, that would
        # reach the original's ``__init__``, whose signature is unknown.
        BaseException.__init__(self, message)
        self.invocation_id = invocation_id
        self.function = function
        self.step = step
        self.step_index = step_index
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.exception = exception

    def __str__(self) -> str:
        where = f" (DAG step {self.step_index}: {self.step})" if self.step else ""
        return (
            f"{self.remote_type}: {self.args[0]}{where}\n\n"
            f"Remote traceback:\n{self.remote_traceback}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The class may be one made at run time: rebuild it from the original type.
        fields = {k: v for k, v in vars(self).items() if not k.startswith("__")}
        return (_rebuild_remote_error, (_original_type(type(self)), self.args[0], fields))


def remote_error_type(original: type[BaseException] | None) -> type[RemoteError]:
    """The ``RemoteError`` class to raise for a remote exception of type ``original``:
    a subclass of both when that is safe, else ``RemoteError`` itself. Cached per type."""
    if original is None:
        return RemoteError
    if issubclass(original, RemoteError):
        return remote_error_type(_original_type(original))
    made = _REMOTE_TYPES.get(original)
    if made is None:
        made = _REMOTE_TYPES[original] = _make_remote_type(original)
    return made


def new_remote_error(
    original: type[BaseException] | None, message: str, **fields: Any
) -> RemoteError:
    """A ``RemoteError`` (of ``remote_error_type(original)``) without calling the original
    type's ``__init__``, whose signature we cannot know."""
    cls = remote_error_type(original)
    error = cls.__new__(cls, message)
    RemoteError.__init__(error, message, **fields)
    return error


_REMOTE_TYPES: dict[type[BaseException], type[RemoteError]] = {}


def _original_type(cls: type[RemoteError]) -> type[BaseException] | None:
    found: type[BaseException] | None = getattr(cls, "_stratus_original", None)
    return found


def _make_remote_type(original: type[BaseException]) -> type[RemoteError]:
    """``RemoteError`` + ``original``, if it can be built and instantiated; only for
    ordinary exceptions: not stratus's own, nor SystemExit / KeyboardInterrupt. It
    pickles wherever ``original`` does (see ``RemoteError.__reduce__``)."""
    if not issubclass(original, Exception) or issubclass(original, StratusError):
        return RemoteError
    try:
        made: type[RemoteError] = type(
            f"RemoteError[{original.__qualname__}]",
            (RemoteError, original),
            {"_stratus_original": original, "__module__": __name__},
        )
        probe = made.__new__(made, "probe")
        RemoteError.__init__(probe, "probe", remote_type="", remote_traceback="")
        str(probe)
        repr(probe)
    except Exception:
        return RemoteError
    return made


def _rebuild_remote_error(
    original: type[BaseException] | None, message: str, fields: dict[str, Any]
) -> RemoteError:
    cls = remote_error_type(original)
    error = cls.__new__(cls, message)
    BaseException.__init__(error, message)
    error.__dict__.update(fields)
    return error


class InvocationTimeout(InvocationError, TimeoutError):
    """The function ran past its ``timeout``; its executor was killed and replaced."""


class ConflictError(InvocationError):
    """A ``serializable`` invocation's reads kept changing under it: it was re-run up to
    its bound and every commit conflicted. Nothing it wrote is visible."""


class MemoryLimitExceeded(InvocationError, MemoryError):
    """The function allocated past its ``memory_mb``; it was stopped, nothing it wrote is
    visible, and its executor was replaced by a fresh one."""


class ExecutorLost(InvocationError):
    """The executor running the call died and the function's ``retries`` were spent.

    The last attempt's effects *may* have been applied (it may have died between its
    commit and its reply); earlier attempts' were applied at most once in all."""


class ExecutorStartFailed(InvocationError):
    """The call waited for an executor (its warm pool was empty) and none could start:
    the message carries the start error (e.g. the store is unreachable). The function
    did not run. Executors keep trying; a later call may succeed."""


class ResultLost(InvocationError):
    """The invocation was applied (its writes are committed, once), but an executor died
    before replying and its result was too large to keep for the retry."""


class StreamInterrupted(InvocationError):
    """A streamed generator call (``fn.remote_gen``) lost its executor, or timed out,
    after some of its items were delivered. It is not retried, since a new run would
    yield its items again: its writes were committed once at most (once if its generator
    finished before the executor died), and ``delivered`` items were received."""

    def __init__(self, message: str, *, delivered: int = 0, **where: Any) -> None:
        super().__init__(message, **where)
        self.delivered = delivered


class StoreUnavailable(StratusError):
    """The store could not do the operation in time (its write lock stayed taken past the
    deadline, or it failed): nothing was written. Reads may still work."""


class StoreFull(StoreUnavailable):
    """The store's disk (or memory) is full: nothing was written; reads keep working."""


class StoreLockTimeout(StoreUnavailable):
    """Another process held the store's write lock past the deadline (``holders``: their
    process ids, when the kernel lists them). Nothing was written."""

    def __init__(self, path: str, timeout: float, holders: list[int]) -> None:
        who = ", ".join(map(str, holders)) or "unknown"
        super().__init__(
            f"the write lock of {path} stayed taken for {timeout} s (held by process {who}); "
            "nothing was written"
        )
        self.path = path
        self.timeout = timeout
        self.holders = holders
