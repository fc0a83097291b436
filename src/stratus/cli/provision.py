"""``stratus provision ray|local``: run a cluster's node agents through a provisioner, in
the foreground, until stopped (docs/scaling.md)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import click

from stratus import _exceptions as exc
from stratus import config as cfg
from stratus.provision.sizing import SizingConfig

_SYNC_HELP = "Seconds between looks for new, lost or exited agents (and, autoscaling, demand)."


def _autoscale_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--autoscale`` and its bounds, shared by every provisioner's command."""
    options = [
        click.option(
            "--autoscale",
            is_flag=True,
            help="Run as many agents as the pools need, instead of --nodes.",
        ),
        click.option("--min-nodes", default=0, show_default=True, help="Autoscaling: at least."),
        click.option("--max-nodes", default=4, show_default=True, help="Autoscaling: at most."),
        click.option(
            "--node-keep-alive",
            default=300.0,
            show_default=True,
            help="Autoscaling: seconds a node stays without executors before it is stopped.",
        ),
        click.option(
            "--join-timeout",
            default=120.0,
            show_default=True,
            help="Autoscaling: seconds a new node has to join before it is given up.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _sizing(options: dict[str, Any]) -> SizingConfig | None:
    """The autoscaling bounds from the command's options; None without --autoscale."""
    if not options.pop("autoscale"):
        for name in ("min_nodes", "max_nodes", "node_keep_alive", "join_timeout"):
            options.pop(name)
        return None
    return SizingConfig(
        min_nodes=options.pop("min_nodes"),
        max_nodes=options.pop("max_nodes"),
        keep_alive=options.pop("node_keep_alive"),
        join_timeout=options.pop("join_timeout"),
    )


def register(cli: click.Group) -> None:
    """Add the ``provision`` group to the ``stratus`` group."""

    @cli.group()
    def provision() -> None:
        """Run node agents for a cluster: on a Ray cluster, or as local processes."""

    join_option = click.option(
        "--join", required=True, help="The coordinator's address, tcp://HOST:PORT."
    )
    key_option = click.option(
        "--data-dir",
        default=".stratus",
        show_default=True,
        type=click.Path(),
        help="Where the cluster key is (unless $STRATUS_KEY or $STRATUS_KEY_FILE).",
    )

    @provision.command("ray")
    @join_option
    @key_option
    @click.option("--address", default="auto", show_default=True, help="auto, HOST:PORT or ray://")
    @click.option("--nodes", default=None, type=int, help="Agents to run (default: every node).")
    @click.option("--cpus", default=None, type=float, help="CPUs per agent (default: the node's).")
    @click.option("--memory-mb", default=0, help="Memory reserved per agent (default: none).")
    @click.option("--gpus", default=None, type=float, help="GPUs per agent (default: the node's).")
    @click.option("--base-dir", default="/tmp/stratus-ray", show_default=True, help="Agents' dirs.")
    @click.option("--sync-interval", default=5.0, show_default=True, help=_SYNC_HELP)
    @click.option("--log-level", default="INFO", show_default=True)
    @_autoscale_options
    def provision_ray(
        join: str,
        data_dir: str,
        address: str,
        nodes: int | None,
        cpus: float | None,
        memory_mb: int,
        gpus: float | None,
        base_dir: str,
        sync_interval: float,
        log_level: str,
        **autoscaling: Any,
    ) -> None:
        """One node agent per Ray node, each a Ray actor holding its resources."""
        from stratus.provision.ray_nodes import RayProvisioner

        _configure_logging(log_level)
        sizing = _sizing(autoscaling)

        def build() -> RayProvisioner:
            key = cfg.load_key(None, data_dir)
            return RayProvisioner(
                join, key, address=address, cpus=cpus, memory_mb=memory_mb, gpus=gpus,
                base_dir=base_dir,
            )  # fmt: skip

        def first(p: RayProvisioner) -> Any:
            return p.start() if nodes is None else p.scale(nodes)

        _serve(build, first, lambda p: p.sync(), sync_interval, join, data_dir, sizing)

    @provision.command("local")
    @join_option
    @key_option
    @click.option("--nodes", default=1, show_default=True, help="Agents to run.")
    @click.option("--cores", default=0, help="Cores per agent (default: detected).")
    @click.option("--memory-mb", default=0, help="Memory per agent (default: detected).")
    @click.option(
        "--gpus", default=None, help="GPUs per agent: a count, or ids 0,1 (default: detected)."
    )
    @click.option("--base-dir", default=".stratus-nodes", show_default=True, help="Agents' dirs.")
    @click.option("--advertise", default="", help="Host clients dial for the agents' executors.")
    @click.option("--sync-interval", default=5.0, show_default=True, help=_SYNC_HELP)
    @click.option("--log-level", default="INFO", show_default=True)
    @_autoscale_options
    def provision_local(
        join: str,
        data_dir: str,
        nodes: int,
        cores: int,
        memory_mb: int,
        gpus: str | None,
        base_dir: str,
        advertise: str,
        sync_interval: float,
        log_level: str,
        **autoscaling: Any,
    ) -> None:
        """Node agents as processes of this machine (a big machine split into nodes)."""
        from stratus.provision.local import LocalProvisioner
        from stratus.server.node import parse_gpus

        _configure_logging(log_level)
        sizing = _sizing(autoscaling)
        gpu_ids = None if gpus is None else tuple(parse_gpus(gpus))

        def build() -> LocalProvisioner:
            key = cfg.load_key(None, data_dir)
            return LocalProvisioner(
                join, key, base_dir, nodes=nodes, cores=cores, memory_mb=memory_mb,
                gpus=gpu_ids, advertise=advertise,
            )  # fmt: skip

        again = lambda p: p.scale(nodes)  # noqa: E731
        _serve(build, lambda p: p.start(), again, sync_interval, join, data_dir, sizing)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(message)s")


def _serve(
    build: Callable[[], Any],
    first: Callable[[Any], Any],
    again: Callable[[Any], Any],
    interval: float,
    join: str,
    data_dir: str,
    sizing: SizingConfig | None,
) -> None:
    """Start the agents, re-sync every ``interval`` until SIGTERM/SIGINT, stop them.
    Autoscaling (``sizing``), each re-sync also polls the coordinator's demand."""
    try:
        provisioner = build()
        if sizing is not None:
            from stratus.provision.demand import CoordinatorDemand, NodeScaler
            from stratus.provision.sizing import NodeSizing

            demand = CoordinatorDemand(join, cfg.load_key(None, data_dir))
            scaler = NodeScaler(provisioner, demand, NodeSizing(sizing, provisioner.shape()))
            first = again = lambda p: scaler.step()
    except exc.StratusError as e:
        raise click.ClickException(str(e)) from None
    # After build(): ray.init installs its own SIGTERM handler, which would exit at once.
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        _print(first(provisioner))
        while not stopping.wait(interval):
            again(provisioner)
    except exc.StratusError as e:
        raise click.ClickException(str(e)) from None
    finally:
        provisioner.stop()
    click.echo("stratus provision: agents stopped")


def _print(agents: Any) -> None:
    for agent in agents:
        click.echo(f"agent {agent.node_id} on {agent.where}, pid {agent.pid}")
    click.echo(f"stratus provision: {len(agents)} agents running", err=False)
