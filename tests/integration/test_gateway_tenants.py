"""Tenants against a real embedded cluster and a real gateway: namespaces where the
objects are, every endpoint of the spec tried across tenants, quotas, the tenant client."""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import stratus
from gateway_server import Served
from helpers import wait_until
from stratus.gateway.app import GatewayConfig
from stratus.gateway.openapi import SPEC
from stratus.gateway.tenants import Quotas, Tenants
from stratus.protocol import keys

CONFIG = GatewayConfig(max_body=64 * 1024, body_timeout_s=5.0, token_cache_s=0.0)
SECRET = "A-SECRET"  # every value of tenant alpha holds it: no other caller may ever see it


class Cluster:
    def __init__(self, served: Served, tokens: dict[str, str]) -> None:
        self.served = served
        self.url = served.url
        self.tokens = tokens

    def client(self, tenant: str | None) -> httpx.Client:
        headers = {} if tenant is None else {"Authorization": f"Bearer {self.tokens[tenant]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with stratus.connect(data_dir=tmp_path_factory.mktemp("tenants"), executors=2) as app:
        # Serializable: a read validated at commit sees what the gateway just wrote.
        @app.function(name="alpha::reveal", consistency="serializable")
        def reveal(ctx: Any, key: str) -> Any:
            return ctx.kv.get(key)

        @app.function(name="alpha::store_secret", consistency="serializable")
        def store_secret(ctx: Any) -> list[str]:
            ctx.kv.put("fn-secret", SECRET + "-FN")
            with ctx.fs.open("/fn.txt", "w") as f:
                f.write(SECRET + "-FILE")
            return sorted(ctx.kv.keys())

        @app.function(name="alpha::fail")
        def fail(ctx: Any) -> None:
            raise KeyError("nope")

        app.dag("alpha::pipe", reveal)

        @app.function(name="beta::steal")
        def steal(ctx: Any, key: str) -> dict[str, Any]:
            found: dict[str, Any] = {"kv": ctx.kv.get(key), "keys": ctx.kv.keys()}
            found["now"] = ctx.kv_now.get(key)
            refused = []
            attempts = {
                "forged-key": lambda: ctx.kv.get(keys.tenant_prefix("alpha") + key),
                "forged-write": lambda: ctx.kv.put(keys.tenant_prefix("alpha") + key, "B"),
                "forged-now": lambda: ctx.kv_now.get(keys.tenant_prefix("alpha") + key),
                "call": lambda: ctx.call("reveal", key).result(timeout=30),
                "call-forged": lambda: ctx.call("alpha::reveal", key).result(timeout=30),
                "volume": lambda: ctx.fs.volume("default").read_bytes("/fn.txt"),
                "volume-forged": lambda: ctx.fs.volume("t.alpha.default").read_bytes("/fn.txt"),
                "object": lambda: ctx.put(key),
            }
            for what, attempt in attempts.items():
                try:
                    found[what] = attempt()
                except Exception as e:
                    refused.append(f"{what}:{type(e).__name__}")
            found["refused"] = refused
            return found

        @app.function(name="q1::hold")
        def hold(ctx: Any) -> str:
            deadline = time.monotonic() + 60
            while not ctx.kv_now.get("go") and time.monotonic() < deadline:
                time.sleep(0.01)
            return "released"

        @app.function(name="r1::noop")
        def noop(ctx: Any) -> int:
            return 1

        served = Served(app, CONFIG)
        tenants = Tenants(served.store)
        quotas = {
            "alpha": Quotas(),
            "beta": Quotas(),
            "q1": Quotas(max_concurrent=1),
            "r1": Quotas(calls_per_s=0.001),  # one call, then one per 1000 s
            "s1": Quotas(stored_bytes=400),
        }
        tokens = {}
        for name, quota in quotas.items():
            tenants.create(name, quota, now_ms=0)
            tokens[name] = tenants.token(name, now_ms=0)
        tokens["operator"] = served.token
        try:
            yield Cluster(served, tokens)
        finally:
            served.close()


@pytest.fixture(scope="module")
def alpha(cluster: Cluster) -> Iterator[dict[str, str]]:
    """Tenant alpha's objects, made through its token: what the others go after."""
    with cluster.client("alpha") as a:
        assert a.put("/v1/kv/secret", json=SECRET).status_code == 200
        put = a.put("/v1/volumes/data/files/f.txt", content=SECRET.encode())
        assert put.status_code == 201, put.text
        stored = a.post("/v1/functions/store_secret:invoke", json={})
        assert stored.json()["result"] == ["fn-secret", "secret"], stored.text
        accepted = a.post("/v1/functions/reveal:invoke?async=1", json={"args": ["secret"]})
        invocation_id = accepted.json()["invocation_id"]
        assert wait_until(
            lambda: a.get(f"/v1/invocations/{invocation_id}").json()["status"] == "done"
        )
    yield {"name": "reveal", "id": invocation_id, "key": "secret"} | {
        "volume": "data",
        "path": "f.txt",
    }


# ---------------------------------------------------------------------- namespaces


def test_a_tenants_function_and_the_gateway_share_its_namespace(
    cluster: Cluster, alpha: dict[str, str]
) -> None:
    with cluster.client("alpha") as a:
        assert a.get("/v1/kv/fn-secret").json() == SECRET + "-FN"
        assert a.get("/v1/volumes/default/files/fn.txt").content == (SECRET + "-FILE").encode()
        assert sorted(a.get("/v1/kv").json()["keys"]) == ["fn-secret", "secret"]
        assert a.get("/v1/volumes").json()["volumes"] == ["data", "default"]
        listed = a.get("/v1/functions").json()
        assert {f["name"] for f in listed["functions"]} == {"reveal", "store_secret", "fail"}
        assert listed["dags"] == ["pipe"]
        assert a.post("/v1/dags/pipe:invoke", json={"args": ["secret"]}).json()["result"] == SECRET
    with cluster.client("operator") as operator:  # sees the registry as it is
        names = {f["name"] for f in operator.get("/v1/functions").json()["functions"]}
        assert {"alpha::reveal", "beta::steal"} <= names
        assert "t.alpha.data" in operator.get("/v1/volumes").json()["volumes"]


def test_a_tenants_function_cannot_reach_another_tenants_state(
    cluster: Cluster, alpha: dict[str, str]
) -> None:
    with cluster.client("beta") as b:
        for key in ("secret", "fn-secret"):
            response = b.post("/v1/functions/steal:invoke", json={"args": [key]})
            assert response.status_code == 200, response.text
            assert SECRET not in response.text
            found = response.json()["result"]
            assert found["kv"] is None and found["now"] is None
            assert found["keys"] == [] or key not in found["keys"]
            assert sorted(found["refused"]) == [
                "call-forged:FunctionNotFound",
                "call:FunctionNotFound",
                "forged-key:ReservedKey",
                "forged-now:ReservedKey",
                "forged-write:ReservedKey",
                "object:RuntimeError",
                "volume-forged:VolumeNotFound",
                "volume:FileNotFoundError",  # its own default volume, without the file
            ]
    with cluster.client("alpha") as a:  # and alpha's state is as it was
        assert a.get("/v1/kv/secret").json() == SECRET


def _requests(objects: dict[str, str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """A request for every operation of the spec, aimed at ``objects``, and at names
    forged to climb out of the caller's namespace into alpha's."""
    bodies: dict[str, dict[str, Any]] = {
        "/v1/kv:bulkget": {"json": {"keys": ["secret", "fn-secret"]}},
        "/v1/kv:transaction": {
            "json": {"operations": [{"operation": "upsert", "key": "secret", "value": "B"}]}
        },
    }
    forged = {
        "name": ["alpha::reveal", objects["name"]],
        "key": [keys.tenant_prefix("alpha") + "secret", objects["key"]],
        "volume": ["t.alpha.data", objects["volume"]],
        "id": [objects["id"]],
        "path": [objects["path"]],
    }
    for template, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") == []:
                continue  # health and the spec: public
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            variants: list[dict[str, str]] = [{}]
            for name in names:
                variants = [v | {name: value} for v in variants for value in forged[name]]
            for variant in variants:
                path = template
                for name, value in variant.items():
                    if "dags" in template and name == "name":
                        value = value.replace("reveal", "pipe")
                    path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
                body = bodies.get(template, {"json": {"args": ["secret"]}})
                if method in ("put",):
                    body = {"content": b'"B"'}
                yield method.upper(), path, body if method in ("post", "put") else {}


def test_no_token_and_another_tenants_token_get_nothing_of_a_tenants_objects(
    cluster: Cluster, alpha: dict[str, str]
) -> None:
    tried = 0
    with cluster.client(None) as anonymous, cluster.client("beta") as b:
        for method, path, body in _requests(alpha):
            tried += 1
            refused = anonymous.request(method, path, **body)
            assert refused.status_code == 401, (method, path, refused.text)
            response = b.request(method, path, **body)
            # beta may act in its own namespace (its own key "secret"), never in alpha's
            assert response.status_code in (200, 201, 204, 403, 404), (method, path, response.text)
            assert SECRET not in response.text, (method, path)
        assert b.get(f"/v1/invocations/{alpha['id']}").status_code == 404
        listed = b.get("/v1/functions").json()
        assert [f["name"] for f in listed["functions"]] == ["steal"] and listed["dags"] == []
        # What beta wrote and deleted above was its own: none of alpha's names are listed.
        assert b.get("/v1/kv").json()["keys"] == []
        assert b.get("/v1/dashboard").status_code == 403
    assert tried >= len(SPEC["paths"]) + 4  # every operation, forged names besides
    with cluster.client("alpha") as a:  # alpha's objects are untouched
        assert a.get("/v1/kv/secret").json() == SECRET
        assert a.get("/v1/volumes/data/files/f.txt").content == SECRET.encode()
        assert a.get(f"/v1/invocations/{alpha['id']}").json()["result"] == SECRET
        assert sorted(a.get("/v1/kv").json()["keys"]) == ["fn-secret", "secret"]


def test_a_deleted_tenants_tokens_stop_working(cluster: Cluster) -> None:
    tenants = Tenants(cluster.served.store)
    tenants.create("gone", Quotas(), now_ms=0)
    token = tenants.token("gone", now_ms=0)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=cluster.url, headers=headers) as gone:
        assert gone.get("/v1/functions").status_code == 200
        tenants.delete("gone")
        assert gone.get("/v1/functions").status_code == 401  # token_cache_s=0 here


# ---------------------------------------------------------------------- quotas


def test_calls_at_once_are_capped(cluster: Cluster) -> None:
    with cluster.client("q1") as q:
        held = q.post("/v1/functions/hold:invoke?async=1", json={})
        assert held.status_code == 202
        refused = q.post("/v1/functions/hold:invoke", json={})
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "QuotaExceeded"
        assert q.put("/v1/kv/go", json=True).status_code == 200
        # Released when the held call completes: admitted again from then on.
        assert wait_until(
            lambda: q.post("/v1/functions/hold:invoke", json={}).status_code == 200, timeout=30
        )
        done = q.get(f"/v1/invocations/{held.json()['invocation_id']}").json()
        assert done["result"] == "released"


def test_calls_per_second_are_capped(cluster: Cluster) -> None:
    with cluster.client("r1") as r:
        assert r.post("/v1/functions/noop:invoke", json={}).status_code == 200
        refused = r.post("/v1/functions/noop:invoke", json={})
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "QuotaExceeded"


def test_stored_bytes_are_capped(cluster: Cluster) -> None:
    big = "x" * 500
    with cluster.client("s1") as s:
        assert s.put("/v1/kv/small", json="x" * 100).status_code == 200
        for refused in (
            s.put("/v1/kv/big", json=big),
            s.put("/v1/volumes/v/files/big.bin", content=big.encode()),
            s.post(
                "/v1/kv:transaction",
                json={"operations": [{"operation": "upsert", "key": "big", "value": big}]},
            ),
        ):
            assert refused.status_code == 413, refused.text
            assert refused.json()["error"]["type"] == "QuotaExceeded"
        assert s.get("/v1/kv").json()["keys"] == ["small"]
    usage = Tenants(cluster.served.store).usage()
    assert 100 < usage["s1"].stored_bytes < 400


# ---------------------------------------------------------------------- the tenant client


def test_the_python_client_connects_as_a_tenant(cluster: Cluster, alpha: dict[str, str]) -> None:
    with stratus.connect(cluster.url, token=cluster.tokens["alpha"]) as app:
        assert isinstance(app, stratus.TenantApp)
        assert app.function("reveal")("secret") == SECRET
        assert app.function("reveal").remote("secret").result(timeout=30) == SECRET
        assert app.dag("pipe")("secret") == SECRET
        app.kv.put("from-client", {"n": 1})
        assert app.kv.get("from-client") == {"n": 1}
        assert app.kv.get("absent", "default") == "default"
        assert "from-client" in app.kv.keys("from-")
        app.kv.delete("from-client")
        assert "reveal" in app.functions()
        with pytest.raises(stratus.FunctionNotFound):
            app.function("steal")("secret")  # beta's
        with pytest.raises(stratus.RemoteError) as raised:
            app.function("fail")()
        assert raised.value.remote_type.endswith("KeyError")
    limited = stratus.connect(cluster.url, token=cluster.tokens["r1"])
    with contextlib.suppress(stratus.QuotaExceeded):  # spent already if the test above ran
        limited.function("noop")()
    with limited, pytest.raises(stratus.QuotaExceeded):
        limited.function("noop")()
    forged = stratus.connect(cluster.url, token="st_" + "x" * 40)
    with forged, pytest.raises(stratus.AccessDenied):
        forged.kv.get("secret")
