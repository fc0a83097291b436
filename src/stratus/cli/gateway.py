"""``stratus gateway`` (the HTTP gateway of a running cluster) and ``stratus token``
(its bearer tokens, kept hashed in the cluster's store)."""

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


def start(address: str, data_dir: str, store: str, http: str) -> subprocess.Popen[bytes]:
    """The gateway as a child process of ``stratus up`` (its own interpreter: the HTTP
    work never competes with the coordinator's loop for the GIL)."""
    args = [sys.executable, "-m", "stratus.gateway", "--address", address]
    args += ["--data-dir", data_dir, "--store", store, "--http", http, "--parent", str(os.getpid())]
    return subprocess.Popen(args)


def register(cli: click.Group, address_option: Option, data_dir_option: Option) -> None:
    """Add ``gateway`` and ``token`` to the ``stratus`` group."""

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
        from stratus.kv.open import open_store

        url, source = find_store(store, data_dir)
        click.echo(f"stratus: store {url}, from {source}", err=True)
        opened = open_store(url)
        try:
            return action(Tokens(opened))
        finally:
            opened.close()

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
