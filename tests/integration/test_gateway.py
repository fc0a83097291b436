"""The HTTP gateway against a real embedded cluster, served by a real uvicorn server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import stratus
from gateway_server import Served
from helpers import wait_until
from stratus.gateway import Tokens
from stratus.gateway.app import GatewayConfig

CONFIG = GatewayConfig(max_body=64 * 1024, body_timeout_s=1.0, token_cache_s=0.0)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with stratus.connect(data_dir=tmp_path_factory.mktemp("gw"), executors=2) as app:

        @app.function
        def add(ctx: Any, a: int, b: int = 0) -> int:
            return a + b

        @app.function
        def lookup(ctx: Any, key: str) -> Any:
            return {"a": 1}[key]

        @app.function
        def opaque(ctx: Any) -> Any:
            return object()

        @app.function
        def incr(ctx: Any, x: int) -> int:
            return x + 1

        @app.function
        def square(ctx: Any, x: int) -> int:
            return x * x

        app.dag("pipeline", incr >> square)
        served = Served(app, CONFIG)
        try:
            yield served
        finally:
            served.close()


def error_type(response: httpx.Response) -> str:
    kind: str = response.json()["error"]["type"]
    return kind


# ---------------------------------------------------------------------- authentication


def test_every_route_but_health_and_spec_wants_a_token(gw: Served) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as anonymous:
        check_anonymous(anonymous)


def check_anonymous(anonymous: httpx.Client) -> None:
    assert anonymous.get("/v1/health").status_code == 200
    assert anonymous.get("/openapi.json").json()["openapi"].startswith("3.")
    for method, path in [
        ("GET", "/v1/functions"),
        ("POST", "/v1/functions/add:invoke"),
        ("POST", "/v1/dags/pipeline:invoke"),
        ("GET", "/v1/kv/x"),
        ("PUT", "/v1/kv/x"),
        ("DELETE", "/v1/kv/x"),
        ("GET", "/v1/kv"),
        ("POST", "/v1/kv:transaction"),
        ("GET", "/v1/volumes"),
        ("GET", "/v1/volumes/default/files/a.txt"),
        ("PUT", "/v1/volumes/default/files/a.txt"),
    ]:
        for headers in ({}, {"Authorization": "Bearer st_forged"}, {"Authorization": "Basic x"}):
            response = anonymous.request(method, path, headers=headers, content=b"1")
            assert response.status_code == 401, (method, path, headers)
            assert error_type(response) == "Unauthorized"


def test_a_revoked_token_is_refused(gw: Served) -> None:
    tokens = Tokens(gw.store)
    token = tokens.create("short-lived", now_ms=0)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=gw.url, headers=headers) as client:
        assert client.get("/v1/functions").status_code == 200
        assert tokens.revoke(token)
        assert client.get("/v1/functions").status_code == 401  # token_cache_s=0 here


def test_the_store_keeps_only_hashes_of_tokens(gw: Served) -> None:
    stored = b"".join(gw.store.get(k).value or b"" for k in gw.store.keys("\x00stratus/gateway"))
    assert gw.token.encode() not in stored
    assert any(owner == "tests" for _, owner, _ in Tokens(gw.store).list())


# ---------------------------------------------------------------------- functions and DAGs


def test_invoke_returns_the_result(gw: Served) -> None:
    response = gw.http.post("/v1/functions/add:invoke", json={"args": [2], "kwargs": {"b": 3}})
    assert response.status_code == 200
    assert response.json()["result"] == 5
    assert response.json()["status"] == "done"


def test_a_dag_call_returns_the_sink_result(gw: Served) -> None:
    response = gw.http.post("/v1/dags/pipeline:invoke", json={"args": [3]})
    assert response.json()["result"] == 16
    # a DAG is not a function, and the other way round
    assert gw.http.post("/v1/functions/pipeline:invoke", json={}).status_code == 404
    assert gw.http.post("/v1/dags/add:invoke", json={}).status_code == 404


def test_errors_are_typed(gw: Served) -> None:
    missing = gw.http.post("/v1/functions/nosuch:invoke", json={})
    assert missing.status_code == 404 and error_type(missing) == "FunctionNotFound"
    raised = gw.http.post("/v1/functions/lookup:invoke", json={"args": ["b"]})
    assert raised.status_code == 502
    assert raised.json()["error"]["remote_type"].endswith("KeyError")
    assert "lookup" in raised.json()["error"]["traceback"]
    opaque = gw.http.post("/v1/functions/opaque:invoke", json={})
    assert opaque.status_code == 502 and error_type(opaque) == "ResultNotJSON"
    wrong = gw.http.post("/v1/functions/add:invoke", json={"args": 3})
    assert wrong.status_code == 400 and error_type(wrong) == "BadRequest"
    garbage = gw.http.post("/v1/functions/add:invoke", content=b"{not json")
    assert garbage.status_code == 400 and error_type(garbage) == "BadJSON"


def test_async_invocations_are_polled_by_id(gw: Served) -> None:
    accepted = gw.http.post("/v1/functions/add:invoke?async=1", json={"args": [40, 2]})
    assert accepted.status_code == 202
    invocation = accepted.json()["invocation_id"]
    polled: dict[str, Any] = {}

    def done() -> bool:
        polled.update(gw.http.get(f"/v1/invocations/{invocation}").json())
        return polled["status"] != "running"

    assert wait_until(done, timeout=20)
    assert polled == {"invocation_id": invocation, "status": "done", "result": 42}
    assert gw.http.get("/v1/invocations/nosuch").status_code == 404


def test_functions_are_listed(gw: Served) -> None:
    listing = gw.http.get("/v1/functions").json()
    assert {"add", "lookup", "incr"} <= {f["name"] for f in listing["functions"]}
    assert "pipeline" in listing["dags"]


# ---------------------------------------------------------------------- kv


def test_kv_round_trip_with_etags(gw: Served) -> None:
    written = gw.http.put("/v1/kv/http/greeting", json={"hello": ["world"]})
    assert written.status_code == 200
    etag = written.headers["ETag"]
    read = gw.http.get("/v1/kv/http/greeting")
    assert read.json() == {"hello": ["world"]} and read.headers["ETag"] == etag
    # Python callers see the same key, and HTTP sees theirs
    assert gw.app.kv.get("http/greeting") == {"hello": ["world"]}
    gw.app.kv.put("http/from-python", (1, 2))  # a tuple: sealed with the cluster's key
    assert gw.http.get("/v1/kv/http/from-python").json() == [1, 2]
    gw.app.kv.put("http/opaque", object())
    opaque = gw.http.get("/v1/kv/http/opaque")
    assert opaque.status_code == 406 and error_type(opaque) == "ValueNotJSON"


def test_if_match_makes_a_write_conditional(gw: Served) -> None:
    first = gw.http.put("/v1/kv/cas", json=1).headers["ETag"]
    second = gw.http.put("/v1/kv/cas", json=2, headers={"If-Match": first})
    assert second.status_code == 200
    stale = gw.http.put("/v1/kv/cas", json=3, headers={"If-Match": first})
    assert stale.status_code == 412 and error_type(stale) == "PreconditionFailed"
    assert gw.http.get("/v1/kv/cas").json() == 2
    exists = gw.http.put("/v1/kv/cas", json=4, headers={"If-None-Match": "*"})
    assert exists.status_code == 412
    assert gw.http.delete("/v1/kv/cas", headers={"If-Match": first}).status_code == 412
    current = gw.http.get("/v1/kv/cas").headers["ETag"]
    assert gw.http.delete("/v1/kv/cas", headers={"If-Match": current}).status_code == 204
    assert gw.http.get("/v1/kv/cas").status_code == 404
    bad = gw.http.put("/v1/kv/cas", json=1, headers={"If-Match": "yesterday"})
    assert bad.status_code == 400 and error_type(bad) == "BadETag"


def test_bulk_get_and_transactions(gw: Served) -> None:
    etag = gw.http.put("/v1/kv/t/a", json="a0").headers["ETag"]
    ops = [
        {"operation": "upsert", "key": "t/a", "value": "a1", "etag": etag},
        {"operation": "upsert", "key": "t/b", "value": "b1"},
    ]
    committed = gw.http.post("/v1/kv:transaction", json={"operations": ops})
    assert committed.status_code == 200, committed.text
    assert set(committed.json()["etags"]) == {"t/a", "t/b"}
    # the same again: t/a's etag is stale now, so nothing of it is written
    ops[1] = {"operation": "delete", "key": "t/b"}
    assert gw.http.post("/v1/kv:transaction", json={"operations": ops}).status_code == 412
    items = gw.http.post("/v1/kv:bulkget", json={"keys": ["t/a", "t/b", "t/none"]}).json()
    assert {i["key"]: i["value"] for i in items["items"]} == {"t/a": "a1", "t/b": "b1"}
    assert gw.http.get("/v1/kv", params={"prefix": "t/"}).json() == {"keys": ["t/a", "t/b"]}


def test_platform_keys_are_out_of_reach(gw: Served) -> None:
    response = gw.http.put("/v1/kv/%00stratus/gateway/tokens/x", json="mine")
    assert response.status_code == 403 and error_type(response) == "ReservedKey"
    assert not any(k.startswith("\x00") for k in gw.http.get("/v1/kv").json()["keys"])


# ---------------------------------------------------------------------- files


def test_files_round_trip(gw: Served) -> None:
    put = gw.http.put("/v1/volumes/docs/files/reports/q1.txt", content=b"revenue: 1\n")
    assert put.status_code == 201
    assert gw.http.get("/v1/volumes/docs/files/reports/q1.txt").content == b"revenue: 1\n"
    listing = gw.http.get("/v1/volumes/docs/files/reports").json()
    assert listing["entries"] == ["q1.txt"]
    assert "docs" in gw.http.get("/v1/volumes").json()["volumes"]
    assert gw.http.delete("/v1/volumes/docs/files/reports/q1.txt").status_code == 204
    missing = gw.http.get("/v1/volumes/docs/files/reports/q1.txt")
    assert missing.status_code == 404 and error_type(missing) == "FileNotFoundError"


# ---------------------------------------------------------------------- hostile clients


def test_an_oversized_body_is_refused_and_the_gateway_serves_on(gw: Served) -> None:
    big = gw.http.put("/v1/kv/big", content=b"1" * (CONFIG.max_body + 1))
    assert big.status_code == 413 and error_type(big) == "PayloadTooLarge"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while reading
        for _ in range(CONFIG.max_body // 1024 + 2):
            yield b"1" * 1024

    streamed = gw.http.put("/v1/kv/big", content=chunks())
    assert streamed.status_code == 413
    assert gw.http.post("/v1/functions/add:invoke", json={"args": [1, 1]}).json()["result"] == 2


def test_a_slow_client_times_out_and_the_gateway_serves_on(gw: Served) -> None:
    with socket.create_connection(("127.0.0.1", gw.port)) as slow:
        slow.sendall(
            b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            + f"Authorization: Bearer {gw.token}\r\n\r\n".encode()
            + b"1"
        )
        slow.settimeout(10)
        started = time.monotonic()
        # other callers are served while the slow one dribbles
        assert gw.http.get("/v1/health").status_code == 200
        reply = slow.recv(4096)
        assert b" 408 " in reply.split(b"\r\n", 1)[0]
        assert time.monotonic() - started < 10
    assert gw.http.get("/v1/kv/slow").status_code == 404


def test_missing_and_malformed_paths(gw: Served, tmp_path: Path) -> None:
    assert gw.http.get("/v1/nothing").status_code == 404
    assert gw.http.get("/v1/volumes/nosuch/files/x").status_code in (404,)
