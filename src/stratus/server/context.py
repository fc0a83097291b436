"""``Context``: the first argument of every function, its handle on the platform.

A tenant's function (``keys.tenant_of_function``) gets a context in the tenant's
namespace (``server/attempt.py`` builds it): ``ctx.kv`` is a ``ScopedKV`` view of the
invocation's transaction, whose key ``k`` is the store key ``prefix + k`` (a platform
key is refused before the prefix is added, and listings strip it again), ``ctx.kv_now``
has the same prefix, and nested calls name the tenant's functions.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from typing import TYPE_CHECKING, Any

from stratus.kv.values import as_lattice, resolve
from stratus.lattice import HybridClock, Lattice
from stratus.protocol import keys

if TYPE_CHECKING:
    from stratus.fs import FileSystem, FsSession
    from stratus.kv import KVCache, KVTransaction, Ref
    from stratus.objects import ObjectStore
    from stratus.server.link import Caller
    from stratus.server.mail import Mailbox, PostOffice


class ImmediateKV:
    """``ctx.kv_now``: kv writes visible to everyone at once, and reads of the latest
    committed value, outside the invocation's transaction.

    For programs whose running invocations meet through the store (Cloudburst's: a
    receiver puts its id, a sender polls for it), which ``ctx.kv`` cannot serve: its
    writes become visible when the function returns. The price is the transaction's
    guarantees: each write here is committed on its own when it is made, stays if the
    function then fails, and is made again if the invocation runs again (a retry, a
    serializable conflict). Each call is a store round trip.

    >>> ctx.kv_now.put(f"inbox/{name}", ctx.invocation_id)    # seen by others now
    >>> ctx.kv_now.get(f"inbox/{peer}")                         # None until it is put
    """

    __slots__ = ("_cache", "_clock", "_prefix")

    def __init__(self, cache: KVCache, clock: HybridClock, prefix: str = "") -> None:
        self._cache = cache  # the executor's: what is written here is dropped from it
        self._clock = clock
        self._prefix = prefix  # a tenant's (keys.tenant_prefix): its keys are stored there

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` now (a plain value as an LWW register stamped now, as ``ctx.kv``)."""
        lattice = as_lattice(value, self._clock)
        stored = self._cache.values.encode(lattice)
        store, key = self._cache.store, self._user_key(key)
        if isinstance(value, Lattice):
            store.put(key, stored)
        else:  # merged, so that the latest write wins whatever order they arrive in
            store.merge(key, stored)
        self._cache.invalidate([key])

    def merge(self, key: str, value: Lattice) -> None:
        """Merge a lattice into ``key`` now."""
        encoded = self._cache.values.encode(as_lattice(value, self._clock))
        key = self._user_key(key)
        self._cache.store.merge(key, encoded)
        self._cache.invalidate([key])

    def delete(self, key: str) -> None:
        """Delete ``key`` now."""
        key = self._user_key(key)
        self._cache.store.delete(key)
        self._cache.invalidate([key])

    def get(self, key: str, default: Any = None) -> Any:
        """The latest committed value of ``key`` (read from the store, not the cache)."""
        _, value = self._cache.read_fresh(self._user_key(key))
        return default if value is None else resolve(value)

    def _user_key(self, key: str) -> str:
        keys.check_user_key(key)  # ReservedKey, as ctx.kv says
        return self._prefix + key


