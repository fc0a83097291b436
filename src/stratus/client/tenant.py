"""``TenantApp``: a tenant's Python client, over the HTTP gateway with a bearer token.

``stratus.connect("http://gw:8080", token=...)`` returns one. It never holds the cluster
key: every request goes through the gateway, which maps the tenant's names into its
namespace and applies its quotas (docs/http.md), so a tenant's program can do what its
token lets it do over HTTP and nothing else. It calls the functions and DAGs the operator
registered for the tenant, and reads and writes the tenant's kv keys; it cannot register
code (tenant code would run on executors other tenants share).

Errors are the types a Python caller of a cluster gets, built from the gateway's JSON
error (``{"error": {"type": ..., "message": ...}}``): ``FunctionNotFound``,
``QuotaExceeded``, ``RemoteError`` (with the remote type and traceback), and
``AccessDenied`` for a missing, revoked or insufficient token.

>>> app = stratus.connect("http://127.0.0.1:8080", token=os.environ["STRATUS_TOKEN"])
>>> app.function("square")(7)
49
>>> app.kv.put("greeting", "hello"); app.kv.get("greeting")
'hello'
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from typing import Any, cast

import msgspec

from stratus import _exceptions as exc
from stratus.protocol import errors


class TenantApp:
    """A tenant's handle on a cluster, through its gateway at ``url``."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise exc.ConfigurationError(f"a gateway's address is http(s)://HOST:PORT, not {url!r}")
        if not token.startswith("st_"):
            raise exc.ConfigurationError("a gateway token starts with 'st_'")
        self.url = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._local = threading.local()  # one kept-alive connection per thread
        self.kv = TenantKV(self)

    def __repr__(self) -> str:
        return f"<TenantApp {self.url}>"

    def __enter__(self) -> TenantApp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def function(self, name: str) -> RemoteCall:
        """A handle on the tenant's function ``name``: call it, or ``.remote()`` it."""
        return RemoteCall(self, "functions", name)

    def dag(self, name: str) -> RemoteCall:
        """A handle on the tenant's DAG ``name``."""
        return RemoteCall(self, "dags", name)

    def functions(self) -> list[str]:
        """The names of the tenant's functions."""
        return [f["name"] for f in self.request("GET", "/v1/functions")[1]["functions"]]

    # ------------------------------------------------------------------ plumbing

    def request(
        self, method: str, path: str, body: Any = None, *, absent_ok: bool = False
    ) -> tuple[int, Any]:
        """``(status, decoded JSON)`` of a request; a stratus error for a 4xx/5xx, but
        ``(404, None)`` for a missing key with ``absent_ok``."""
        payload = None if body is None else msgspec.json.encode(body)
        status, raw = self._exchange(method, path, payload)
        decoded = msgspec.json.decode(raw) if raw else None
        if absent_ok and status == 404 and _error_type(decoded) == "KeyNotFound":
            return status, None
        if status >= 400:
            raise _error_of(status, decoded)
        return status, decoded

    def _exchange(self, method: str, path: str, payload: bytes | None) -> tuple[int, bytes]:
        for attempt in (1, 2):  # a kept-alive connection the server closed: dial again once
            conn = self._connection()
            try:
                conn.request(method, path, payload, self._headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as e:
                conn.close()
                self._local.conn = None
                if attempt == 2 or isinstance(e, TimeoutError) or method == "POST":
                    raise exc.ConnectionFailed(f"gateway {self.url}: {e}") from e
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = self._local.conn = kind(self._host, self._port, timeout=self.timeout)
        return conn


class RemoteCall:
    """A tenant's function or DAG, by name: ``f(*args)`` waits for the result,
    ``f.remote(*args)`` returns a ``RemoteInvocation`` at once. Arguments and results
    are JSON values."""

    def __init__(self, app: TenantApp, kind: str, name: str) -> None:
        self._app = app
        self.name = name
        self._path = f"/v1/{kind}/{urllib.parse.quote(name, safe='')}:invoke"

    def __repr__(self) -> str:
        return f"<RemoteCall {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _, reply = self._app.request("POST", self._path, {"args": args, "kwargs": kwargs})
        return reply["result"]

    def remote(self, *args: Any, **kwargs: Any) -> RemoteInvocation:
        body = {"args": args, "kwargs": kwargs}
        _, reply = self._app.request("POST", self._path + "?async=1", body)
        return RemoteInvocation(self._app, reply["invocation_id"])


class RemoteInvocation:
    """An invocation made with ``remote``: ``result(timeout=)`` polls the gateway for it."""

    POLL_S = (0.001, 0.05)  # the first poll's wait, and the longest

    def __init__(self, app: TenantApp, invocation_id: str) -> None:
        self._app = app
        self.invocation_id = invocation_id

    def result(self, timeout: float | None = None) -> Any:
        """The result; its error raised; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wait, longest = self.POLL_S
        path = f"/v1/invocations/{urllib.parse.quote(self.invocation_id, safe='')}"
        while True:
            _, reply = self._app.request("GET", path)
            if reply["status"] == "done":
                return reply["result"]
            if reply["status"] == "failed":
                raise _error_of(502, reply)
            if deadline is not None and time.monotonic() + wait > deadline:
                raise TimeoutError(f"invocation {self.invocation_id} still running")
            time.sleep(wait)
            wait = min(wait * 2, longest)


class TenantKV:
    """The tenant's kv keys over HTTP (``app.kv``): JSON values."""

    def __init__(self, app: TenantApp) -> None:
        self._app = app

    def _path(self, key: str) -> str:
        return "/v1/kv/" + urllib.parse.quote(key, safe="")

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        status, value = self._app.request("GET", self._path(key), absent_ok=True)
        return default if status == 404 else value

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` to a JSON value."""
        self._app.request("PUT", self._path(key), value)

    def delete(self, key: str) -> None:
        self._app.request("DELETE", self._path(key))

    def keys(self, prefix: str = "") -> list[str]:
        """The tenant's keys under ``prefix``, sorted."""
        query = urllib.parse.urlencode({"prefix": prefix})
        keys: list[str] = self._app.request("GET", f"/v1/kv?{query}")[1]["keys"]
        return keys


def _error_type(reply: Any) -> str:
    detail = reply.get("error") if isinstance(reply, dict) else None
    return str(detail.get("type", "")) if isinstance(detail, dict) else ""


def _error_of(status: int, reply: Any) -> exc.StratusError:
    """The stratus exception a gateway's JSON error stands for."""
    detail = reply.get("error", reply) if isinstance(reply, dict) else {}
    kind, message = str(detail.get("type", "")), str(detail.get("message", f"HTTP {status}"))
    if "remote_type" in detail:
        return exc.new_remote_error(
            None,
            message,
            remote_type=detail["remote_type"],
            remote_traceback=detail.get("traceback", ""),
            invocation_id=detail.get("invocation_id", ""),
        )
    if kind == "KeyNotFound":
        return exc.StratusError(message)  # only ever seen by TenantKV.get, as absent
    if kind in errors.KINDS:  # a stratus type, as the cluster's own client builds it
        info = errors.ErrorInfo(cast(errors.ErrorKind, kind), message)
        return errors.decode(info, str(detail.get("invocation_id", "")))
    if status in (401, 403):  # the gateway's own: Unauthorized, AccessDenied
        return exc.AccessDenied(message)
    return exc.StratusError(f"{kind}: {message}" if kind else message)
