"""A real gateway (uvicorn on a free loopback port) in front of a test's cluster."""

from __future__ import annotations

import threading

import httpx
import uvicorn

import stratus
from helpers import free_port, wait_until
from stratus.gateway import Tokens, build_app
from stratus.gateway.app import GatewayConfig
from stratus.kv.open import open_store


class Served:
    """A gateway for ``app`` on a free port, in a thread, with a token and a client."""

    def __init__(self, app: stratus.App, config: GatewayConfig, token: str | None = None) -> None:
        self.app = app
        self.store = open_store(app.store_url, app.values)
        self.token = Tokens(self.store).create("tests", now_ms=0, token=token)
        self.port = free_port()
        server_config = uvicorn.Config(
            build_app(app, self.store, config), host="127.0.0.1", port=self.port, log_level="error"
        )
        self.server = uvicorn.Server(server_config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.server.started, timeout=10)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()
