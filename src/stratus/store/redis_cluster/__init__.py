"""A store on a Redis Cluster: the namespace split into shards, two-phase commit across them.

=============  ==============================================================
module         concept
=============  ==============================================================
``layout``     shards, their hash tags and key names, the feed cursor (no I/O)
``scripts``    the Lua scripts: every read and write of a shard is one
``link``       the cluster client; writes with ``WAIT`` on the slot's master
``commit``     single-shard commits and two-phase commit: prepare, decide,
               finish, recovery
``store``      :class:`RedisClusterStore`: reads, merges, change feed
=============  ==============================================================

See docs/store.md#redis-cluster.
"""

from stratus.store.redis_cluster.store import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_SHARDS,
    RedisClusterStore,
)

__all__ = ["DEFAULT_LOCK_TIMEOUT", "DEFAULT_SHARDS", "RedisClusterStore"]