class ScopedKV:
    """``ctx.kv`` of a tenant's invocation: ``KVTransaction``'s reading and writing API,
    every key under ``prefix``.

    >>> ctx.kv.put("greeting", "hello")     # stored as <tenant prefix>greeting
    """

    __slots__ = ("_prefix", "_txn")

    def __init__(self, txn: KVTransaction, prefix: str) -> None:
        self._txn = txn
        self._prefix = prefix

    def __repr__(self) -> str:
        return f"<ScopedKV {self._prefix!r}>"

    def _key(self, key: str) -> str:
        keys.check_user_key(key)  # ReservedKey: a tenant names its own keys only
        return self._prefix + key

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (as ``KVTransaction.get``), or ``default``."""
        return self._txn.get(self._key(key), default)

    def get_lattice(self, key: str) -> Lattice | None:
        return self._txn.get_lattice(self._key(key))

    def keys(self, prefix: str = "") -> list[str]:
        """The tenant's live keys under ``prefix``, this invocation's writes included."""
        cut = len(self._prefix)
        return [k[cut:] for k in self._txn.keys(self._key(prefix) if prefix else self._prefix)]

    def __contains__(self, key: str) -> bool:
        return self._key(key) in self._txn

    def put(self, key: str, value: Any) -> None:
        self._txn.put(self._key(key), value)

    def merge(self, key: str, value: Lattice) -> None:
        self._txn.merge(self._key(key), value)

    def delete(self, key: str) -> None:
        self._txn.delete(self._key(key))

    def incr(self, key: str, n: int = 1) -> None:
        self._txn.incr(self._key(key), n)


class Context:
    """What a running invocation knows and can do.

    >>> @app.function
    ... def outer(ctx, x):
    ...     ctx.logger.info("called with %s", x)
    ...     return ctx.call("inner", x).result() + 1
    """

    __slots__ = (
        "_caller",
        "_fs",
        "_kv_now",
        "_logger",
        "_mailbox",
        "_objects",
        "_post",
        "_scope",
        "attempt",
        "executor_id",
        "function",
        "invocation_id",
        "kv",
    )

    def __init__(
        self,
        caller: Caller,
        kv: KVTransaction | ScopedKV,
        post: PostOffice,
        *,
        invocation_id: str,
        function: str,
        executor_id: str,
        attempt: int,
        fs: FsSession | None = None,
        kv_now: ImmediateKV | None = None,
        objects: ObjectStore | None = None,
        scope: str = "",
    ) -> None:
        self._caller = caller  # nested calls: the client SDK, given by the entry point
        self._objects = objects
        self._fs = fs
        self._post = post
        self._scope = scope  # a tenant's function: its nested calls name its functions
        self._mailbox: Mailbox | None = None
        self.kv = kv  # this invocation's reads and buffered writes; committed on return
        self._kv_now = kv_now
        self.invocation_id = invocation_id
        self.function = function
        self.executor_id = executor_id
        self.attempt = attempt
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry this invocation's id (``stratus logs`` shows
        them); made on first use, since most calls never log."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logging.getLogger(f"stratus.fn.{self.function}"),
                {"invocation_id": self.invocation_id},
            )
        return self._logger

    def __repr__(self) -> str:
        return f"<Context {self.function} {self.invocation_id} on {self.executor_id}>"

    @property
    def fs(self) -> FileSystem:
        """The function's file-system volume; ``ctx.fs.volume(name)`` for another. Its
        reads and writes are one serializable transaction with this invocation's kv
        writes, committed when the function returns."""
        if self._fs is None:
            raise RuntimeError("this context has no file system")
        return self._fs.fs

    @property
    def kv_now(self) -> ImmediateKV:
        """Kv writes visible to everyone at once and fresh reads, outside this
        invocation's transaction (``ImmediateKV``); ``ctx.kv`` is the transaction."""
        if self._kv_now is None:
            raise RuntimeError("this context has no immediate kv")
        return self._kv_now

    def put(self, obj: Any, *, key: str | None = None) -> Ref:
        """Store ``obj`` as ``app.put`` does and return its ``Ref`` (to return a result
        larger than a frame, or hand a large value to other calls). Written at once,
        outside the invocation's transaction: it stays if the function then fails, and
        a retried call puts it again (with a ``key``, that is ``ObjectExists``)."""
        if self._objects is None:
            raise RuntimeError("this context has no object store")
        return self._objects.put(obj, name=key)

    def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Invoke a function or DAG (a handle or a name) from inside a function; returns
        a ``stratus.Future`` at once.

        Waiting on the result keeps this executor serving other calls, so nested calls
        do not deadlock even when every executor is busy.
        """
        name = fn if isinstance(fn, str) else fn.name
        if not name.startswith(self._scope):
            name = self._scope + name  # a tenant's name, in its namespace
        return self._caller.invoke(name, args, kwargs)

    def send(self, invocation_id: str, obj: Any) -> None:
        """Send ``obj`` to the running invocation ``invocation_id`` (of a function of this
        namespace: a tenant's function reaches only its tenant's invocations)."""
        self._post.send(self.invocation_id, invocation_id, obj, self._scope)

    def recv(self, timeout: float | None = None) -> Any:
        """The next message sent to this invocation; ``TimeoutError`` after ``timeout`` s.

        While it waits, this executor keeps serving other calls.
        """
        return self._box().get(timeout)

    async def recv_async(self, timeout: float | None = None) -> Any:
        """``recv`` for an ``async def`` function: awaits the next message (the
        executor's other tasks run meanwhile); ``TimeoutError`` after ``timeout`` s."""
        return await self._box().get_async(timeout)

    def recv_nowait(self) -> list[tuple[str, Any]]:
        """Every message that has arrived, as ``(sender invocation id, object)``."""
        return self._box().get_all_nowait()

    def _box(self) -> Mailbox:
        if self._mailbox is None:
            self._mailbox = self._post.box(self.invocation_id)
        return self._mailbox
