"""The tenant model: names, quotas, tokens mapped to tenants (hashed at rest), usage, and
the gateway's quota gates and name mapping (pure logic, an in-memory store)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stratus._exceptions import ConfigurationError, QuotaExceeded, TenantNotFound
from stratus.gateway.app import OPERATOR, Caller
from stratus.gateway.quotas import Gate
from stratus.gateway.tenants import Quotas, Tenants, check_tenant_name, metered_usage
from stratus.protocol import keys
from stratus.protocol.metering import InvocationRecord
from stratus.store.memory import MemoryStore


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    with MemoryStore(lambda old, new: new) as opened:
        yield opened


@pytest.mark.parametrize("name", ["a", "acme", "acme-2", "0", "a" * 40])
def test_good_names(name: str) -> None:
    assert check_tenant_name(name) == name


@pytest.mark.parametrize("name", ["", "Acme", "a_b", "a.b", "a/b", "a::b", "a" * 41, 3, None])
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(ConfigurationError):
        check_tenant_name(name)


@pytest.mark.parametrize(
    "quotas", [Quotas(max_concurrent=0), Quotas(calls_per_s=-1.0), Quotas(stored_bytes=0)]
)
def test_quotas_are_positive_or_none(store: MemoryStore, quotas: Quotas) -> None:
    with pytest.raises(ConfigurationError):
        Tenants(store).create("acme", quotas, now_ms=1)


def test_create_get_list_delete(store: MemoryStore) -> None:
    tenants = Tenants(store)
    tenants.create("acme", Quotas(max_concurrent=3), now_ms=7)
    tenants.create("beta", Quotas(), now_ms=8)
    with pytest.raises(ConfigurationError, match="already exists"):
        tenants.create("acme", Quotas(), now_ms=9)
    assert tenants.get("acme").quotas.max_concurrent == 3
    assert [t.name for t in tenants.list()] == ["acme", "beta"]
    assert tenants.delete("acme") == 0
    with pytest.raises(TenantNotFound):
        tenants.get("acme")
    with pytest.raises(TenantNotFound):
        tenants.delete("acme")
    with pytest.raises(TenantNotFound):
        tenants.token("acme", now_ms=1)


def test_tokens_map_to_their_tenant_and_are_hashed_at_rest(store: MemoryStore) -> None:
    tenants = Tenants(store)
    tenants.create("acme", Quotas(), now_ms=1)
    token = tenants.token("acme", now_ms=2)
    operator = tenants.tokens.create("ops", now_ms=3)
    record = tenants.tokens.check(token)
    assert record is not None and record.tenant == "acme"
    operator_record = tenants.tokens.check(operator)
    assert operator_record is not None and operator_record.tenant is None
    every = [k.encode() + (store.get(k).value or b"") for k in store.keys("")]
    assert not any(token.encode() in row or operator.encode() in row for row in every)
    assert [owner for _, owner, _ in tenants.tokens.list()] == ["ops"]  # operators' only


def test_deleting_a_tenant_revokes_its_tokens_only(store: MemoryStore) -> None:
    tenants = Tenants(store)
    for name in ("acme", "beta"):
        tenants.create(name, Quotas(), now_ms=1)
    doomed = [tenants.token("acme", now_ms=2) for _ in range(2)]
    kept = tenants.token("beta", now_ms=2)
    store.put(keys.tenant_prefix("acme") + "data", b"kept")
    assert tenants.delete("acme") == 2
    assert all(tenants.tokens.check(t) is None for t in doomed)
    assert tenants.tokens.check(kept) is not None
    assert store.get(keys.tenant_prefix("acme") + "data").value == b"kept"  # data stays


def test_stored_bytes_count_the_tenants_keys_only(store: MemoryStore) -> None:
    tenants = Tenants(store)
    tenants.create("acme", Quotas(), now_ms=1)
    store.put(keys.tenant_prefix("acme") + "a", b"x" * 10)
    store.put(keys.tenant_prefix("acme-2") + "a", b"x" * 1000)  # a prefix of another name
    store.put("a", b"x" * 1000)
    assert tenants.stored_bytes("acme") == 10
    assert tenants.usage()["acme"].stored_bytes == 10


def _record(function: str, attempt: int = 1) -> InvocationRecord:
    # one second at 1 GB: 1 GB-s; the invocation id is the function's, for short
    return InvocationRecord(function, function, 1, attempt, "e1", "ok", 0, 10**9, 1024)


def test_metered_usage_is_per_tenant_from_registered_names() -> None:
    records = [
        _record("acme::f"),
        _record("acme::f"),  # the same attempt again: billed once
        _record("acme::f", attempt=2),
        _record("beta::g"),
        _record("ops_function"),
    ]
    usage = metered_usage(records)
    assert sorted(usage) == ["acme", "beta"]
    assert usage["acme"].calls == 2
    assert usage["acme"].gb_seconds == pytest.approx(2.0)


# ---------------------------------------------------------------------- quota gates


def test_the_gate_caps_calls_at_once() -> None:
    gate = Gate("acme", Quotas(max_concurrent=2), now=0.0)
    gate.admit(0.0)
    gate.admit(0.0)
    with pytest.raises(QuotaExceeded):
        gate.admit(0.0)
    gate.release()
    gate.admit(0.0)
    assert gate.running == 2


def test_the_gate_caps_the_rate_with_a_burst() -> None:
    gate = Gate("acme", Quotas(calls_per_s=2.0), now=0.0)
    gate.admit(0.0)
    gate.admit(0.0)  # a burst of two
    with pytest.raises(QuotaExceeded):
        gate.admit(0.1)
    assert gate.running == 2  # the refused call counted nothing
    gate.admit(0.6)  # a token accrued
    with pytest.raises(QuotaExceeded):
        gate.admit(0.6)
    gate.admit(100.0)
    gate.admit(100.0)
    with pytest.raises(QuotaExceeded):
        gate.admit(100.0)  # saved tokens stop at the burst


def test_a_slow_rate_still_allows_one_call() -> None:
    gate = Gate("acme", Quotas(calls_per_s=0.01), now=0.0)
    gate.admit(0.0)
    with pytest.raises(QuotaExceeded):
        gate.admit(50.0)
    gate.admit(100.0)


# ---------------------------------------------------------------------- name mapping


def test_a_tenant_caller_maps_its_names_into_its_namespace() -> None:
    acme = Caller("acme")
    assert acme.function("f") == "acme::f"
    assert acme.function("beta::f") == "acme::beta::f"  # still acme's
    assert keys.tenant_of_function(acme.function("beta::f")) == "acme"
    assert acme.owns_function("acme::f") == "f"
    assert acme.owns_function("beta::f") is None
    assert acme.owns_function("f") is None
    assert acme.kv_prefix == keys.tenant_prefix("acme")
    assert acme.volume("data") == "t.acme.data"
    assert acme.owns_volume("t.acme.data") == "data"
    assert acme.owns_volume("t.acme-2.data") is None
    assert acme.owns_volume("data") is None
    with pytest.raises(ConfigurationError):
        acme.volume("../x")
    with pytest.raises(ConfigurationError):
        acme.volume("x" * 60)  # fits alone, not in the namespace


def test_the_operator_sees_names_as_they_are() -> None:
    assert OPERATOR.function("acme::f") == "acme::f"
    assert OPERATOR.owns_function("acme::f") == "acme::f"
    assert OPERATOR.kv_prefix == ""
    assert OPERATOR.volume("t.acme.data") == "t.acme.data"
