"""The ``stratus`` command: run a server, look at it, stop it."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from stratus import _exceptions as exc
from stratus import config as cfg

console = Console()
_SERVER_FILE = "server.json"


@click.group()
@click.version_option(package_name="stratus")
def cli() -> None:
    """stratus: a stateful serverless platform for Python."""


@cli.command()
@click.option(
    "--listen",
    default=f"tcp://127.0.0.1:{7070}",
    show_default=True,
    help="Address clients connect to.",
)
@click.option("--data-dir", default=".stratus", show_default=True, type=click.Path())
@click.option("--executors", default=0, help="Executor processes at most (default: one per core).")
@click.option(
    "--store",
    default="",
    help="Where state lives: sqlite:PATH (default: in the data dir), lmdb:PATH, redis://HOST/DB.",
)
@click.option("--preload", multiple=True, help="Module the executors import before starting.")
@click.option("--log-level", default="INFO", show_default=True)
def up(
    listen: str,
    data_dir: str,
    executors: int,
    store: str,
    preload: tuple[str, ...],
    log_level: str,
) -> None:
    """Run a cluster in the foreground as a long-lived server."""
    from stratus.server.coordinator import Coordinator

    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s")
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    key = cfg.new_key()
    key_file = cfg.write_key(key, path)
    config = cfg.ClusterConfig(
        cluster_id=cfg.new_cluster_id(),
        key=key,
        data_dir=str(path.resolve()),
        listen=listen,
        executors=executors,
        store=store,
        preload=list(preload),
        log_level=log_level,
    )
    try:
        coordinator = Coordinator(config)
    except exc.StratusError as e:
        raise click.ClickException(str(e)) from e
    server_file = path / _SERVER_FILE
    address = coordinator.addresses[-1]
    info = {"address": address, "pid": os.getpid(), "cluster_id": config.cluster_id}
    server_file.write_text(json.dumps(info))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: coordinator.stop("signal"))
    coordinator.when_ready(
        lambda: console.print(
            f"[green]stratus[/green] cluster {config.cluster_id} listening on {address} "
            f"with up to {config.pool_size} executors; key in {key_file}"
        )
    )
    try:
        coordinator.run()
    finally:
        server_file.unlink(missing_ok=True)
    console.print(f"stopped: {coordinator.stop_reason}")


@cli.command()
@click.option("--address", default=None, help="Server address (default: from the data dir).")
@click.option("--data-dir", default=".stratus", show_default=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(address: str | None, data_dir: str, as_json: bool) -> None:
    """Show a server's executors, functions, warm pools and DAGs."""
    import msgspec

    reply = _with_client(address, data_dir, lambda client: client.status())
    if as_json:
        fields = msgspec.structs.asdict(reply)
        del fields["rid"]
        click.echo(msgspec.json.encode(fields).decode())
        return
    console.print(f"cluster [bold]{reply.cluster_id}[/bold]")
    table = Table("executor", "pid", "state", "in flight", "served", "loaded")
    for e in reply.executors:
        table.add_row(
            e.executor_id, str(e.pid), e.state, str(e.inflight), str(e.served), ", ".join(e.loaded)
        )
    console.print(table)
    inflight = sum(e.inflight for e in reply.executors)
    console.print(f"{len(reply.executors)} executors, {inflight} calls in flight")
    functions = Table("function", "version", "timeout", "retries", "memory MB", "consistency")
    for f in reply.functions:
        o = f.options
        functions.add_row(
            f.name,
            str(f.version),
            str(o.timeout),
            str(o.retries),
            str(o.resources.memory_mb),
            o.consistency,
        )
    console.print(functions)
    pools = Table("pool", "size", "ready", "starting", "why")
    for p in reply.pools:
        pools.add_row(p.function, str(p.target), str(p.ready), str(p.starting), p.why)
    console.print(pools)
    if reply.dags:
        console.print("DAGs: " + ", ".join(reply.dags))


@cli.command()
@click.option("--address", default=None, help="Server address (default: from the data dir).")
@click.option("--data-dir", default=".stratus", show_default=True, type=click.Path())
def down(address: str | None, data_dir: str) -> None:
    """Stop a server and its executors."""
    _with_client(address, data_dir, lambda client: client.shutdown_cluster())
    console.print("shutdown started")


def _with_client(address: str | None, data_dir: str, action: Any) -> Any:
    from stratus.client.client import Client

    address = address or os.environ.get("STRATUS_ADDRESS") or _server_address(data_dir)
    try:
        client = Client(address, cfg.load_key(None, data_dir))
    except exc.StratusError as e:
        raise click.ClickException(f"cannot reach a server at {address}: {e}") from e
    try:
        return action(client)
    except exc.StratusError as e:
        raise click.ClickException(str(e)) from e
    finally:
        client.close()


def _server_address(data_dir: str) -> str:
    try:
        return str(json.loads((Path(data_dir) / _SERVER_FILE).read_text())["address"])
    except (OSError, ValueError, KeyError):
        return "tcp://127.0.0.1:7070"


def main() -> None:
    cli()
