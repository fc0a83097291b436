"""``python -m stratus.server``: the coordinator process of an embedded cluster.

The parent writes the cluster configuration as one JSON line on our stdin and keeps
stdin open: its end of file means the parent is gone, and the cluster stops. When the
first pool of executors is ready we write our address to ``--ready-fd``.
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
from stratus.server.coordinator import Coordinator


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stratus.server")
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
        coordinator = Coordinator(config)
    except StratusError as e:  # tell the parent why, rather than only dying
        os.write(args.ready_fd, json.dumps({"error": str(e)}).encode() + b"\n")
        sys.exit(1)
    signal.signal(signal.SIGTERM, lambda *_: coordinator.stop("SIGTERM"))
    coordinator.watch_lifeline(sys.stdin.fileno())

    def ready() -> None:
        os.write(args.ready_fd, json.dumps({"address": coordinator.addresses[0]}).encode() + b"\n")
        os.close(args.ready_fd)

    coordinator.when_ready(ready)
    coordinator.run()


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
