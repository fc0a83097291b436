"""Which cluster a command acts on, wherever it is run from.

A command finds its cluster, first match wins:

1. ``--address`` (its key from ``--data-dir``, ``$STRATUS_KEY`` or ``$STRATUS_KEY_FILE``);
2. ``$STRATUS_ADDRESS``;
3. ``--data-dir``: the server running from that directory (its ``server.json``);
4. the user config, ``$XDG_CONFIG_HOME/stratus/config.toml`` (``~/.config/...``), which
   ``stratus up`` writes with its address, data directory and store.

There is no fallback on the current directory or on port 7070: with none of these, a
command fails and says how to name a cluster. Commands that open the store itself
(``volume``, ``mount``) find it by ``--store``, ``--data-dir``, or the user config.
Every command says on stderr which cluster it acted on (``Target.describe``).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click

from stratus import _exceptions as exc
from stratus import config as cfg

SERVER_FILE = "server.json"
"""In a server's data dir while it runs: its address, pid and cluster id."""

_NO_CLUSTER = (
    "no cluster given: start one with `stratus up`, or pass --address "
    "(or set STRATUS_ADDRESS) or --data-dir"
)


def config_path() -> Path:
    """The user-level config file (it may not exist)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "stratus" / "config.toml"


@dataclass(frozen=True)
class UserConfig:
    """What ``stratus up`` last wrote: the default cluster of every command."""

    address: str
    data_dir: str
    store: str  # the store URL, always explicit

    @staticmethod
    def read() -> UserConfig | None:
        path = config_path()
        try:
            data = tomllib.loads(path.read_text())
            return UserConfig(str(data["address"]), str(data["data_dir"]), str(data["store"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as e:
            raise click.ClickException(f"{path} is not a stratus config: {e}") from None

    def write(self) -> Path:
        """Write it (owner-only), replacing the file at once so readers never see half."""
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Written by `stratus up`: the cluster stratus commands use by default.",
            *(f"{name} = {json.dumps(value)}" for name, value in vars(self).items()),
        ]
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(partial, path)
        return path


@dataclass(frozen=True)
class Target:
    """A cluster found for a command: its address, its data dir if known, and how."""

    address: str
    data_dir: str | None
    source: str

    def key(self) -> bytes:
        """Its key: ``$STRATUS_KEY``, ``$STRATUS_KEY_FILE`` or ``<data dir>/key``."""
        if self.data_dir is None and not (
            os.environ.get("STRATUS_KEY") or os.environ.get("STRATUS_KEY_FILE")
        ):
            raise click.ClickException(
                f"no key for the cluster at {self.address}: pass --data-dir "
                "or set STRATUS_KEY / STRATUS_KEY_FILE"
            )
        try:
            return cfg.load_key(None, self.data_dir or ".")
        except exc.ConfigurationError as e:
            raise click.ClickException(str(e)) from e

    def describe(self, cluster_id: str = "") -> str:
        where = f" (data dir {self.data_dir})" if self.data_dir else ""
        named = f"cluster {cluster_id} at " if cluster_id else ""
        return f"{named}{self.address}{where}, from {self.source}"


def find(address: str | None, data_dir: str | None) -> Target:
    """The cluster that ``--address`` / ``--data-dir`` (or their defaults) name."""
    directory = str(Path(data_dir).absolute()) if data_dir else None
    user = UserConfig.read()
    if address or os.environ.get("STRATUS_ADDRESS"):
        source = "--address" if address else "$STRATUS_ADDRESS"
        address = address or os.environ["STRATUS_ADDRESS"]
        if directory is None and user is not None and user.address == address:
            directory = user.data_dir
        return Target(address, directory, source)
    if directory is not None:
        server_file = Path(directory) / SERVER_FILE
        try:
            running = json.loads(server_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            raise click.ClickException(
                f"no server is running from {directory} (no readable {SERVER_FILE})"
            ) from None
        return Target(str(running), directory, str(server_file))
    if user is None:
        raise click.ClickException(_NO_CLUSTER)
    return Target(user.address, user.data_dir, str(config_path()))


def find_store(store: str, data_dir: str | None) -> tuple[str, str]:
    """The store URL that ``--store`` / ``--data-dir`` or the user config name, and how
    it was found. Only an explicit ``--store`` or ``--data-dir`` may make a new store."""
    if store:
        return store, "--store"
    if data_dir:
        path = Path(data_dir).absolute()
        path.mkdir(parents=True, exist_ok=True)
        return f"sqlite:{path / 'state.db'}", "--data-dir"
    user = UserConfig.read()
    if user is None:
        raise click.ClickException(
            "no store given: start a cluster with `stratus up`, or pass --store or --data-dir"
        )
    return user.store, str(config_path())
