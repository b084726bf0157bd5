"""The ``gateway`` service: FastAPI, the public entry point.

``POST /chat`` with ``{"prompt": "..."}`` (1 to 2000 characters). It calls the
orchestrator with errtrace's httpx client: the context goes out in the headers, and an
error answer comes back as an ``AppError`` keeping the remote code and event chain.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

import errtrace
from errtrace.adapters.httpx import async_client
from examples.chain.trail import hop

SERVICE_NAME = "gateway"


class Chat(BaseModel):
    """A chat request."""

    prompt: str = Field(min_length=1, max_length=2000)


def create_app(orchestrator_url: str) -> FastAPI:
    """The FastAPI app, calling the orchestrator at ``orchestrator_url``."""
    app = errtrace.instrument(FastAPI(title="gateway"), service_name=SERVICE_NAME)

    @app.post("/chat")
    async def chat(body: Chat) -> dict[str, Any]:
        hop(SERVICE_NAME, "calling orchestrator")
        async with async_client(base_url=orchestrator_url, timeout=10) as client:
            response = await client.post("/generate", json={"prompt": body.prompt})
        hop(SERVICE_NAME, "orchestrator answered")
        ctx = errtrace.current()
        return {"answer": response.json()["text"], "trace_id": ctx.trace_id if ctx else None}

    return app
