"""The connection of a Redis Cluster store: scripts sent to their slot's master.

Reads go through redis-py's cluster client, which follows MOVED and ASK redirections and
retries TRYAGAIN a few times. Writes (:meth:`ClusterLink.write`) are sent by this module
when they must be replicated: the script and ``WAIT K`` in one pipeline on one connection
to the slot's master, so that the WAIT covers this very write.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script

from stratus import backoff
from stratus._exceptions import ConfigurationError, ConnectionFailed, StoreUnavailable
from stratus.store.base import StoreClosed
from stratus.store.redis_cluster.scripts import Scripts
from stratus.store.redis_store import raise_store_error

_R = TypeVar("_R")

# A script refused by these did not run: try again once the slots' masters are known.
_UNSETTLED = (
    redis.exceptions.AskError,  # and MovedError
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ClusterError,  # redis-py's "TTL exhausted": redirected every time
)
# Between tries of a write refused while its slot moves (a failover takes seconds).
_RESETTLE = backoff.Backoff(first=0.01, cap=0.2, deadline=None)


class ClusterLink:
    """A cluster client for the store ``namespace`` at ``url``, with its scripts.

    ``wait_replicas`` > 0: every write waits (up to ``wait_timeout`` s) until that many
    replicas have it; a write refused while its slot moves is tried again for up to
    ``settle_timeout`` s."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        startup_nodes: Sequence[str],
        wait_replicas: int,
        wait_timeout: float,
        settle_timeout: float,
    ) -> None:
        self.address = url.split("@")[-1]
        self.namespace = namespace
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self.settle_timeout = settle_timeout
        try:
            client = RedisCluster.from_url(url, startup_nodes=[_node(u) for u in startup_nodes])
        except ValueError as exc:
            raise ConfigurationError(f"not a Redis URL: {exc}") from None
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot reach the Redis Cluster at {url}: {exc}") from exc
        self.scripts = Scripts.register(client)
        self.client: RedisCluster | None = client

    def open(self) -> RedisCluster:
        """The cluster client; StoreClosed once closed (or abandoned after a fork)."""
        client = self.client
        if client is None:
            raise StoreClosed(
                f"the store {self.namespace!r} at {self.address} is closed "
                "(or was opened before a fork)"
            )
        return client

    def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` on the node of its keys' slot (redis-py follows redirections)."""
        client = self.open()
        return self._until_settled(client, lambda: script(keys, args, client=client))

    def write(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script that writes. With ``wait_replicas``, WAIT follows it on the same
        connection to the master of its slot (one pipeline), so that WAIT covers this very
        write: on another pooled connection it would wait for that connection's writes."""
        if not self.wait_replicas:
            return self.call(script, keys, args)
        client = self.open()
        reply, acked = self._until_settled(
            client, lambda: self._replicated(client, script, keys, args)
        )
        if int(acked) < self.wait_replicas:
            raise StoreUnavailable(
                f"only {acked} of {self.wait_replicas} replicas acknowledged a write of "
                f"{self.address}: it may be lost in a failover"
            )
        return reply

    def _replicated(
        self, client: RedisCluster, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[Any, Any]:
        """The script's reply and WAIT's, from the master of the keys' slot."""
        slot = client.keyslot(keys[0])  # type: ignore[no-untyped-call]
        master = client.get_redis_connection(client.nodes_manager.get_node_from_slot(slot))
        for attempt in itertools.count(1):
            pipe = master.pipeline(transaction=False)
            # EVALSHA itself: a Script would ask SCRIPT EXISTS first, a round trip more.
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            wait = ("WAIT", self.wait_replicas, int(self.wait_timeout * 1000))
            pipe.execute_command(*wait)  # type: ignore[no-untyped-call]
            try:
                reply, acked = pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt > 3:
                    raise
                # A master new since (a failover), or flushed: the script did not run.
                master.script_load(script.script)
                continue
            return reply, acked
        raise AssertionError("unreachable")

    def _until_settled(self, client: RedisCluster, run: Callable[[], _R]) -> _R:
        """``run()``, tried again while a refusal says the script did not run because its
        slot moves (migration, failover), for up to ``settle_timeout`` s; then
        StoreUnavailable. Any other Redis error is the store error it means."""
        started = time.monotonic()
        for attempt in itertools.count(1):
            try:
                return run()
            except _UNSETTLED as exc:
                # Refused before it ran: MOVED, ASK, TRYAGAIN (a multi-key script on a slot
                # whose keys are split between two nodes), CLUSTERDOWN; redis-py's own
                # retries of those ran out ("TTL exhausted", a ClusterError).
                self._refresh(client)
                if time.monotonic() - started > self.settle_timeout:
                    raise StoreUnavailable(
                        f"the Redis Cluster at {self.address} did not settle: {exc}"
                    ) from exc
                _RESETTLE.sleep(attempt)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._refresh(client)  # the script may have run: not ours to repeat
                self.failed(exc)
            except redis.RedisError as exc:
                self.failed(exc)
        raise AssertionError("unreachable")

    @staticmethod
    def _refresh(client: RedisCluster) -> None:
        """Learn the slots' masters again (after a failover); if the cluster is still
        settling, a later call tries again."""
        with contextlib.suppress(redis.RedisError):
            client.nodes_manager.initialize()

    def failed(self, exc: redis.RedisError) -> NoReturn:
        """Raise the store error that ``exc`` means."""
        raise_store_error(exc, f"the Redis Cluster at {self.address}")

    def detach(self) -> RedisCluster | None:
        """Take the client away (closed from here on): the caller closes it, or not."""
        client, self.client = self.client, None
        return client


def _node(url: str) -> ClusterNode:
    """The cluster node of a ``redis://HOST:PORT`` URL (credentials come from ``url``)."""
    parsed = urlsplit(url)
    if parsed.hostname is None or parsed.port is None:
        raise ValueError(f"no HOST:PORT in {url!r}")
    return ClusterNode(parsed.hostname, parsed.port)  # type: ignore[no-untyped-call]
