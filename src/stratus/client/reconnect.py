"""Finding a server's coordinator again after it went away (a restart, a network blip).

Theory of operation: when a remote client's coordinator connection closes, the client
keeps its calls and starts a ``Redial``: one thread that tries the handshake again after
randomized exponential pauses (``REDIAL``), each try bounded by what is left of the
*window* (``connect(..., reconnect=60.0)``). The handshake blocks, so it runs here and
never under the client's lock, while other threads keep polling the executors. Its end is
one of two callbacks, made once:

    try                              next
    ------------------------------   -------------------------------------------------
    handshake answered               ``on_back(sock, welcome, rest)``; the thread ends
    refused, away, no reply          pause, try again while the window lasts
    window over                      ``on_give_up(last error)``; the thread ends
    ``stop()`` (the client closed)   the thread ends, no callback

Each try dials through ``Follow``: the address the client had, then, when the client
knows the cluster's store (``connect(address, store=...)``), the address that the store's
coordinator lease names (``protocol/lease.py``), so that the client follows a coordinator
taken over on another host (docs/scaling.md). The client does the rest under its lock
(client/client.py, "reconnecting"): calls wait meanwhile, and once back it resolves its
names again and re-sends what was not answered.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from stratus._exceptions import ConnectionFailed, StratusError
from stratus.backoff import Backoff
from stratus.kv.open import open_store
from stratus.kv.values import codec_for
from stratus.protocol.lease import leased_address

_T = TypeVar("_T")

REDIAL = Backoff(first=0.05, cap=1.0, deadline=None)
"""Pauses between two tries: soon after a blip, at most 1 s apart during a long restart
(a refused try costs next to nothing; each second more is a second more of outage)."""

DIAL_TIMEOUT = 5.0  # s one try may take (a connect or a Welcome that does not come)


class Follow:
    """Where the coordinator is: ``address``, or after a takeover the address that
    ``locate()`` returns (the store's lease; "" when unknown)."""

    def __init__(self, address: str, locate: Callable[[], str] | None = None) -> None:
        self.address = address
        self._locate = locate

    def dial(self, handshake_at: Callable[[str, float], _T], timeout: float) -> _T:
        """``handshake_at(address, timeout)`` of the address we had, else of the one
        located; the one that answered is ``address`` from then on."""
        try:
            return handshake_at(self.address, timeout)
        except ConnectionFailed:
            found = self._locate() if self._locate is not None else ""
            if not found or found == self.address:
                raise
        answer = handshake_at(found, timeout)
        self.address = found
        return answer


def lease_locator(store_url: str, key: bytes) -> Callable[[], str]:
    """A ``locate`` for ``Follow``: the address in the lease of the store at ``store_url``
    (opened for each look, so that no connection is kept while connected), or ""."""

    def locate() -> str:
        try:
            with open_store(store_url, codec_for(key)) as store:
                return leased_address(store, key)
        except (StratusError, OSError):
            return ""

    return locate


class Redial:
    """The thread that dials ``dial`` until it answers or ``window`` seconds pass."""

    def __init__(
        self,
        dial: Callable[[float], tuple[socket.socket, Any, list[Any]]],
        window: float,
        *,
        on_back: Callable[[socket.socket, Any, list[Any]], None],
        on_give_up: Callable[[str], None],
        name: str,
        backoff: Backoff = REDIAL,
    ) -> None:
        self.window = window
        self.started_at = time.monotonic()
        self.tries = 0
        self.last_error = "no try yet"
        self._dial = dial
        self._on_back = on_back
        self._on_give_up = on_give_up
        self._backoff = backoff
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stratus-redial-{name}")
        self._thread.daemon = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop trying (the client closed); no callback follows."""
        self._stopped.set()

    def _run(self) -> None:
        deadline = self.started_at + self.window
        while not self._stopped.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.tries += 1
            try:
                sock, reply, rest = self._dial(min(DIAL_TIMEOUT, left))
            except ConnectionFailed as e:
                self.last_error = str(e)
            else:
                if self._stopped.is_set():
                    sock.close()
                    return
                self._on_back(sock, reply, rest)
                return
            pause = self._backoff.pause(self.tries, time.monotonic() - self.started_at)
            assert pause is not None  # REDIAL has no deadline: the window is ours
            if self._stopped.wait(min(pause, max(0.0, deadline - time.monotonic()))):
                return
        if not self._stopped.is_set():
            self._on_give_up(self.last_error)
