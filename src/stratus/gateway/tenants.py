"""Tenants: the gateway's callers, each in a namespace of its own, with quotas and usage.

A tenant is a name (``[a-z0-9-]{1,40}``), quotas and a creation time, kept in the
cluster's store under ``keys.tenant_record``; its bearer tokens are ordinary gateway
tokens whose record names it (``TokenRecord.tenant``). What a tenant owns is named in its
namespace, where the objects are (``protocol/keys.py``):

    the tenant's           is stored / registered as
    ---------------------  ---------------------------------------------
    function or DAG ``f``  ``acme::f``          (registered by the operator)
    kv key ``k``           ``TENANT_DATA + "acme/" + k``   (a reserved key)
    volume ``v``           ``t.acme.v``

The gateway maps a tenant's names into its namespace on every request, and an executor
running ``acme::f`` scopes the invocation's ``ctx.kv``, ``ctx.kv_now``, ``ctx.fs`` and
nested calls to ``acme`` (``server/attempt.py``), from the registered name, which only a
holder of the cluster key can write.

Deleting a tenant revokes its tokens and removes its record; its data stays, so that an
operator can still read or export it (and a tenant created again with the name gets it
back). Its functions stay registered until the operator removes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import msgspec

from stratus._exceptions import ConfigurationError, TenantNotFound
from stratus.fs import keys as fs_keys
from stratus.fs.records import volume_decoder
from stratus.gateway.tokens import Tokens
from stratus.protocol import keys
from stratus.protocol.metering import InvocationRecord, iter_batch
from stratus.store.base import Put, Store, Transaction

_NAME = re.compile(r"[a-z0-9-]{1,40}")


def check_tenant_name(name: object) -> str:
    """``name`` if it can name a tenant, else ``ConfigurationError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(f"a tenant's name is 1 to 40 of a-z, 0-9 and '-', not {name!r}")
    return name


class Quotas(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tenant's limits; None is unlimited."""

    max_concurrent: int | None = None
    """Calls of the tenant running (or waiting) at once, through the gateway."""
    calls_per_s: float | None = None
    """Calls per second, on average; a burst of ``max(1, calls_per_s)`` is allowed."""
    stored_bytes: int | None = None
    """Bytes of its kv values and files; a write through the gateway past it is refused."""

    def check(self) -> Quotas:
        for what, value in msgspec.structs.asdict(self).items():
            if value is not None and not value > 0:
                raise ConfigurationError(f"the quota {what} is a positive number or none")
        return self


class TenantRecord(msgspec.Struct, frozen=True):
    name: str
    quotas: Quotas
    created_ms: int


class TenantUsage(msgspec.Struct, frozen=True):
    """What a tenant has used: metered calls (attempts) and GB-s, and stored bytes."""

    calls: int = 0
    gb_seconds: float = 0.0
    stored_bytes: int = 0


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TenantRecord)
_BATCH = 500  # keys per get_many when stored bytes are summed


class Tenants:
    """Create, list and delete tenants, and make their tokens.

    >>> tenants = Tenants(store)
    >>> tenants.create("acme", Quotas(max_concurrent=10), now_ms=now)
    >>> token = tenants.token("acme", now_ms=now)   # shown once
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self.tokens = Tokens(store)

    def create(self, name: str, quotas: Quotas, *, now_ms: int) -> TenantRecord:
        """A new tenant; ``ConfigurationError`` if the name is taken or invalid."""
        key = keys.tenant_record(check_tenant_name(name))
        record = TenantRecord(name, quotas.check(), now_ms)
        created = self._store.commit(Transaction({key: 0}, [Put(key, _encoder.encode(record))]))
        if not created.ok:
            raise ConfigurationError(f"a tenant named {name!r} already exists")
        return record

    def get(self, name: str) -> TenantRecord:
        """The tenant ``name``; ``TenantNotFound`` if there is none."""
        raw = self._store.get(keys.tenant_record(check_tenant_name(name))).value
        if raw is None:
            raise TenantNotFound(name)
        return _decoder.decode(raw)

    def token(self, name: str, *, now_ms: int) -> str:
        """A new token of the tenant ``name`` (``TenantNotFound`` if there is none)."""
        self.get(name)
        return self.tokens.create(name, now_ms=now_ms, tenant=name)

    def delete(self, name: str) -> int:
        """Revoke the tenant's tokens and forget it (its data stays: see the module's
        docstring); how many tokens were revoked."""
        self.get(name)
        revoked = self.tokens.revoke_tenant(name)
        self._store.delete(keys.tenant_record(name))
        return revoked

    # ------------------------------------------------------------------ usage

    def stored_bytes(self, name: str) -> int:
        """Bytes of the tenant's kv values and of every key of its volumes (a scan:
        checked only for tenants with a ``stored_bytes`` quota, and by ``usage``)."""
        total = self._sizes(self._store.keys(keys.tenant_prefix(name)))
        for key in self._store.keys(fs_keys.volume_record(keys.tenant_volume(name, ""))):
            raw = self._store.get(key).value
            if raw is not None:
                total += len(raw)
                volume_id = volume_decoder.decode(raw).id
                total += self._sizes(self._store.keys(fs_keys.volume_prefix(volume_id)))
        return total

    def _sizes(self, names: list[str]) -> int:
        total = 0
        for at in range(0, len(names), _BATCH):
            entries = self._store.get_many(names[at : at + _BATCH])
            total += sum(len(e.value) for e in entries.values() if e.value is not None)
        return total

    def usage(self) -> dict[str, TenantUsage]:
        """Every tenant's usage: its metered calls and GB-s (from the records the
        executors stored) and its stored bytes."""
        metered = metered_usage(self._records())
        return {
            t.name: msgspec.structs.replace(
                metered.get(t.name, TenantUsage()), stored_bytes=self.stored_bytes(t.name)
            )
            for t in self.list()
        }

    def _records(self) -> Iterator[InvocationRecord]:
        for key in self._store.keys(keys.METER):
            raw = self._store.get(key).value
            if raw is not None:
                yield from iter_batch(raw)

    def list(self) -> list[TenantRecord]:
        """Every tenant, by name."""
        found = []
        for key in self._store.keys(keys.TENANTS):
            raw = self._store.get(key).value
            if raw is not None:
                found.append(_decoder.decode(raw))
        return found


def metered_usage(records: Iterable[InvocationRecord]) -> dict[str, TenantUsage]:
    """Calls and GB-s per tenant of metering records (the tenant is in the function's
    registered name; the operator's functions count for no one)."""
    totals: dict[str, list[float]] = {}
    seen: set[tuple[str, int, int, str]] = set()
    for record in records:
        tenant = keys.tenant_of_function(record.function)
        if tenant is None or record.identity in seen:
            continue
        seen.add(record.identity)
        cell = totals.setdefault(tenant, [0, 0.0])
        cell[0] += 1
        cell[1] += record.gb_seconds
    return {t: TenantUsage(int(c[0]), c[1]) for t, c in totals.items()}
