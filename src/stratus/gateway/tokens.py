"""Bearer tokens of the gateway, kept in the store as hashes only.

A token is 32 random bytes, shown once when it is created. The store keeps the
SHA-256 of it under ``keys.gateway_token(digest)``, holding the name of its owner and
its tenant, so a leaked store never yields a usable token. A token of no tenant is an
*operator* token: it sees the whole cluster and may manage tenants; a tenant's token sees
only that tenant's namespace (``gateway/tenants.py``). SHA-256 without a salt is enough
here: a token has 256 bits of entropy, so there is no dictionary to try.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import msgspec

from stratus._exceptions import ConfigurationError
from stratus.protocol import keys
from stratus.store.base import Store


class TokenRecord(msgspec.Struct, frozen=True):
    """What the store keeps of a token: whose it is, never the token."""

    owner: str
    created_ms: int
    tenant: str | None = None
    """The tenant the token acts as; None: an operator token (records made before
    tenants existed decode as such)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TokenRecord)


def new_token() -> str:
    return "st_" + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """Create, check and revoke gateway tokens.

    >>> token = Tokens(store).create("ops")   # shown once
    >>> Tokens(store).owner(token)
    'ops'
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def create(
        self, owner: str, *, now_ms: int, token: str | None = None, tenant: str | None = None
    ) -> str:
        """A new token for ``owner``: random, or ``token`` when an operator provisions one
        from a secret store (``st_`` and at least 32 more characters); acting as
        ``tenant``, or as the operator when None (``Tenants.token`` makes tenants')."""
        if not owner or len(owner) > 64:
            raise ConfigurationError("a token's owner is a name of 1 to 64 characters")
        if token is None:
            token = new_token()
        elif not token.startswith("st_") or not 35 <= len(token) <= 128:
            raise ConfigurationError("a token is 'st_' and 32 to 125 more characters")
        record = TokenRecord(owner, now_ms, tenant)
        self._store.put(keys.gateway_token(digest(token)), _encoder.encode(record))
        return token

    def owner(self, token: str) -> str | None:
        """The owner of ``token``, or None when it is unknown or revoked."""
        record = self.check(token)
        return None if record is None else record.owner

    def check(self, token: str) -> TokenRecord | None:
        """What the store keeps of ``token``, or None when it is unknown or revoked."""
        if not token.startswith("st_") or len(token) > 128:
            return None
        wanted = digest(token)
        entry = self._store.get(keys.gateway_token(wanted))
        if entry.value is None:
            return None
        # The key was found by the digest; compare it again in constant time anyway, so
        # that no code path ever branches on a partial match of a secret.
        if not hmac.compare_digest(wanted, digest(token)):
            return None
        return _decoder.decode(entry.value)

    def revoke(self, token_or_digest: str) -> bool:
        """Revoke a token, given itself or a prefix (8 hex digits at least) of its hash, as
        ``list`` shows them; False when none, or more than one, matches."""
        if token_or_digest.startswith("st_"):
            matches = [keys.gateway_token(digest(token_or_digest))]
        elif len(token_or_digest) >= 8:
            matches = self._store.keys(keys.GATEWAY_TOKENS + token_or_digest.lower())
        else:
            return False
        if len(matches) != 1 or self._store.get(matches[0]).value is None:
            return False
        self._store.delete(matches[0])
        return True

    def records(self) -> list[tuple[str, TokenRecord]]:
        """``(store key, record)`` of every live token, operators' and tenants'."""
        found = []
        for key in self._store.keys(keys.GATEWAY_TOKENS):
            entry = self._store.get(key)
            if entry.value is not None:
                found.append((key, _decoder.decode(entry.value)))
        return found

    def revoke_tenant(self, tenant: str) -> int:
        """Revoke every token of ``tenant``; how many there were."""
        doomed = [key for key, record in self.records() if record.tenant == tenant]
        for key in doomed:
            self._store.delete(key)
        return len(doomed)

    def list(self) -> list[tuple[str, str, int]]:
        """``(hash prefix, owner, created_ms)`` of every live operator token: enough to
        tell them apart and revoke one, nothing to use."""
        return [
            (key[len(keys.GATEWAY_TOKENS) :][:12], record.owner, record.created_ms)
            for key, record in self.records()
            if record.tenant is None
        ]
