"""The gateway's ASGI app: routes, authentication, request limits.

Theory of operation: one Starlette app in front of one ``stratus.App`` (the Python
client) and the cluster's store. A request's token names its ``Caller``: the operator
(the whole cluster) or a tenant, whose names every handler maps into the tenant's
namespace (``Caller.function``, ``.kv_prefix``, ``.volume``) before it touches anything,
and whose calls pass its quota ``Gate`` (``gateway/tenants.py``, ``gateway/quotas.py``).
A call to a function is the client's call, awaited on the event loop (the client's pump
thread completes it). Store work (kv, files, token
checks on a miss) runs in Starlette's thread pool, so a slow store never stalls the loop.
Bodies are read with a cap and a deadline, so a large or slow upload cannot hold memory
or a connection beyond them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stratus._exceptions import FunctionNotFound, StratusError, TenantNotFound, VolumeNotFound
from stratus.client.app import App
from stratus.client.future import Future
from stratus.client.handles import Dag, Function
from stratus.fs import Volumes
from stratus.fs import keys as fs_keys
from stratus.fs.session import transaction
from stratus.fs.volume import check_volume_name
from stratus.gateway import openapi
from stratus.gateway.dashboard import Dashboard
from stratus.gateway.errors import HTTPProblem, response_of
from stratus.gateway.invocations import Invocations
from stratus.gateway.kv import BulkGetRequest, KVGateway, TransactionRequest, etag_of, parse_etag
from stratus.gateway.quotas import Gate
from stratus.gateway.tenants import Tenants
from stratus.protocol import keys
from stratus.store.base import Store

Handler = Callable[[Request], Awaitable[Response]]


class _AnyPath(Convertor[str]):
    """Like Starlette's ``path``, newlines included: POSIX file names and keys may hold them."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())


@dataclass(frozen=True)
class GatewayConfig:
    """Limits of the gateway; the defaults suit a gateway on the cluster's host."""

    max_body: int = 16 * 1024 * 1024
    """The largest request body, in bytes (413 past it)."""
    body_timeout_s: float = 30.0
    """A body must arrive within this (408 past it): slow clients do not hold a request."""
    token_cache_s: float = 5.0
    """How long a checked token is trusted without asking the store: a revoked token is
    refused at most this long after its revocation."""


@dataclass(frozen=True)
class Caller:
    """Who a request acts for: the operator (``tenant`` None) or a tenant, whose names
    are mapped into its namespace here, and whose calls pass ``gate``."""

    tenant: str | None
    gate: Gate | None = None

    def function(self, name: str) -> str:
        """The registered name of the caller's function or DAG ``name``."""
        return name if self.tenant is None else keys.tenant_function(self.tenant, name)

    def owns_function(self, name: str) -> str | None:
        """``name`` as the caller knows it, or None when it is not the caller's."""
        if self.tenant is None:
            return name
        if keys.tenant_of_function(name) != self.tenant:
            return None
        return name[len(keys.tenant_function(self.tenant, "")) :]

    @property
    def kv_prefix(self) -> str:
        return "" if self.tenant is None else keys.tenant_prefix(self.tenant)

    def volume(self, name: str) -> str:
        """The stored name of the caller's volume ``name`` (checked first, so a tenant's
        name cannot climb out of its namespace)."""
        check_volume_name(name)
        return (
            name
            if self.tenant is None
            else check_volume_name(keys.tenant_volume(self.tenant, name))
        )

    def owns_volume(self, name: str) -> str | None:
        if self.tenant is None:
            return name
        prefix = keys.tenant_volume(self.tenant, "")
        return name[len(prefix) :] if name.startswith(prefix) else None

    def operator_only(self) -> None:
        if self.tenant is not None:
            raise HTTPProblem(403, "AccessDenied", "only an operator token may do this")


OPERATOR = Caller(None)


class InvokeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    args: list[Any] = []
    kwargs: dict[str, Any] = {}


