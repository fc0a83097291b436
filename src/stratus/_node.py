"""A cluster node's wiring: the one place where the server side meets the client SDK.

``stratus.server`` never imports ``stratus.client``. An executor's nested calls
(``ctx.call``) still need the client's placement, retries and futures, so the
executor is given a ``Client`` over its own reactor as its ``server.link.Caller``;
``run_executor`` does that in each forked executor, and ``coordinator`` builds a
coordinator whose fork server runs it. ``stratus up`` (``cli/main.py``) and
``python -m stratus._node`` both start their coordinator here.

``python -m stratus._node``: the coordinator process of an embedded cluster. The parent
writes the cluster configuration as one JSON line on our stdin and keeps stdin open:
its end of file means the parent is gone, and the cluster stops. When the first pool of
executors is ready we write our address to ``--ready-fd``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from stratus import config as cfg
from stratus._exceptions import ConfigurationError, StratusError
from stratus.client.client import Client
from stratus.server.cgroups import ExecutorGroup
from stratus.server.coordinator import Coordinator
from stratus.transport.reactor import Reactor


def run_executor(config: cfg.ClusterConfig, executor_id: str, cgroup: ExecutorGroup | None) -> None:
    """Run executor ``executor_id`` in this (forked) process until it is done."""
    from stratus.server.executor import Executor  # the fork server has imported it

    def caller(reactor: Reactor) -> Client:
        return Client(
            config.coordinator_address,
            config.key,
            max_payload=config.max_payload,
            reactor=reactor,
            client_id=executor_id,
            nested=True,
        )

    Executor(config, executor_id, caller=caller, cgroup=cgroup).run()


def coordinator(config: cfg.ClusterConfig) -> Coordinator:
    """A coordinator for ``config`` whose executors can make nested calls."""
    return Coordinator(config, run_executor=run_executor)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stratus._node")
    parser.add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args()
    config = cfg.decode(sys.stdin.buffer.readline())
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(process)d %(name)s: %(message)s"
    )
    sys.path[:0] = [p for p in config.sys_path if p not in sys.path]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    try:
        _check_same_stratus(config.sys_path)
        node = coordinator(config)
    except StratusError as e:  # tell the parent why, rather than only dying
        os.write(args.ready_fd, json.dumps({"error": str(e)}).encode() + b"\n")
        sys.exit(1)
    signal.signal(signal.SIGTERM, lambda *_: node.stop("SIGTERM"))
    node.watch_lifeline(sys.stdin.fileno())

    def ready() -> None:
        os.write(args.ready_fd, json.dumps({"address": node.addresses[0]}).encode() + b"\n")
        os.close(args.ready_fd)

    node.when_ready(ready)
    node.run()


def _check_same_stratus(parent_path: list[str]) -> None:
    """Refuse to run another checkout's code than the parent's. The parent's path is
    applied only now, after this process imported ``stratus`` as its own interpreter
    finds it (its venv, ``PYTHONPATH``): a parent that put another ``src`` on
    ``sys.path`` by hand would get a coordinator and executors of other code."""
    ours = Path(cfg.__file__).resolve().parent  # stratus/config.py: the package's directory
    for entry in parent_path:
        theirs = Path(entry, "stratus", "__init__.py")
        if theirs.is_file():
            if theirs.resolve().parent != ours:
                raise ConfigurationError(
                    f"the caller imports stratus from {theirs.parent}, but {sys.executable} "
                    f"imports it from {ours}: run the caller with that checkout's interpreter"
                )
            return


if __name__ == "__main__":
    main()
