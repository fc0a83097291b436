"""The ``stratus`` command: run a server, look at it, stop it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from stratus import _exceptions as exc
from stratus import config as cfg
from stratus.cli import calls, gateway, observe, provision
from stratus.cli import node as node_command
from stratus.cli.target import SERVER_FILE, Target, UserConfig, find, find_store

# Piped output is not cut to 80 columns: tables are as wide as their contents.
console = Console(width=None if sys.stdout.isatty() else 100_000)


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
@click.option(
    "--advertise",
    default="",
    callback=lambda ctx, param, value: _check_advertise(value),
    help="Host executors give clients (default: the listen host; for 0.0.0.0, this host's IP).",
)
@click.option("--data-dir", default=".stratus", show_default=True, type=click.Path())
@click.option("--executors", default=0, help="Executor processes at most (default: one per core).")
@click.option(
    "--store",
    default="",
    help=(
        "Where state lives: sqlite:PATH (default: in the data dir), lmdb:PATH, redis://HOST/DB,"
        " redis-cluster://HOST:PORT[,HOST:PORT...] (docs/store.md)."
    ),
)
@click.option("--preload", multiple=True, help="Module the executors import before starting.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--metrics",
    default="",
    help="Serve Prometheus metrics on HOST:PORT (e.g. 127.0.0.1:9464; port 0: any).",
)
@click.option("--http", default="", help="Also serve the HTTP gateway on HOST:PORT (docs/http.md).")
@click.option(
    "--key-file",
    default="",
    type=click.Path(dir_okay=False),
    help="The cluster key (hex), given to every host that may run the coordinator "
    "(also $STRATUS_KEY, $STRATUS_KEY_FILE; default: the data dir's key, made if missing).",
)
@click.option(
    "--lease",
    default=10.0,
    type=click.FloatRange(min=0, min_open=True),
    show_default=True,
    help="Seconds without a renewal before another host may take a dead coordinator over.",
)
def up(
    listen: str,
    advertise: str,
    data_dir: str,
    executors: int,
    store: str,
    preload: tuple[str, ...],
    log_level: str,
    metrics: str,
    http: str,
    key_file: str,
    lease: float,
) -> None:
    """Run a cluster in the foreground as a long-lived server."""
    from stratus import _node

    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s")
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    key, key_source = _server_key(path, key_file)
    config = cfg.ClusterConfig(
        cluster_id=cfg.new_cluster_id(),
        key=key,
        lease=lease,
        data_dir=str(path.resolve()),
        listen=listen,
        advertise=advertise,
        executors=executors,
        store=store,
        preload=list(preload),
        log_level=log_level,
        metrics=metrics,
    )
    try:
        coordinator = _node.coordinator(config)
    except exc.StratusError as e:
        raise click.ClickException(str(e)) from e
    server_file = path / SERVER_FILE
    address = coordinator.addresses[-1]
    info = {"address": address, "pid": os.getpid(), "cluster_id": config.cluster_id}
    server_file.write_text(json.dumps(info))
    user_config = UserConfig(address, config.data_dir, config.store_url).write()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: coordinator.stop("signal"))
    progress = _StartProgress(coordinator, config.pool_size)

    def ready() -> None:
        progress.stop()
        console.print(
            f"[green]stratus[/green] cluster {config.cluster_id} listening on {address} "
            f"with up to {config.pool_size} executors; key in {key_source}"
        )
        functions = len(coordinator.registry.functions)
        if functions:
            console.print(f"{functions} functions and {len(coordinator.registry.dags)} DAGs kept")
        console.print(f"the default cluster of stratus commands ({user_config})")
        if coordinator.observer.metrics.address:
            console.print(f"metrics on http://{coordinator.observer.metrics.address}/metrics")
        if http:
            children.append(gateway.start(address, config.data_dir, config.store_url, http))
            console.print(f"HTTP gateway on http://{http} (tokens: `stratus token create`)")

    children: list[Any] = []
    coordinator.when_ready(ready)
    try:
        coordinator.run()
    finally:
        progress.stop()
        server_file.unlink(missing_ok=True)
        for child in children:
            child.terminate()
            child.wait()
    console.print(f"stopped: {coordinator.stop_reason}")
    sys.exit(coordinator.exit_status)  # 1: it lost the store's lease to another coordinator


def _check_advertise(host: str) -> str:
    from stratus.transport.addresses import check_host

    try:
        return check_host(host) if host else ""
    except exc.ConfigurationError as e:
        raise click.BadParameter(str(e)) from None


def _server_key(data_dir: Path, key_file: str) -> tuple[bytes, str]:
    """The key given out of band (``--key-file``, ``$STRATUS_KEY``, ``$STRATUS_KEY_FILE``:
    the same on every host that may run the coordinator), else the key in ``data_dir`` (a
    restart keeps it, so clients and the stored registry stay valid), or a new one written
    there; and where it came from."""
    if source := cfg.key_given(key_file):
        try:
            return cfg.load_key(None, data_dir, key_file=key_file), source
        except exc.ConfigurationError as e:
            raise click.ClickException(f"cannot use the key in {source}: {e}") from e
    path = data_dir / "key"
    try:
        return cfg.load_key(path.read_text().strip(), data_dir), str(path)
    except FileNotFoundError:
        key = cfg.new_key()
        return key, cfg.write_key(key, data_dir)
    except (OSError, exc.ConfigurationError) as e:
        raise click.ClickException(f"cannot use the key in {path}: {e}") from e


class _StartProgress:
    """A progress bar of the executors that said hello, until the pool is ready."""

    def __init__(self, coordinator: Any, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.coordinator = coordinator
        self.bar = Progress(
            TextColumn("starting executors"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task("executors", total=total)
        self.bar.start()
        self._update()

    def _update(self) -> None:
        if self.bar.live.is_started:
            ready = len(self.coordinator.scheduler.ready())
            self.bar.update(self.task, completed=ready)
            self.coordinator.reactor.call_later(0.05, self._update)

    def stop(self) -> None:
        if self.bar.live.is_started:
            self.bar.stop()


_ADDRESS_HELP = "Server address (default: $STRATUS_ADDRESS, --data-dir, the user config)."
_DATA_DIR_HELP = "The server's data dir: its key, and its address while it runs."
address_option = click.option("--address", default=None, help=_ADDRESS_HELP)
data_dir_option = click.option("--data-dir", default=None, type=click.Path(), help=_DATA_DIR_HELP)


@cli.command()
@address_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(address: str | None, data_dir: str | None, as_json: bool) -> None:
    """Show a server's executors, functions, warm pools and DAGs."""
    import msgspec

    reply = _with_client(address, data_dir, lambda client: client.status())
    if as_json:
        fields = msgspec.structs.asdict(reply)
        del fields["rid"]
        click.echo(msgspec.json.encode(fields).decode())
        return
    console.print(f"cluster [bold]{reply.cluster_id}[/bold]")
    table = Table("executor", "node", "pid", "state", "in flight", "served", "loaded")
    for e in reply.executors:
        table.add_row(
            e.executor_id,
            e.node,
            str(e.pid),
            e.state,
            str(e.inflight),
            str(e.served),
            ", ".join(e.loaded),
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
    pools = Table("pool", "size", "ready", "starting", "since", "why")
    for p in reply.pools:
        since = _local_time(p.changed_at) if p.changed_at else ""
        pools.add_row(p.function, str(p.target), str(p.ready), str(p.starting), since, p.why)
    console.print(pools)
    if reply.dags:
        console.print("DAGs: " + ", ".join(reply.dags))
    if reply.metrics:
        console.print(f"metrics: http://{reply.metrics}/metrics")


def _local_time(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M:%S")


@cli.command()
@address_option
@data_dir_option
def down(address: str | None, data_dir: str | None) -> None:
    """Stop a server and its executors."""
    _with_client(address, data_dir, lambda client: client.shutdown_cluster())
    console.print("shutdown started")


@cli.group()
def volume() -> None:
    """Create, list and delete file-system volumes (in the cluster's store)."""


_store_option = click.option(
    "--store",
    default="",
    help="The cluster's store URL (default: sqlite in --data-dir, else the user config's).",
)
_data_dir_option = click.option(
    "--data-dir", default=None, type=click.Path(), help="The data dir of the cluster's store."
)


def _with_volumes(store: str, data_dir: str | None, action: Any) -> Any:
    from stratus.fs import Volumes
    from stratus.kv.open import open_store

    url, source = find_store(store, data_dir)
    click.echo(f"stratus: store {url}, from {source}", err=True)
    try:
        with open_store(url) as opened:
            return action(Volumes(opened))
    except (exc.StratusError, OSError) as e:
        raise click.ClickException(str(e)) from e


@volume.command("create")
@click.argument("name")
@_store_option
@_data_dir_option
def volume_create(name: str, store: str, data_dir: str | None) -> None:
    """Create the volume NAME."""
    _with_volumes(store, data_dir, lambda volumes: volumes.create(name))
    console.print(f"created volume {name}")


@volume.command("list")
@_store_option
@_data_dir_option
def volume_list(store: str, data_dir: str | None) -> None:
    """List the volumes, one per line."""
    for name in _with_volumes(store, data_dir, lambda volumes: volumes.list()):
        click.echo(name)


@volume.command("delete")
@click.argument("name")
@_store_option
@_data_dir_option
def volume_delete(name: str, store: str, data_dir: str | None) -> None:
    """Delete the volume NAME and everything in it."""
    _with_volumes(store, data_dir, lambda volumes: volumes.delete(name))
    console.print(f"deleted volume {name}")


@cli.command()
@click.argument("volume")
@click.argument("directory", type=click.Path())
@_data_dir_option
@_store_option
@click.option("--foreground", is_flag=True, help="Serve here until unmounted.")
@click.option("--create", is_flag=True, help="Create the volume if it does not exist.")
@click.option("--cache-timeout", default=1.0, show_default=True, help="Kernel cache, seconds.")
@click.option("--log-level", default="WARNING", show_default=True)
def mount(volume: str, directory: str, **options: Any) -> None:
    """Mount VOLUME at DIRECTORY (an empty directory) as a FUSE file system."""
    from stratus.cli import mount as fuse_mount

    data_dir = options.pop("data_dir")
    url, source = find_store(options.pop("store"), data_dir)
    click.echo(f"stratus: store {url}, from {source}", err=True)
    if not data_dir:  # where a detached mount writes its log
        user = UserConfig.read()
        data_dir = user.data_dir if user is not None else ".stratus"
    fuse_mount.mount(volume, directory, data_dir=data_dir, store=url, **options)


@cli.command()
@click.argument("directory", type=click.Path())
def umount(directory: str) -> None:
    """Unmount a volume mounted with `stratus mount`."""
    from stratus.cli import mount as fuse_mount

    fuse_mount.umount(directory)


def _with_client(address: str | None, data_dir: str | None, action: Any) -> Any:
    """Run ``action(client)`` on the cluster that the options name (``target.py``)."""
    return _on_target(find(address, data_dir), action)


def _on_target(target: Target, action: Any) -> Any:
    from stratus.client.client import Client

    key = target.key()
    try:
        client = Client(target.address, key)
    except exc.StratusError as e:
        raise click.ClickException(
            f"cannot reach a server at {target.address} ({target.source}): {e}"
        ) from e
    click.echo(f"stratus: {target.describe(client.cluster_id)}", err=True)
    try:
        return action(client)
    except exc.StratusError as e:
        raise click.ClickException(str(e)) from e
    finally:
        client.close()


observe.register(cli, _with_client, console, address_option, data_dir_option)
calls.register(cli, _with_client, address_option, data_dir_option)
gateway.register(cli, address_option, data_dir_option)
node_command.register(cli)
provision.register(cli)


def main() -> None:
    cli()
