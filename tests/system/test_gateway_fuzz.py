"""Schemathesis against the gateway's OpenAPI spec: generated requests, real server.

Every operation gets generated inputs, with a token and without one; responses must
match the spec (status codes, content types, bodies), and nothing may be a 5xx unless it
is the function's own failure, which the spec documents as 502. The same again with a
tenant's token, whose responses must never hold the operator's data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

import stratus
from gateway_server import Served
from stratus.gateway.app import GatewayConfig
from stratus.gateway.openapi import SPEC
from stratus.gateway.tenants import Quotas, Tenants
from stratus.gateway.tokens import new_token

# A stale ETag (412) is a valid request's documented answer, and 502 a function's own
# failure (documented too); any other 5xx is a gateway bug.
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]
"""Schemathesis's own list of statuses that refuse a request the spec forbids."""
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "412", "429"]
            },
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "502"]},
            # Too many keys in a bulk request is 413 (TooManyKeys), a refusal as good as 400.
            "negative_data_rejection": {"expected-statuses": [*REFUSALS, "413"]},
        }
    }
)
schema = schemathesis.openapi.from_dict(SPEC, config=CONFIG)
tenant_schema = schemathesis.openapi.from_dict(SPEC, config=CONFIG)
TOKEN = new_token()  # known at collection, when schemathesis makes its first cases
TENANT_TOKEN = new_token()
OPERATORS_SECRET = "operator-only-7f3a"  # in the operator's key and file: never a tenant's


@schema.auth()
class Bearer:
    """Schemathesis sends the token itself, so that its cases without one stay so."""

    def get(self, case: Any, context: Any) -> str:
        return TOKEN

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@tenant_schema.auth()
class TenantBearer(Bearer):
    def get(self, case: Any, context: Any) -> str:
        return TENANT_TOKEN


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with stratus.connect(data_dir=tmp_path_factory.mktemp("fuzz"), executors=1) as app:

        @app.function
        def echo(ctx: Any, *args: Any, **kwargs: Any) -> Any:
            return [args, kwargs]

        app.dag("echoes", echo)

        @app.function(name="fz::echo")
        def tenants_echo(ctx: Any, *args: Any, **kwargs: Any) -> Any:
            return [args, kwargs]

        app.dag("fz::echoes", tenants_echo)
        served = Served(app, GatewayConfig(max_body=64 * 1024, body_timeout_s=5.0), TOKEN)
        tenants = Tenants(served.store)
        tenants.create("fz", Quotas(), now_ms=0)
        tenants.tokens.create("fz", now_ms=0, token=TENANT_TOKEN, tenant="fz")
        served.http.put("/v1/kv/secret", json=OPERATORS_SECRET).raise_for_status()
        served.http.put("/v1/volumes/default/files/secret", content=OPERATORS_SECRET.encode())
        try:
            yield served
        finally:
            served.close()


@schema.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_the_gateway_keeps_its_spec(case: Any, gw: Served) -> None:
    response = case.call_and_validate(base_url=gw.url)
    assert response.status_code < 500 or response.status_code == 502, response.text
    declared = case.method.upper() == case.operation.method.upper()
    if declared and case.operation.path not in ("/v1/health", "/openapi.json"):
        forged = case.call(base_url=gw.url, headers={"Authorization": "Bearer st_forged"})
        assert forged.status_code == 401, (case.operation.path, forged.text)


@tenant_schema.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_the_gateway_keeps_its_spec_for_a_tenant(case: Any, gw: Served) -> None:
    response = case.call_and_validate(base_url=gw.url)
    assert response.status_code < 500 or response.status_code == 502, response.text
    assert OPERATORS_SECRET not in response.text, (case.operation.path, response.text)
