"""A tenant's call quotas at the gateway: calls at once and calls per second. No I/O.

``Gate.admit(now)`` lets a call in or raises ``QuotaExceeded``; ``release()`` is called
when the call is over (a synchronous call's reply, an asynchronous one's completion,
which the client's pump thread reports: hence the lock). The rate is a token bucket:
``calls_per_s`` tokens a second, at most ``max(1, calls_per_s)`` saved up, one per call.
A refused call takes nothing, so a tenant over its rate is refused until a token accrues.
"""

from __future__ import annotations

import threading

from stratus._exceptions import QuotaExceeded
from stratus.gateway.tenants import Quotas


class Gate:
    """The admission of one tenant's calls under its ``Quotas``."""

    def __init__(self, tenant: str, quotas: Quotas, now: float) -> None:
        self.tenant = tenant
        self.quotas = quotas
        self.running = 0
        self._burst = max(1.0, quotas.calls_per_s or 0.0)
        self._tokens = self._burst
        self._at = now
        self._lock = threading.Lock()

    def admit(self, now: float) -> None:
        """Count a call in, or ``QuotaExceeded`` (nothing counted) if a quota is spent."""
        with self._lock:
            limit, rate = self.quotas.max_concurrent, self.quotas.calls_per_s
            if limit is not None and self.running >= limit:
                raise QuotaExceeded(f"tenant {self.tenant!r} has {limit} calls running already")
            if rate is not None:
                self._tokens = min(self._burst, self._tokens + (now - self._at) * rate)
                self._at = now
                if self._tokens < 1.0:
                    raise QuotaExceeded(f"tenant {self.tenant!r} may make {rate} calls per second")
                self._tokens -= 1.0
            self.running += 1

    def release(self) -> None:
        """A call admitted is over."""
        with self._lock:
            self.running -= 1
