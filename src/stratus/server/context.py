"""``Context``: the first argument of every function, its handle on the platform."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratus.client.client import Client
    from stratus.client.future import Future
    from stratus.fs import FileSystem, FsSession
    from stratus.kv import KVTransaction
    from stratus.server.mail import Mailbox, PostOffice


class Context:
    """What a running invocation knows and can do.

    >>> @app.function
    ... def outer(ctx, x):
    ...     ctx.logger.info("called with %s", x)
    ...     return ctx.call("inner", x).result() + 1
    """

    __slots__ = (
        "_client",
        "_fs",
        "_mailbox",
        "_post",
        "attempt",
        "executor_id",
        "function",
        "invocation_id",
        "kv",
        "logger",
    )

    def __init__(
        self,
        client: Client,
        kv: KVTransaction,
        post: PostOffice,
        *,
        invocation_id: str,
        function: str,
        executor_id: str,
        attempt: int,
        fs: FsSession | None = None,
    ) -> None:
        self._client = client
        self._fs = fs
        self._post = post
        self._mailbox: Mailbox | None = None
        self.kv = kv  # this invocation's reads and buffered writes; committed on return
        self.invocation_id = invocation_id
        self.function = function
        self.executor_id = executor_id
        self.attempt = attempt
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"stratus.fn.{function}"), {"invocation_id": invocation_id}
        )

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

    def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Invoke a function or DAG (a handle or a name) from inside a function.

        Waiting on the result keeps this executor serving other calls, so nested calls
        do not deadlock even when every executor is busy.
        """
        name = fn if isinstance(fn, str) else fn.name
        return self._client.invoke(name, args, kwargs)

    def send(self, invocation_id: str, obj: Any) -> None:
        """Send ``obj`` to the running invocation ``invocation_id`` (any function's)."""
        self._post.send(self.invocation_id, invocation_id, obj)

    def recv(self, timeout: float | None = None) -> Any:
        """The next message sent to this invocation; ``TimeoutError`` after ``timeout`` s.

        While it waits, this executor keeps serving other calls.
        """
        return self._box().get(timeout)

    def recv_nowait(self) -> list[tuple[str, Any]]:
        """Every message that has arrived, as ``(sender invocation id, object)``."""
        return self._box().get_all_nowait()

    def _box(self) -> Mailbox:
        if self._mailbox is None:
            self._mailbox = self._post.box(self.invocation_id)
        return self._mailbox
