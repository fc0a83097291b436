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

_SYNC_HELP = "Seconds between looks for new, lost or exited agents."


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
    ) -> None:
        """One node agent per Ray node, each a Ray actor holding its resources."""
        from stratus.provision.ray_nodes import RayProvisioner

        _configure_logging(log_level)

        def build() -> RayProvisioner:
            key = cfg.load_key(None, data_dir)
            return RayProvisioner(
                join, key, address=address, cpus=cpus, memory_mb=memory_mb, gpus=gpus,
                base_dir=base_dir,
            )  # fmt: skip

        def first(p: RayProvisioner) -> Any:
            return p.start() if nodes is None else p.scale(nodes)

        _serve(build, first, lambda p: p.sync(), sync_interval)

    @provision.command("local")
    @join_option
    @key_option
    @click.option("--nodes", default=1, show_default=True, help="Agents to run.")
    @click.option("--cores", default=0, help="Cores per agent (default: detected).")
    @click.option("--memory-mb", default=0, help="Memory per agent (default: detected).")
    @click.option("--gpus", default=None, type=int, help="GPUs per agent (default: detected).")
    @click.option("--base-dir", default=".stratus-nodes", show_default=True, help="Agents' dirs.")
    @click.option("--advertise", default="", help="Host clients dial for the agents' executors.")
    @click.option("--sync-interval", default=5.0, show_default=True, help=_SYNC_HELP)
    @click.option("--log-level", default="INFO", show_default=True)
    def provision_local(
        join: str,
        data_dir: str,
        nodes: int,
        cores: int,
        memory_mb: int,
        gpus: int | None,
        base_dir: str,
        advertise: str,
        sync_interval: float,
        log_level: str,
    ) -> None:
        """Node agents as processes of this machine (a big machine split into nodes)."""
        from stratus.provision.local import LocalProvisioner

        _configure_logging(log_level)

        def build() -> LocalProvisioner:
            key = cfg.load_key(None, data_dir)
            return LocalProvisioner(
                join, key, base_dir, nodes=nodes, cores=cores, memory_mb=memory_mb, gpus=gpus,
                advertise=advertise,
            )  # fmt: skip

        _serve(build, lambda p: p.start(), lambda p: p.scale(nodes), sync_interval)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(message)s")


def _serve(
    build: Callable[[], Any],
    first: Callable[[Any], Any],
    again: Callable[[Any], Any],
    interval: float,
) -> None:
    """Start the agents, re-sync every ``interval`` until SIGTERM/SIGINT, stop them."""
    try:
        provisioner = build()
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
