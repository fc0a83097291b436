"""The gateway's OpenAPI 3.1 description, served at ``/openapi.json``.

Written by hand, next to the routes in ``app.py``: it is the contract HTTP callers code
against, and the fuzz tests check the app against it.
"""

from __future__ import annotations

from typing import Any

from stratus.gateway.kv import ETAG_PATTERN

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_ERROR = _json(_ref("Error"), "an error, named by its stratus type")
_ERRORS = {
    str(code): _ERROR for code in (400, 401, 403, 404, 406, 408, 409, 412, 413, 429, 502, 503, 504)
}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses | _ERRORS, **extra}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 256}
_ETAG = {
    "type": ["string", "null"],
    "pattern": ETAG_PATTERN,
    "description": "the version the key must still have",
}
_VALUE = {"not": {"type": "null"}, "description": "any JSON value but null"}
_KEY = {"name": "key", "in": "path", "required": True, "schema": _KEY_SCHEMA}
_VOLUME = {
    "name": "volume",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
}
_PATH = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": ETAG_PATTERN},
    "description": "the key's ETag (its version): the write happens only if it is current",
}
_ASYNC = {
    "name": "async",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["0", "1"]},
    "description": "1: return 202 with an invocation id at once; poll /v1/invocations/{id}",
}
_INVOKE_BODY = {"required": False, "content": {_JSON: {"schema": _ref("InvokeRequest")}}}
_INVOKED = {
    "200": _json(_ref("Invocation"), "the call's result"),
    "202": _json(_ref("Invocation"), "accepted; poll its id"),
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "stratus gateway", "version": "1"},
    "security": [{"bearer": []}],
    "paths": {
        "/v1/health": {
            "get": {
                "summary": "liveness",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "the gateway is up")},
            }
        },
        "/v1/functions": {
            "get": _op("functions and DAGs", {"200": _json(_ref("Listing"), "what is registered")})
        },
        "/v1/functions/{name}:invoke": {
            "post": _op(
                "call a function",
                _INVOKED,
                parameters=[_NAME, _ASYNC],
                requestBody=_INVOKE_BODY,
            )
        },
        "/v1/dags/{name}:invoke": {
            "post": _op(
                "call a DAG", _INVOKED, parameters=[_NAME, _ASYNC], requestBody=_INVOKE_BODY
            )
        },
        "/v1/dashboard": {
            "get": _op(
                "the dashboard's numbers: per function rates, latencies, errors, cold starts, "
                "pools and series; recent invocations; usage and cost per function and tenant "
                "(live as server-sent events at /v1/dashboard/events)",
                {"200": _json({"type": "object"}, "a snapshot")},
            )
        },
        "/v1/functions/{name}/logs": {
            "get": _op(
                "what a function's invocations printed (the last 200 lines)",
                {"200": _json(_ref("Logs"), "log lines, oldest first")},
                parameters=[
                    _NAME,
                    {
                        "name": "invocation",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/v1/invocations/{id}": {
            "get": _op(
                "an asynchronous invocation's state",
                {"200": _json(_ref("Invocation"), "running, done or failed")},
                parameters=[
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            )
        },
        "/v1/kv": {
            "get": _op(
                "list keys",
                {"200": _json(_ref("Keys"), "the keys under the prefix")},
                parameters=[
                    {
                        "name": "prefix",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
        "/v1/kv:bulkget": {
            "post": _op(
                "read several keys",
                {"200": _json(_ref("BulkItems"), "the keys that exist, with their ETags")},
                requestBody={"required": True, "content": {_JSON: {"schema": _ref("BulkGet")}}},
            )
        },
        "/v1/kv:transaction": {
            "post": _op(
                "write several keys atomically",
                {"200": _json(_ref("Etags"), "the new ETags")},
                requestBody={"required": True, "content": {_JSON: {"schema": _ref("Transaction")}}},
            )
        },
        "/v1/kv/{key}": {
            "get": _op(
                "read a key",
                {"200": _json({}, "the value; its version in the ETag header")},
                parameters=[_KEY],
            ),
            "put": _op(
                "write a key",
                {"200": _json(_ref("Written"), "the new ETag")},
                parameters=[_KEY, _IF_MATCH],
                requestBody={"required": True, "content": {_JSON: {"schema": _VALUE}}},
            ),
            "delete": _op(
                "delete a key",
                {"204": {"description": "deleted"}},
                parameters=[_KEY, _IF_MATCH],
            ),
        },
        "/v1/volumes": {
            "get": _op("volumes", {"200": _json(_ref("Volumes"), "the volumes")}),
        },
        "/v1/volumes/{volume}/files/{path}": {
            "get": _op(
                "read a file, or list a directory",
                {
                    "200": {
                        "description": "the file's bytes, or a directory's entries as JSON",
                        "content": {
                            "application/octet-stream": {"schema": {"type": "string"}},
                            _JSON: {"schema": _ref("Directory")},
                        },
                    }
                },
                parameters=[_VOLUME, _PATH],
            ),
            "put": _op(
                "write a file (one transaction; parents are made)",
                {"201": _json(_ref("FileWritten"), "written")},
                parameters=[_VOLUME, _PATH],
                requestBody={
                    "required": False,  # no body: an empty file
                    "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                },
            ),
            "delete": _op(
                "remove a file", {"204": {"description": "removed"}}, parameters=[_VOLUME, _PATH]
            ),
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["type", "message"],
                        "properties": {
                            "type": {"type": "string"},
                            "message": {"type": "string"},
                            "remote_type": {"type": "string"},
                            "traceback": {"type": "string"},
                            "invocation_id": {"type": "string"},
                        },
                    }
                },
            },
            "InvokeRequest": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"args": {"type": "array"}, "kwargs": {"type": "object"}},
            },
            "Invocation": {
                "type": "object",
                "required": ["invocation_id"],
                "properties": {
                    "invocation_id": {"type": "string"},
                    "status": {"type": "string", "enum": ["running", "done", "failed"]},
                    "result": {},
                    "error": {"type": "object"},
                },
            },
            "Logs": {
                "type": "object",
                "properties": {"lines": {"type": "array", "items": {"type": "object"}}},
            },
            "Listing": {
                "type": "object",
                "properties": {
                    "functions": {"type": "array", "items": {"type": "object"}},
                    "dags": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Keys": {
                "type": "object",
                "properties": {"keys": {"type": "array", "items": {"type": "string"}}},
            },
            "BulkGet": {
                "type": "object",
                "required": ["keys"],
                "additionalProperties": False,
                "properties": {"keys": {"type": "array", "items": _KEY_SCHEMA, "maxItems": 100}},
            },
            "BulkItems": {
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"type": "object"}}},
            },
            "Transaction": {
                "type": "object",
                "required": ["operations"],
                "additionalProperties": False,
                "properties": {
                    "operations": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 100,
                        "items": {"oneOf": [_ref("Upsert"), _ref("Delete")]},
                    }
                },
            },
            "Upsert": {
                "type": "object",
                "required": ["operation", "key", "value"],
                "additionalProperties": False,
                "properties": {
                    "operation": {"const": "upsert"},
                    "key": _KEY_SCHEMA,
                    "value": _VALUE,
                    "etag": _ETAG,
                },
            },
            "Delete": {
                "type": "object",
                "required": ["operation", "key"],
                "additionalProperties": False,
                "properties": {
                    "operation": {"const": "delete"},
                    "key": _KEY_SCHEMA,
                    "etag": _ETAG,
                },
            },
            "Etags": {
                "type": "object",
                "properties": {"etags": {"type": "object"}},
            },
            "Written": {
                "type": "object",
                "properties": {"key": {"type": "string"}, "etag": {"type": "string"}},
            },
            "Volumes": {
                "type": "object",
                "properties": {"volumes": {"type": "array", "items": {"type": "string"}}},
            },
            "Directory": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "entries": {"type": "array", "items": {"type": "string"}},
                },
            },
            "FileWritten": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "size": {"type": "integer"}},
            },
        },
    },
}