class _Gateway:
    def __init__(self, app: App, store: Store, config: GatewayConfig) -> None:
        self.app = app
        self.store = store
        self.config = config
        self.kv = KVGateway(store, app.values)
        self.volumes = Volumes(store)
        self.tenants = Tenants(store)
        self.tokens = self.tenants.tokens
        self.invocations = Invocations()
        self._handles: dict[str, Function | Dag] = {}
        self._trusted: dict[str, tuple[Caller, float]] = {}  # token -> (caller, until)
        self._gates: dict[str, Gate] = {}  # tenant -> its gate, kept while its quotas are

    # ------------------------------------------------------------------ plumbing

    async def authenticate(self, request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPProblem(401, "Unauthorized", "send Authorization: Bearer <token>")
        now = time.monotonic()
        cached = self._trusted.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        caller = await run_in_threadpool(self._caller_of, token, now)
        if caller is None:
            raise HTTPProblem(401, "Unauthorized", "unknown or revoked token")
        if len(self._trusted) > 10_000:
            self._trusted.clear()  # bounded: tokens are few, garbage is not
        self._trusted[token] = (caller, now + self.config.token_cache_s)
        return caller

    def _caller_of(self, token: str, now: float) -> Caller | None:
        record = self.tokens.check(token)
        if record is None:
            return None
        if record.tenant is None:
            return OPERATOR
        try:
            tenant = self.tenants.get(record.tenant)
        except TenantNotFound:
            return None  # deleted (its tokens are revoked with it, but not atomically)
        gate = self._gates.get(tenant.name)
        if gate is None or gate.quotas != tenant.quotas:  # new, or its quotas changed
            gate = self._gates[tenant.name] = Gate(tenant.name, tenant.quotas, now)
        return Caller(tenant.name, gate)

    async def check_room(self, caller: Caller, adding: int) -> None:
        """Refuse a write of ``adding`` bytes that would take the caller past its stored
        bytes quota (the body's size stands for what the write adds)."""
        quota = None if caller.gate is None else caller.gate.quotas.stored_bytes
        if quota is None or caller.tenant is None:
            return
        used = await run_in_threadpool(self.tenants.stored_bytes, caller.tenant)
        if used + adding > quota:
            raise HTTPProblem(
                413, "QuotaExceeded", f"tenant {caller.tenant!r} may store {quota} bytes"
            )

    async def body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (
            not declared.isdigit() or int(declared) > self.config.max_body
        ):
            raise HTTPProblem(
                413, "PayloadTooLarge", f"bodies are at most {self.config.max_body} bytes"
            )

        async def read() -> bytes:
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.config.max_body:
                    raise HTTPProblem(
                        413, "PayloadTooLarge", f"bodies are at most {self.config.max_body} bytes"
                    )
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            return await asyncio.wait_for(read(), self.config.body_timeout_s)
        except TimeoutError:
            raise HTTPProblem(408, "RequestTimeout", "the body did not arrive in time") from None

    async def json_body(self, request: Request, type_: type[Any]) -> Any:
        return _decoded(await self.body(request), type_)

    async def handle(self, name: str, kind: type[Function] | type[Dag]) -> Function | Dag:
        """The handle of the function or DAG registered as ``name`` (the caller's name
        mapped into its namespace already)."""
        handle = self._handles.get(name)
        if handle is None:
            handle = await run_in_threadpool(self.app.lookup, name)
            if len(self._handles) > 10_000:
                self._handles.clear()
            self._handles[name] = handle
        if not isinstance(handle, kind):
            what = "DAG" if kind is Dag else "function"
            raise HTTPProblem(404, "FunctionNotFound", f"{name!r} is not a {what}")
        return handle

    # ------------------------------------------------------------------ functions

    async def list_functions(self, request: Request) -> Response:
        caller: Caller = request.state.caller
        status = await run_in_threadpool(self.app.status)
        functions = [
            {"name": name, "version": f.version, "timeout": f.options.timeout}
            for f in status.functions
            if (name := caller.owns_function(f.name)) is not None
        ]
        dags = [name for d in status.dags if (name := caller.owns_function(d)) is not None]
        return JSONResponse({"functions": functions, "dags": dags})

    async def invoke_function(self, request: Request) -> Response:
        return await self._invoke(request, Function)

    async def invoke_dag(self, request: Request) -> Response:
        return await self._invoke(request, Dag)

    async def _invoke(self, request: Request, kind: type[Function] | type[Dag]) -> Response:
        caller: Caller = request.state.caller
        call = await self.json_body(request, InvokeRequest)
        name = request.path_params["name"]
        try:
            handle = await self.handle(caller.function(name), kind)
        except FunctionNotFound:
            raise FunctionNotFound(name) from None  # named as the caller knows it
        asynchronous = request.query_params.get("async", "0") not in ("0", "false", "")
        if asynchronous:
            self.invocations.check_room()
        gate = caller.gate
        if gate is not None:
            gate.admit(time.monotonic())
        try:
            future = handle.remote(*call.args, **call.kwargs)
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        if asynchronous:
            if gate is not None:
                future.add_done_callback(lambda _: gate.release())
            invocation_id = self.invocations.add(future, caller.tenant)
            return JSONResponse({"invocation_id": invocation_id}, status_code=202)
        try:
            return _result_response(future.invocation_id, await _settled(future))
        finally:
            if gate is not None:
                gate.release()

    async def get_invocation(self, request: Request) -> Response:
        caller: Caller = request.state.caller
        future = self.invocations.get(request.path_params["id"], caller.tenant)
        if not future.done():
            return JSONResponse({"invocation_id": future.invocation_id, "status": "running"})
        error = future.exception()
        if error is not None:
            body = response_of(error)
            return JSONResponse(
                {"invocation_id": future.invocation_id, "status": "failed"}
                | msgspec.json.decode(body.body),
            )
        return _result_response(future.invocation_id, future.result())

    # ------------------------------------------------------------------ kv

    async def kv_get(self, request: Request) -> Response:
        prefix = request.state.caller.kv_prefix
        value, version = await run_in_threadpool(self.kv.get, request.path_params["key"], prefix)
        if version == 0 or value is None:
            raise HTTPProblem(404, "KeyNotFound", f"no key {request.path_params['key']!r}")
        return Response(
            _json_of(value, "the value"),
            media_type="application/json",
            headers={"ETag": etag_of(version)},
        )

    async def kv_put(self, request: Request) -> Response:
        raw = await self.body(request)
        try:
            value = msgspec.json.decode(raw)
        except msgspec.DecodeError as e:
            raise HTTPProblem(400, "BadJSON", str(e)) from None
        key = request.path_params["key"]
        expected = _precondition(request)
        caller: Caller = request.state.caller
        await self.check_room(caller, len(raw))
        version = await run_in_threadpool(self.kv.put, key, value, expected, caller.kv_prefix)
        return JSONResponse(
            {"key": key, "etag": etag_of(version)}, headers={"ETag": etag_of(version)}
        )

    async def kv_delete(self, request: Request) -> Response:
        key = request.path_params["key"]
        expected = _precondition(request)
        await run_in_threadpool(self.kv.delete, key, expected, request.state.caller.kv_prefix)
        return Response(status_code=204)

    async def kv_list(self, request: Request) -> Response:
        names = await run_in_threadpool(
            self.kv.keys, request.query_params.get("prefix", ""), request.state.caller.kv_prefix
        )
        return JSONResponse({"keys": names})

    async def kv_bulk_get(self, request: Request) -> Response:
        wanted = await self.json_body(request, BulkGetRequest)
        items = await run_in_threadpool(
            self.kv.get_many, wanted.keys, request.state.caller.kv_prefix
        )
        return Response(_json_of({"items": items}, "a value"), media_type="application/json")

    async def kv_transaction(self, request: Request) -> Response:
        caller: Caller = request.state.caller
        raw = await self.body(request)
        txn = _decoded(raw, TransactionRequest)
        await self.check_room(caller, len(raw))
        versions = await run_in_threadpool(self.kv.transact, txn.operations, caller.kv_prefix)
        return JSONResponse({"etags": {k: etag_of(v) for k, v in versions.items()}})

    # ------------------------------------------------------------------ files

    def check_volume(self, name: str) -> None:
        """``VolumeNotFound`` unless ``name`` exists: reading or deleting must not make it."""
        if self.store.get(fs_keys.volume_record(check_volume_name(name))).value is None:
            raise VolumeNotFound(name)

    async def list_volumes(self, request: Request) -> Response:
        caller: Caller = request.state.caller
        names = await run_in_threadpool(self.volumes.list)
        owned = [name for v in names if (name := caller.owns_volume(v)) is not None]
        return JSONResponse({"volumes": owned})

    async def file_get(self, request: Request) -> Response:
        volume, path = _volume_and_path(request)

        def read() -> Response:
            self.check_volume(volume)
            with transaction(self.volumes, volume) as fs:
                if fs.isdir(path):
                    return JSONResponse({"path": path, "entries": sorted(fs.listdir(path))})
                return Response(fs.read_bytes(path), media_type="application/octet-stream")

        return await run_in_threadpool(_files(read))

    async def file_put(self, request: Request) -> Response:
        volume, path = _volume_and_path(request)
        data = await self.body(request)
        await self.check_room(request.state.caller, len(data))

        def write() -> Response:
            with transaction(self.volumes, volume) as fs:
                parent = path.rsplit("/", 1)[0]
                if parent:
                    fs.makedirs(parent, exist_ok=True)
                fs.write_bytes(path, data)
            return JSONResponse({"path": path, "size": len(data)}, status_code=201)

        return await run_in_threadpool(_files(write))

    async def file_delete(self, request: Request) -> Response:
        volume, path = _volume_and_path(request)

        def remove() -> Response:
            self.check_volume(volume)
            with transaction(self.volumes, volume) as fs:
                fs.remove(path)
            return Response(status_code=204)

        return await run_in_threadpool(_files(remove))


def _decoded(raw: bytes, type_: type[Any]) -> Any:
    """A JSON body as ``type_`` (empty: ``{}``), or 400."""
    if not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as e:
        raise HTTPProblem(400, "BadRequest", str(e)) from None
    except msgspec.DecodeError as e:
        raise HTTPProblem(400, "BadJSON", str(e)) from None


def _volume_and_path(request: Request) -> tuple[str, str]:
    """The stored name of the volume a file route names (in the caller's namespace), and
    the file's path."""
    caller: Caller = request.state.caller
    return caller.volume(request.path_params["volume"]), "/" + request.path_params["path"]


SPIN_S = 300e-6
"""How long a call's reply is polled for on the event loop before it is awaited."""


async def _settled(future: Future[Any]) -> Any:
    """The future's result. A warm call answers within ~100-200 us: polling for it on the
    loop saves the hand-off through the client's pump thread and back (two cross-core
    wake-ups); a longer call is awaited, so the loop serves others meanwhile."""
    deadline = time.perf_counter() + SPIN_S
    while time.perf_counter() < deadline:
        if future.done():
            return future.result()
    return await future


def _files(fn: Callable[[], Response]) -> Callable[[], Response]:
    """``fn`` with the file system's ``OSError``s as HTTP problems."""

    def run() -> Response:
        try:
            return fn()
        except FileNotFoundError as e:
            raise HTTPProblem(404, "FileNotFoundError", str(e)) from None
        except IsADirectoryError as e:
            raise HTTPProblem(409, "IsADirectoryError", str(e)) from None
        except (NotADirectoryError, FileExistsError) as e:
            raise HTTPProblem(409, type(e).__name__, str(e)) from None
        except (OSError, ValueError) as e:
            raise HTTPProblem(400, type(e).__name__, str(e)) from None

    return run


def _precondition(request: Request) -> int | None:
    """The version ``If-Match`` requires, 0 for ``If-None-Match: *``, else None."""
    if request.headers.get("if-none-match", "").strip() == "*":
        return 0
    return parse_etag(request.headers.get("if-match"))


def _result_response(invocation_id: str, result: Any) -> Response:
    try:
        body = msgspec.json.encode(
            {"invocation_id": invocation_id, "status": "done", "result": result}
        )
    except (TypeError, OverflowError) as e:
        raise HTTPProblem(502, "ResultNotJSON", f"the function's result is not JSON: {e}") from None
    return Response(body, media_type="application/json")


def _json_of(value: Any, what: str) -> bytes:
    """``value`` as JSON, or 406 for a value a Python caller stored that JSON cannot hold."""
    try:
        return msgspec.json.encode(value)
    except (TypeError, OverflowError) as e:
        raise HTTPProblem(
            406, "ValueNotJSON", f"{what} is not representable as JSON: {e}"
        ) from None


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi.SPEC)


