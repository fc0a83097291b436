"""The one exception hierarchy of stratus.

::

    StratusError
    ├── ConfigurationError        bad options given to connect(), a function or a DAG
    ├── ConnectionFailed          the cluster cannot be reached or refused our key
    ├── ClusterClosed             the client was closed, or its embedded cluster died
    │   └── StoreClosed           (stratus.store) a store used after close or fork
    ├── MergeContention           (stratus.store) a Redis merge that kept losing its race
    ├── StoreUnavailable          the store could not write: nothing was written
    │   ├── StoreFull             the store's disk (or memory) is full; reads keep working
    │   └── StoreLockTimeout      (stratus.store) its write lock stayed taken past the deadline
    ├── ProtocolError             a peer sent a frame we could not accept
    ├── FunctionNotFound          no function or DAG of that name is registered
    ├── SerializationError        arguments or results that cannot be pickled or unpickled
    ├── PayloadTooLarge           a pickled value above the cluster's size limit
    ├── NoCapacity                no executor offers what the function requests
    ├── VolumeNotFound            (stratus.fs) no file-system volume of that name
    ├── VolumeExists              (stratus.fs) creating a volume whose name is taken
    ├── Overloaded                the function's queue of waiting calls is full
    ├── LatticeError              (stratus.lattice) a lattice value misused
    │   ├── LatticeTypeError      merging lattices of different types
    │   ├── LatticeValueError     a value a lattice cannot hold
    │   └── LatticeDecodeError    stored bytes that are not a lattice (also a SerializationError)
    └── InvocationError           an invocation failed (carries invocation id and function)
        ├── RemoteError           the function raised; carries the remote type and traceback
        ├── InvocationTimeout     the function ran past its timeout and was killed
        ├── ConflictError         a serializable invocation kept conflicting and gave up
        ├── MemoryLimitExceeded   the function used more than its memory_mb and was stopped
        ├── ExecutorLost          its executor died and the retries were spent
        └── ResultLost            it was applied, but its result was too large to keep

Local failures (the first group) and remote ones (``InvocationError``) are different
types, so a caller can tell "my call was malformed" from "the function failed".
"""

from __future__ import annotations


class StratusError(Exception):
    """Root of every error stratus raises."""


class ConfigurationError(StratusError, ValueError):
    """Options given to stratus are invalid (bad address, unknown consistency level...)."""


class ConnectionFailed(StratusError, ConnectionError):
    """The cluster could not be reached, or it did not accept our cluster key."""


class ClusterClosed(StratusError):
    """The client has been closed, or the cluster it talked to has gone away."""


class ProtocolError(StratusError):
    """A peer sent a frame that is unsigned, badly signed, malformed or too large."""


class FunctionNotFound(StratusError, LookupError):
    """No function or DAG with this name is registered in the cluster."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no function or DAG named {name!r} is registered")
        self.name = name


class SerializationError(StratusError):
    """A value could not be pickled, or could not be unpickled on the other side."""


class PayloadTooLarge(StratusError):
    """A pickled value is larger than the cluster's ``max_payload`` (default 64 MiB)."""

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class NoCapacity(StratusError):
    """No executor of the cluster offers the resources the function requests."""


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


class InvocationError(StratusError):
    """An invocation failed. ``invocation_id`` and ``function`` say which one."""

    def __init__(self, message: str, *, invocation_id: str = "", function: str = "") -> None:
        super().__init__(message)
        self.invocation_id = invocation_id
        self.function = function


class RemoteError(InvocationError):
    """The function raised. ``remote_type``, ``remote_traceback`` and, when it could be
    pickled, the original ``exception`` describe what happened on the executor."""

    def __init__(
        self,
        message: str,
        *,
        remote_type: str,
        remote_traceback: str,
        exception: BaseException | None = None,
        invocation_id: str = "",
        function: str = "",
    ) -> None:
        super().__init__(message, invocation_id=invocation_id, function=function)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.exception = exception

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.args[0]}\n\nRemote traceback:\n{self.remote_traceback}"


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


class ResultLost(InvocationError):
    """The invocation was applied (its writes are committed, once), but an executor died
    before replying and its result was too large to keep for the retry."""


class StoreUnavailable(StratusError):
    """The store could not do the operation in time (its write lock stayed taken past the
    deadline, or it failed): nothing was written. Reads may still work."""


class StoreFull(StoreUnavailable):
    """The store's disk (or memory) is full: nothing was written; reads keep working."""
