"""A provider's failed call tells the same story whichever way the gateway made it.

A fake provider (a real Starlette app answering as OpenAI and Anthropic do) is called
from a gateway (FastAPI under ``errtrace.instrument``) through errtrace's httpx client
and through the real ``openai`` SDK, both over ``httpx.ASGITransport`` so that the
request keeps the provider's host name. The answers and events must carry the
provider's status and its request id under the same keys, and with ``debug`` on the
provider's own message is the ``detail``; with it off, that message never reaches the
client.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import errtrace
from errtrace.adapters import httpx as eh
from errtrace.core import runtime as runtime_module
from errtrace.core.llm_hosts import provider_request_id
from errtrace.testing import capture_events

OPENAI_MESSAGE = (
    "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): "
    "Limit 30000, Used 29000, Requested 2000. Please try again in 2s."
)
ANTHROPIC_MESSAGE = "Overloaded"


async def _openai(request: Request) -> JSONResponse:
    body = {"error": {"message": OPENAI_MESSAGE, "type": "tokens",
                      "code": "rate_limit_exceeded", "param": None}}
    return JSONResponse(body, status_code=429, headers={"x-request-id": "req_7f3a9c"})


async def _anthropic(request: Request) -> JSONResponse:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": ANTHROPIC_MESSAGE}}
    return JSONResponse(body, status_code=529, headers={"request-id": "req_011CXyz"})


PROVIDER = Starlette(routes=[
    Route("/v1/chat/completions", _openai, methods=["POST"]),
    Route("/v1/messages", _anthropic, methods=["POST"]),
])
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _keep_default_runtime() -> Any:
    saved = runtime_module._default
    yield
    runtime_module._default = saved


def gateway(debug: bool) -> FastAPI:
    app = FastAPI()

    @app.post("/httpx/openai")
    async def via_httpx_openai() -> Any:
        async with eh.async_client(transport=httpx.ASGITransport(app=PROVIDER)) as client:
            await client.post("https://api.openai.com/v1/chat/completions", json=CHAT)

    @app.post("/httpx/anthropic")
    async def via_httpx_anthropic() -> Any:
        async with eh.async_client(transport=httpx.ASGITransport(app=PROVIDER)) as client:
            await client.post("https://api.anthropic.com/v1/messages", json=CHAT)

    @app.post("/sdk/openai")
    async def via_sdk() -> Any:
        transport = httpx.ASGITransport(app=PROVIDER)
        async with httpx.AsyncClient(transport=transport) as http:
            sdk = openai.AsyncOpenAI(
                api_key="sk-test", base_url="https://api.openai.com/v1",
                http_client=http, max_retries=0,
            )
            await sdk.chat.completions.create(**CHAT)  # type: ignore[call-overload]

    return errtrace.instrument(app, service_name="gateway", debug=debug)


async def call(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.post(path)


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/httpx/openai", "/sdk/openai"])
async def test_openai_rate_limit_same_keys_either_way(path: str) -> None:
    with capture_events() as events:
        response = await call(gateway(debug=False), path)
    body = response.json()
    assert response.status_code == 429 and body["code"] == "LLM_RATE_LIMITED"
    assert body["details"]["provider_status"] == 429
    assert body["details"]["provider_request_id"] == "req_7f3a9c"
    assert OPENAI_MESSAGE not in response.text  # debug off: not the provider's words
    (event,) = events
    assert event.details["provider_request_id"] == "req_7f3a9c"
    assert event.details["provider_status"] == 429
    assert event.private_provider_text is not None
    assert OPENAI_MESSAGE in event.private_provider_text


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/httpx/openai", "/sdk/openai"])
async def test_debug_shows_the_providers_message_either_way(path: str) -> None:
    response = await call(gateway(debug=True), path)
    assert response.json()["detail"] == OPENAI_MESSAGE


@pytest.mark.anyio
async def test_anthropic_request_id_header() -> None:
    response = await call(gateway(debug=True), "/httpx/anthropic")
    body = response.json()
    assert body["code"] == "LLM_OVERLOADED"
    assert body["details"]["provider_request_id"] == "req_011CXyz"
    assert body["details"]["provider_status"] == 529
    assert body["detail"] == ANTHROPIC_MESSAGE


@pytest.mark.parametrize(
    ("headers", "wanted"),
    [
        ({"x-request-id": " req_1 "}, "req_1"),
        ({"request-id": "req_2"}, "req_2"),
        ({"apim-request-id": "6c8e-11"}, "6c8e-11"),
        ({"x-request-id": "bad id with spaces", "request-id": "req_3"}, "req_3"),
        ({"x-request-id": "x" * 129}, None),
        ({"x-request-id": "caf\u00e9"}, None),
        ({}, None),
    ],
)
def test_request_id_is_bounded_visible_ascii(
    headers: dict[str, str], wanted: str | None
) -> None:
    assert provider_request_id(headers.get) == wanted


def test_a_failing_headers_object_gives_no_id() -> None:
    def get(name: str) -> str:
        raise RuntimeError("broken")

    assert provider_request_id(get) is None
