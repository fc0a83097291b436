"""``python -m stratus.gateway``: serve the HTTP gateway of a running cluster.

``stratus gateway`` is the same with the command line's conveniences; this entry point is
what a supervisor or a benchmark starts.
"""

from __future__ import annotations

import argparse
import os
import sys

import stratus
from stratus import config as cfg
from stratus.gateway.app import serve
from stratus.gateway.kv import now_ms
from stratus.gateway.tokens import Tokens
from stratus.kv.open import open_store
from stratus.server.lifeline import die_with_parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stratus.gateway")
    parser.add_argument("--address", required=True, help="the cluster, e.g. tcp://127.0.0.1:7070")
    parser.add_argument("--data-dir", default=".stratus", help="where the cluster's key is")
    parser.add_argument("--store", default="", help="the cluster's store URL")
    parser.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT to serve on")
    parser.add_argument(
        "--create-token", metavar="OWNER", default="", help="print a new operator token first"
    )
    parser.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.parent:
        die_with_parent(args.parent)  # started by `stratus up --http`: go with it
    store_url = args.store or f"sqlite:{os.path.join(args.data_dir, 'state.db')}"
    host, _, port = args.http.rpartition(":")
    app = stratus.connect(args.address, key=cfg.load_key(None, args.data_dir), store=store_url)
    store = open_store(store_url, app.values)
    if args.create_token:
        print(Tokens(store).create(args.create_token, now_ms=now_ms()), flush=True)
    print(f"gateway of {app.cluster_id} on http://{host}:{port}", file=sys.stderr, flush=True)
    try:
        serve(app, store, host, int(port))
    finally:
        store.close()
        app.close()


if __name__ == "__main__":
    main()
