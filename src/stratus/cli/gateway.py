"""``stratus gateway`` (the HTTP gateway of a running cluster), ``stratus token`` (its
operators' bearer tokens, kept hashed in the cluster's store) and ``stratus tenant`` (its
tenants, their quotas, usage and tokens)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from stratus.cli.target import find, find_store

Option = Callable[[Any], Any]


def with_store(store: str, data_dir: str | None, action: Callable[[Any], Any]) -> Any:
    """``action`` of the cluster's store (found as the other commands find it), closed after."""
    from stratus.kv.open import open_store

    url, source = find_store(store, data_dir)
    click.echo(f"stratus: store {url}, from {source}", err=True)
    opened = open_store(url)
    try:
        return action(opened)
    finally:
        opened.close()


def start(address: str, data_dir: str, store: str, http: str) -> subprocess.Popen[bytes]:
    """The gateway as a child process of ``stratus up`` (its own interpreter: the HTTP
    work never competes with the coordinator's loop for the GIL)."""
    args = [sys.executable, "-m", "stratus.gateway", "--address", address]
    args += ["--data-dir", data_dir, "--store", store, "--http", http, "--parent", str(os.getpid())]
    return subprocess.Popen(args)


def register(cli: click.Group, address_option: Option, data_dir_option: Option) -> None:
    """Add ``gateway``, ``token`` and ``tenant`` to the ``stratus`` group."""

    @cli.command()
    @address_option
    @data_dir_option
    @click.option("--store", default="", help="The cluster's store URL (default: as found).")
    @click.option("--http", default="127.0.0.1:8080", show_default=True, help="HOST:PORT.")
    def gateway(address: str | None, data_dir: str | None, store: str, http: str) -> None:
        """Serve the HTTP gateway of a cluster in the foreground (docs/http.md)."""
        from stratus.gateway.__main__ import main as serve

        target = find(address, data_dir)
        url, _ = find_store(store, target.data_dir)
        click.echo(f"stratus: {target.describe()}; store {url}", err=True)
        target.key()  # a clear error now if there is none
        serve(["--address", target.address, "--data-dir", target.data_dir or ".", "--store", url,
               "--http", http])  # fmt: skip

    @cli.group()
    def token() -> None:
        """Bearer tokens of the HTTP gateway."""

    def tokens(store: str, data_dir: str | None, action: Callable[[Any], Any]) -> Any:
        from stratus.gateway.tokens import Tokens

        return with_store(store, data_dir, lambda opened: action(Tokens(opened)))

    store_option = click.option("--store", default="", help="The cluster's store URL.")

    @token.command("create")
    @click.argument("owner")
    @store_option
    @data_dir_option
    def token_create(owner: str, store: str, data_dir: str | None) -> None:
        """Make a token for OWNER and print it (it is shown this once)."""
        now_ms = time.time_ns() // 1_000_000
        click.echo(tokens(store, data_dir, lambda t: t.create(owner, now_ms=now_ms)))

    @token.command("list")
    @store_option
    @data_dir_option
    def token_list(store: str, data_dir: str | None) -> None:
        """The tokens: the start of each one's hash, its owner, when it was made."""
        for digest, owner, created_ms in tokens(store, data_dir, lambda t: t.list()):
            made = dt.datetime.fromtimestamp(created_ms / 1000).isoformat(timespec="seconds")
            click.echo(f"{digest}  {owner}  {made}")

    @token.command("revoke")
    @click.argument("token_or_digest")
    @store_option
    @data_dir_option
    def token_revoke(token_or_digest: str, store: str, data_dir: str | None) -> None:
        """Revoke a token, given itself or the start of its hash (from `token list`)."""
        if not tokens(store, data_dir, lambda t: t.revoke(token_or_digest)):
            raise click.ClickException(f"no token matches {token_or_digest!r}")
        click.echo("revoked")

    register_tenant(cli, store_option, data_dir_option)


def register_tenant(cli: click.Group, store_option: Option, data_dir_option: Option) -> None:
    """Add ``tenant create|list|token|delete`` to the ``stratus`` group."""
    from stratus._exceptions import StratusError

    @cli.group()
    def tenant() -> None:
        """Tenants of the HTTP gateway: namespaces, quotas, usage, tokens (docs/http.md)."""

    def tenants(store: str, data_dir: str | None, action: Callable[[Any], Any]) -> Any:
        from stratus.gateway.tenants import Tenants

        try:
            return with_store(store, data_dir, lambda opened: action(Tenants(opened)))
        except StratusError as e:
            raise click.ClickException(str(e)) from None

    @tenant.command("create")
    @click.argument("name")
    @click.option("--max-concurrent", type=int, default=None, help="Calls at once.")
    @click.option("--calls-per-s", type=float, default=None, help="Calls per second.")
    @click.option("--stored-bytes", type=int, default=None, help="Bytes of kv values and files.")
    @store_option
    @data_dir_option
    def tenant_create(
        name: str,
        max_concurrent: int | None,
        calls_per_s: float | None,
        stored_bytes: int | None,
        store: str,
        data_dir: str | None,
    ) -> None:
        """Make the tenant NAME (quotas left out are unlimited)."""
        from stratus.gateway.tenants import Quotas

        quotas = Quotas(max_concurrent, calls_per_s, stored_bytes)
        now_ms = time.time_ns() // 1_000_000
        tenants(store, data_dir, lambda t: t.create(name, quotas, now_ms=now_ms))
        click.echo(f"created tenant {name}")

    @tenant.command("list")
    @store_option
    @data_dir_option
    def tenant_list(store: str, data_dir: str | None) -> None:
        """The tenants: quotas, then usage (metered calls, GB-s, stored bytes)."""

        def listing(t: Any) -> list[tuple[Any, Any]]:
            usage = t.usage()
            return [(record, usage[record.name]) for record in t.list()]

        for record, used in tenants(store, data_dir, listing):
            q = record.quotas
            limits = (f"{what}={'-' if value is None else value}" for what, value in (
                ("max_concurrent", q.max_concurrent), ("calls_per_s", q.calls_per_s),
                ("stored_bytes", q.stored_bytes)))  # fmt: skip
            click.echo(
                f"{record.name}  {' '.join(limits)}  calls={used.calls} "
                f"gb_s={used.gb_seconds:.6f} stored_bytes={used.stored_bytes}"
            )

    @tenant.command("token")
    @click.argument("name")
    @store_option
    @data_dir_option
    def tenant_token(name: str, store: str, data_dir: str | None) -> None:
        """Make a token of the tenant NAME and print it (it is shown this once)."""
        now_ms = time.time_ns() // 1_000_000
        click.echo(tenants(store, data_dir, lambda t: t.token(name, now_ms=now_ms)))

    @tenant.command("delete")
    @click.argument("name")
    @store_option
    @data_dir_option
    def tenant_delete(name: str, store: str, data_dir: str | None) -> None:
        """Revoke the tenant's tokens and forget it; its data and functions stay."""
        revoked = tenants(store, data_dir, lambda t: t.delete(name))
        click.echo(f"deleted tenant {name}; {revoked} tokens revoked; its data is kept")
