"""The gateway benchmark's baseline: a FastAPI app that calls a Python function in-process.

What any HTTP service costs before it does anything: served by uvicorn with the same
settings as the stratus gateway, so the difference is what stratus adds.
"""

from typing import Any

from fastapi import FastAPI

app = FastAPI()


def noop(x: Any) -> Any:
    return x


@app.post("/v1/functions/noop:invoke")
async def invoke(body: dict[str, Any]) -> dict[str, Any]:
    return {"status": "done", "result": noop(*body.get("args", []))}
