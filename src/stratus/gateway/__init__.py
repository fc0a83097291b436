"""The HTTP gateway: stratus for callers that are not Python (``docs/http.md``).

An ASGI app (Starlette, served by uvicorn) in front of one cluster: invoke functions and
DAGs, read and write kv keys with ETags, read and write files on volumes. Every request
carries a bearer token; tokens are kept hashed in the cluster's store. An operator's token
sees the whole cluster, a tenant's only the tenant's namespace, within its quotas.
"""

from stratus.gateway.app import build_app, serve
from stratus.gateway.tenants import Quotas, Tenants
from stratus.gateway.tokens import Tokens

__all__ = ["Quotas", "Tenants", "Tokens", "build_app", "serve"]
