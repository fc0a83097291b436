"""``stratus node --join ADDRESS``: a node agent, this host's executors for a cluster
whose coordinator runs on another host (docs/scaling.md)."""

from __future__ import annotations

import logging
import socket
import sys

import click

from stratus import _exceptions as exc
from stratus import config as cfg


def register(cli: click.Group) -> None:
    """Add ``node`` to the ``stratus`` group."""

    @cli.command()
    @click.option("--join", required=True, help="The coordinator's address, tcp://HOST:PORT.")
    @click.option(
        "--data-dir",
        default=".stratus-node",
        show_default=True,
        type=click.Path(),
        help="This node's directory: its key (unless $STRATUS_KEY), spools and logs.",
    )
    @click.option("--advertise", default="", help="Host clients dial for this node's executors.")
    @click.option("--node-id", default="", help="This node's name (default: the host name).")
    @click.option("--cores", default=0, help="Executors at most (default: the cores we may use).")
    @click.option("--memory-mb", default=0, help="Memory offered (default: the host's).")
    @click.option(
        "--gpus", default=None, help="GPUs offered: a count, or ids 0,1 (default: detected)."
    )
    @click.option(
        "--rejoin",
        default=60.0,
        show_default=True,
        type=click.FloatRange(min=0),
        help="Seconds to find a coordinator again after losing it (0: exit at once).",
    )
    @click.option("--log-level", default="INFO", show_default=True)
    def node(
        join: str,
        data_dir: str,
        advertise: str,
        node_id: str,
        cores: int,
        memory_mb: int,
        gpus: str | None,
        rejoin: float,
        log_level: str,
    ) -> None:
        """Run this host's executors for the cluster at --join, until stopped."""
        from stratus._node import run_executor
        from stratus.server.node import NodeAgent, detect_capacity, parse_gpus

        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        try:
            key = cfg.load_key(None, data_dir)
            ids = None if gpus is None else parse_gpus(gpus)
            capacity = detect_capacity(cores=cores, memory_mb=memory_mb, gpus=ids)
            agent = NodeAgent(
                join,
                key,
                data_dir,
                node_id=node_id or socket.gethostname(),
                capacity=capacity,
                run_executor=run_executor,
                advertise=advertise,
                rejoin=rejoin,
            )
            status = agent.run()
        except exc.StratusError as e:
            raise click.ClickException(str(e)) from None
        if status:
            click.echo(f"stratus node: {agent.stop_reason}", err=True)
        sys.exit(status)
