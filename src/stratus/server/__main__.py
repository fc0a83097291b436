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

from stratus import config as cfg
from stratus._exceptions import StratusError
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


if __name__ == "__main__":
    main()
