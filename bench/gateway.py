"""Gateway benchmark: what HTTP adds to a call, side by side with the peers.

Why: DESIGN's gateway target is at most 300 us p50 over a Python client's call. HTTP
callers pay for HTTP parsing, JSON and one more hop (caller -> gateway -> executor), so
the fair comparison is the same call made both ways against the same server, next to an
HTTP app that calls Python in-process (FastAPI on uvicorn: the floor of any HTTP service)
and Ray Serve (an HTTP deployment of the same function).

What: a server from ``stratus up`` (TCP on loopback) with the function ``noop(ctx, x)``;
``python_client`` calls it from this process (``fn.remote(1).result()``);
``gateway`` POSTs ``{"args": [1]}`` to ``python -m stratus.gateway`` (its own process,
uvicorn with httptools and uvloop) over one kept-alive connection (``http.client``);
``fastapi_direct`` POSTs the same body to a FastAPI app (``bench/_fastapi_noop.py``, same
uvicorn settings) whose handler calls a Python function in-process; ``ray_serve`` POSTs
to a Ray Serve deployment of the same function. Variants are interleaved in rounds (the
order reversed every other round) and each round warms up first; samples are pooled.
``gateway_added_p50_us`` is the gateway's p50 minus the Python client's p50.

How: ``.venv/bin/python bench/gateway.py [--quick|--tiny] [--no-ray]``; one JSON document
on stdout and in ``bench/results/gateway.json``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stratus
from _stats import (
    bench_main,
    latency_summary,
    module_version,
    results_path,
    run_header,
    wait_until,
)
from stratus import config as cfg

BENCH = Path(__file__).resolve().parent
RESULT = results_path("gateway")
BODY = json.dumps({"args": [1]}).encode()


@dataclass(frozen=True)
class Settings:
    rounds: int
    calls: int  # per variant and round
    warmup: int


SETTINGS = {
    "full": Settings(rounds=6, calls=1000, warmup=200),
    "quick": Settings(rounds=2, calls=300, warmup=100),
    "tiny": Settings(rounds=1, calls=20, warmup=5),
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def process(args: list[str], **options: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, text=True, **options)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def listening(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
        except OSError:
            return False
        return True

    return check


def http_caller(port: int, path: str, token: str = "") -> Callable[[], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def call() -> Any:
        try:
            connection.request("POST", path, BODY, headers)
            response = connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # A server closes a kept-alive connection idle past its keep-alive (uvicorn:
            # 5 s), as between rounds: dial again (in the warm-up, never in a timed call).
            connection.close()
            connection.request("POST", path, BODY, headers)
            response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}: {body[:200]!r}")
        return body

    return call


def timed(call: Callable[[], Any], n: int) -> list[int]:
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return samples


@contextlib.contextmanager
def ray_serve(port: int) -> Iterator[Callable[[], Any]]:
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        @serve.deployment(num_replicas=1)
        class Noop:
            async def __call__(self, request: Any) -> dict[str, Any]:
                body = await request.json()
                return {"status": "done", "result": body["args"][0]}

        serve.run(Noop.bind(), route_prefix="/noop")
        yield http_caller(port, "/noop")
    finally:
        serve.shutdown()
        ray.shutdown()


def run(settings: Settings, mode: str, *, with_ray: bool, with_dask: bool) -> dict[str, Any]:
    doc = run_header(
        "gateway",
        mode,
        starlette=module_version("starlette"),
        uvicorn=module_version("uvicorn"),
        fastapi=module_version("fastapi"),
        ray=module_version("ray") if with_ray else None,
    )
    python = sys.executable
    env = dict(os.environ, PYTHONPATH=str(BENCH))
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        data = Path(tmp, "stratus")
        cluster_port, gateway_port, fastapi_port = free_port(), free_port(), free_port()
        address = f"tcp://127.0.0.1:{cluster_port}"
        stack.enter_context(
            process(
                [python, "-m", "stratus.cli", "up", "--listen", address, "--data-dir", str(data)],
                stdout=subprocess.DEVNULL,
            )
        )
        wait_until(lambda: (data / "server.json").exists(), timeout=60)
        app = stack.enter_context(
            stratus.connect(address, key=cfg.load_key(None, data), store=f"sqlite:{data}/state.db")
        )

        @app.function(min_instances=1)
        def noop(ctx: Any, x: Any) -> Any:
            return x

        gateway = stack.enter_context(
            process(
                [
                    python, "-m", "stratus.gateway", "--address", address,
                    "--data-dir", str(data), "--http", f"127.0.0.1:{gateway_port}",
                    "--create-token", "bench",
                ],
                stdout=subprocess.PIPE,
            )
        )  # fmt: skip
        assert gateway.stdout is not None
        token = gateway.stdout.readline().strip()
        stack.enter_context(
            process(
                [python, "-m", "uvicorn", "_fastapi_noop:app", "--port", str(fastapi_port),
                 "--log-level", "warning"],
                cwd=BENCH, env=env,
            )
        )  # fmt: skip
        wait_until(listening(gateway_port), timeout=30)
        wait_until(listening(fastapi_port), timeout=30)
        variants: dict[str, Callable[[], Any]] = {
            "python_client": lambda: noop.remote(1).result(),
            "gateway": http_caller(gateway_port, "/v1/functions/noop:invoke", token),
            "fastapi_direct": http_caller(fastapi_port, "/v1/functions/noop:invoke"),
        }
        if with_ray:
            variants["ray_serve"] = stack.enter_context(ray_serve(free_port()))
        samples: dict[str, list[int]] = {name: [] for name in variants}
        order = list(variants)
        for round_ in range(settings.rounds):
            for name in order if round_ % 2 == 0 else reversed(order):
                timed(variants[name], settings.warmup)
                samples[name] += timed(variants[name], settings.calls)
            print(f"round {round_ + 1}/{settings.rounds} done", file=sys.stderr)
    doc["settings"] = vars(settings)
    doc["variants"] = {name: latency_summary(s) for name, s in samples.items()}
    p50 = {name: doc["variants"][name]["p50_us"] for name in samples}
    doc["gateway_added_p50_us"] = round(p50["gateway"] - p50["python_client"], 1)
    doc["fastapi_floor_p50_us"] = p50["fastapi_direct"]
    return doc


if __name__ == "__main__":
    bench_main(__doc__ or "", RESULT, SETTINGS, run, peers=True)
