"""Names of the keys and files the platform itself keeps (no I/O).

Every key stratus writes for its own use starts with one of the ``PLATFORM`` prefixes
(``RESERVED`` for new ones; the file system's ``FS`` predates it), so that it never
collides with a user's key: listings through ``ctx.kv`` and ``app.kv`` hide them, and
writes to them through the kv API raise ``ReservedKey``. Build names here, never inline.
"""

from __future__ import annotations

from stratus._exceptions import ReservedKey

RESERVED = "\x00stratus/"
"""Prefix of the platform's own keys: a NUL byte cannot start a key a user types."""

FS = "fs/"
"""Prefix of the file system's keys (``stratus.fs.keys`` lays them out)."""

PLATFORM = (RESERVED, FS)
"""Every prefix of keys that belong to the platform."""

METER = RESERVED + "meter/"
"""Prefix of metering batches: ``METER + <cluster>/<executor>/<batch, 10 digits>``."""


def meter_batch(cluster_id: str, executor_id: str, batch: int) -> str:
    """The key of one executor's ``batch``-th batch of invocation records.

    Deterministic, so that recovering a batch after a crash rewrites the same key
    instead of billing its records twice.
    """
    return f"{METER}{cluster_id}/{executor_id}/{batch:010d}"


GATEWAY_TOKENS = RESERVED + "gateway/tokens/"
"""Prefix of the HTTP gateway's tokens: ``GATEWAY_TOKENS + <sha256 of the token, hex>``."""


def gateway_token(digest: str) -> str:
    return GATEWAY_TOKENS + digest


TENANTS = RESERVED + "tenants/"
"""Prefix of the tenants' records (``stratus.tenants``): ``TENANTS + <tenant name>``."""


def tenant_record(tenant: str) -> str:
    return TENANTS + tenant


TENANT_DATA = RESERVED + "tenant/"
"""Prefix of the tenants' kv keys: a tenant's key ``k`` is ``TENANT_DATA + <tenant>/k``.
Under ``RESERVED``, so no one writes there through the kv API but the tenant itself,
through its scoped views (the gateway's, and ``ctx.kv`` in its functions)."""


def tenant_prefix(tenant: str) -> str:
    """The prefix of every kv key of ``tenant`` (names have no ``/``: one tenant's prefix
    never starts another's)."""
    return f"{TENANT_DATA}{tenant}/"


TENANT_FUNCTION_SEPARATOR = "::"
"""A registered name ``acme::f`` is the function (or DAG) ``f`` of the tenant ``acme``."""


def tenant_function(tenant: str, name: str) -> str:
    """The registered name of ``tenant``'s function or DAG ``name``."""
    return f"{tenant}{TENANT_FUNCTION_SEPARATOR}{name}"


def tenant_of_function(name: str) -> str | None:
    """The tenant a registered function or DAG belongs to; None for the operator's. The
    first separator decides, so ``acme::b::f`` is ``acme``'s whatever follows."""
    tenant, found, _ = name.partition(TENANT_FUNCTION_SEPARATOR)
    return tenant if found else None


TENANT_VOLUME = "t."
"""A volume ``t.acme.data`` is the volume ``data`` of the tenant ``acme`` (tenant names
have no dot, so the name after the second dot is the tenant's)."""


def tenant_volume(tenant: str, name: str) -> str:
    """The stored name of ``tenant``'s volume ``name``."""
    return f"{TENANT_VOLUME}{tenant}.{name}"


REGISTRY = RESERVED + "registry/"
"""Prefix of a server's registry: its functions' versions and its DAGs (signed entries)."""

REGISTRY_FUNCTIONS = REGISTRY + "fn/"
REGISTRY_DAGS = REGISTRY + "dag/"


def registry_function(name: str, version: int) -> str:
    """The key of version ``version`` of function ``name``."""
    return f"{REGISTRY_FUNCTIONS}{name}/{version:010d}"


def registry_dag(name: str) -> str:
    """The key of the DAG ``name``."""
    return f"{REGISTRY_DAGS}{name}"


COORDINATOR_LEASE = RESERVED + "coordinator/lease"
"""The lease of the coordinator that serves this store: its address and epoch (signed,
``protocol/lease.py``), renewed while it lives, so that another host can take over."""

KEY_CHECK = RESERVED + "coordinator/key-check"
"""Proof that this store was set up with a given cluster key (an HMAC, never the key):
a coordinator started with another key refuses to serve the store."""


INVOCATIONS = RESERVED + "invocations/"
"""Prefix of the invocation records (``stratus.store.records``): exactly-once effects."""


def invocation_record(invocation_id: str, node: int = -1) -> str:
    """The key of the record of ``invocation_id`` (of its DAG step ``node``; -1: a call)."""
    return f"{INVOCATIONS}{invocation_id}/{node}"


OBJECTS = RESERVED + "objects/"
"""Prefix of the manifests of ``app.put``'s objects: ``OBJECTS + <name>`` (what a Ref names)."""

OBJECT_CHUNKS = RESERVED + "object-chunks/"
"""Prefix of their chunks: ``OBJECT_CHUNKS + <chunks id>/<n, 8 digits>``."""


def object_manifest(name: str) -> str:
    """The key of the manifest of the object ``name``."""
    return OBJECTS + name


def object_chunk(chunks_id: str, n: int) -> str:
    """The key of the ``n``-th chunk of an object (a fresh ``chunks_id`` per put, so that a
    reader never mixes the chunks of two puts under one name)."""
    return f"{OBJECT_CHUNKS}{chunks_id}/{n:08d}"


def is_reserved(key: str) -> bool:
    """Whether ``key`` belongs to the platform rather than to a user."""
    return key.startswith(PLATFORM)


def check_user_key(key: str) -> None:
    """Raise ``ReservedKey`` if a user may not write ``key`` through the kv API."""
    if key.startswith(PLATFORM):
        raise ReservedKey(key)


# Files under the data directory.

METER_DIR = "meter"
"""Directory of the executors' metering spools: ``<cluster>-<executor>.spool``."""

LOGS_DIR = "logs"
"""Directory of the per-invocation logs: ``<cluster>-<executor>.jsonl`` (and ``.1``)."""


def spool_name(cluster_id: str, executor_id: str) -> str:
    return f"{cluster_id}-{executor_id}.spool"


def log_name(cluster_id: str, executor_id: str) -> str:
    return f"{cluster_id}-{executor_id}.jsonl"