def _guarded(gateway: _Gateway, handler: Handler, *, query: tuple[str, ...] = ()) -> Handler:
    """``handler`` behind the token check (first: a caller without a valid token learns
    nothing else), with unknown query parameters refused (a typo such as ``?asnyc=1``
    must not silently make a call synchronous) and errors as JSON."""

    async def guarded(request: Request) -> Response:
        try:
            request.state.caller = await gateway.authenticate(request)
            unknown = set(request.query_params) - set(query)
            if unknown:
                raise HTTPProblem(
                    400, "UnknownParameter", f"unknown query parameters: {sorted(unknown)}"
                )
            return await handler(request)
        except (HTTPProblem, StratusError) as e:
            return response_of(e)

    return guarded


async def _http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(error.status_code, "HTTPError")
    problem = HTTPProblem(error.status_code, kind, str(error.detail))
    response = response_of(problem)
    response.headers.update(error.headers or {})  # a 405's Allow
    return response


def _operator_only(handler: Handler) -> Handler:
    """``handler`` for operator tokens; 403 for a tenant's (the dashboard shows the
    whole cluster)."""

    async def checked(request: Request) -> Response:
        request.state.caller.operator_only()
        return await handler(request)

    return checked


def _own_logs(ui: Dashboard) -> Handler:
    """The dashboard's log route, for the caller's own functions only."""

    async def logs(request: Request) -> Response:
        caller: Caller = request.state.caller
        name = caller.function(request.path_params["name"])
        return await ui.logs(request, name)

    return logs


