"""Messages between running invocations: ``ctx.send(invocation_id, obj)`` and
``ctx.recv(timeout=)``, delivered executor to executor.

Theory of operation: a sender does not know where the recipient runs, so its executor
sends the message to every live executor (a handful on one machine; its ``Link`` knows
them from the coordinator's pushes and connects to each); the executor
running the recipient puts it in that invocation's mailbox, the others keep it for a
while in case the recipient starts there later (it may not have started yet, or may be
re-run after a crash), then drop it. A message is delivered at least once to a running
recipient; order is kept per sender. Mail stays within a namespace: a tenant's function
(``acme::f``) reaches only invocations of its tenant's functions, and the operator's
only the operator's; other mail is dropped.

Waiting in ``recv`` re-enters the executor's loop, like waiting on a nested call, so the
executor keeps serving (the sender may need this very executor to run). An ``async def``
awaits ``recv_async`` instead: its task sleeps on an asyncio future that the message's
arrival completes, and the executor's other tasks and calls go on.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stratus.protocol import keys, serialization
from stratus.protocol import messages as m

if TYPE_CHECKING:
    from stratus.server.link import Caller, Link

KEEP_UNCLAIMED = 60.0  # seconds a message waits for a recipient that is not running here


def namespace(function: str) -> str:
    """The mail namespace of ``function``'s invocations: ``acme::`` for a tenant's."""
    tenant = keys.tenant_of_function(function)
    return "" if tenant is None else keys.tenant_function(tenant, "")


@dataclass
class Mailbox:
    """The messages of one running invocation. ``caller`` drives the executor's loop
    while ``get`` waits."""

    caller: Caller
    queue: deque[tuple[str, bytes]] = field(default_factory=deque)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)  # tasks in recv_async

    def put(self, sender: str, payload: bytes) -> None:
        self.queue.append((sender, payload))
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    def get(self, timeout: float | None) -> Any:
        """The next message's object; ``TimeoutError`` if none arrives in ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.caller.polling():
            while not self.queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no message within {timeout} s")
                self.caller.pump(remaining)
        _, payload = self.queue.popleft()
        return serialization.loads(payload, what="message")

    async def get_async(self, timeout: float | None) -> Any:
        """``get`` for a task on the executor's event loop: awaits, never blocks it."""
        try:
            async with asyncio.timeout(timeout):
                while not self.queue:
                    waiter = asyncio.get_running_loop().create_future()
                    self.waiters.append(waiter)
                    await waiter
        except TimeoutError:
            raise TimeoutError(f"no message within {timeout} s") from None
        _, payload = self.queue.popleft()
        return serialization.loads(payload, what="message")

    def get_all_nowait(self) -> list[tuple[str, Any]]:
        """Every message already here, as ``(sender invocation id, object)``; no waiting."""
        with self.caller.polling():
            self.caller.pump(0)  # take in what has arrived
        taken, self.queue = list(self.queue), deque()
        return [(sender, serialization.loads(p, what="message")) for sender, p in taken]


class PostOffice:
    """An executor's side of messaging: its invocations' mailboxes and unclaimed mail."""

    def __init__(self, link: Link, caller: Caller, executor_id: str, max_payload: int) -> None:
        self._link = link
        self._caller = caller
        self._executor_id = executor_id
        self._max_payload = max_payload
        self._running: dict[str, str] = {}  # invocation id -> its namespace
        self._boxes: dict[str, Mailbox] = {}
        self._unclaimed: dict[str, list[tuple[float, m.Deliver]]] = {}

    def begin(self, invocation_id: str, namespace: str = "") -> None:
        """``invocation_id`` (of ``namespace``) runs here now: its mail goes to its box."""
        self._running[invocation_id] = namespace

    def end(self, invocation_id: str) -> None:
        self._running.pop(invocation_id, None)
        self._boxes.pop(invocation_id, None)

    def box(self, invocation_id: str) -> Mailbox:
        """The mailbox of a running invocation, made at its first message or ``recv``."""
        box = self._boxes.get(invocation_id)
        if box is None:
            box = self._boxes[invocation_id] = Mailbox(self._caller)
            namespace = self._running.get(invocation_id, "")
            for _, message in self._unclaimed.pop(invocation_id, []):
                if message.namespace == namespace:
                    box.put(message.sender, message.payload)
        return box

    def send(self, sender: str, recipient: str, obj: Any, namespace: str = "") -> None:
        payload = serialization.dumps(obj, limit=self._max_payload, what="message")
        message = m.Deliver(recipient, sender, payload, namespace)
        for address in self._link.peers():
            if address.executor_id == self._executor_id:
                self.deliver(message)
            else:
                self._link.peer(address).send(message, flush=False)

    def deliver(self, message: m.Deliver) -> None:
        namespace = self._running.get(message.recipient)
        if namespace is None:
            waiting = self._unclaimed.setdefault(message.recipient, [])
            waiting.append((time.monotonic(), message))
        elif namespace == message.namespace:
            self.box(message.recipient).put(message.sender, message.payload)

    def drop_unclaimed(self, now: float) -> None:
        for recipient, waiting in list(self._unclaimed.items()):
            waiting[:] = [w for w in waiting if now - w[0] <= KEEP_UNCLAIMED]
            if not waiting:
                del self._unclaimed[recipient]