def _by_method(gateway: _Gateway, path: str, **handlers: Handler) -> Route:
    """One route for a path served by several methods, so that a 405 lists them all."""

    async def dispatch(request: Request) -> Response:
        return await handlers[request.method](request)

    return Route(path, _guarded(gateway, dispatch), methods=list(handlers))


def build_app(app: App, store: Store, config: GatewayConfig | None = None) -> Starlette:
    """The gateway for ``app``'s cluster, whose state is in ``store``."""
    g = _Gateway(app, store, config or GatewayConfig())
    ui = Dashboard(app)
    routes = [
        Route("/ui", ui.page),
        Route("/v1/dashboard", _guarded(g, _operator_only(ui.data))),
        Route("/v1/dashboard/events", _guarded(g, _operator_only(ui.events))),
        Route("/v1/functions/{name}/logs", _guarded(g, _own_logs(ui), query=("invocation",))),
        Route("/v1/health", _health),
        Route("/openapi.json", _openapi),
        Route("/v1/functions", _guarded(g, g.list_functions)),
        Route(
            "/v1/functions/{name}:invoke",
            _guarded(g, g.invoke_function, query=("async",)),
            methods=["POST"],
        ),
        Route(
            "/v1/dags/{name}:invoke", _guarded(g, g.invoke_dag, query=("async",)), methods=["POST"]
        ),
        Route("/v1/invocations/{id}", _guarded(g, g.get_invocation)),
        Route("/v1/kv", _guarded(g, g.kv_list, query=("prefix",))),
        Route("/v1/kv:bulkget", _guarded(g, g.kv_bulk_get), methods=["POST"]),
        Route("/v1/kv:transaction", _guarded(g, g.kv_transaction), methods=["POST"]),
        _by_method(g, "/v1/kv/{key:anypath}", GET=g.kv_get, PUT=g.kv_put, DELETE=g.kv_delete),
        Route("/v1/volumes", _guarded(g, g.list_volumes)),
        _by_method(
            g,
            "/v1/volumes/{volume}/files/{path:anypath}",
            GET=g.file_get,
            PUT=g.file_put,
            DELETE=g.file_delete,
        ),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await ui.stop()

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception},  # Starlette's 404/405 as JSON
    )


def serve(
    app: App, store: Store, host: str, port: int, config: GatewayConfig | None = None
) -> None:
    """Serve the gateway in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(
        build_app(app, store, config),
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=5,
        limit_concurrency=1000,
    )
