"""The classifier wired into the middlewares: LLM SDK exceptions escaping a handler and
(when enabled for a route) un-coded error responses become structured LLM_* errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.responses import JSONResponse, PlainTextResponse

import errtrace

pytestmark = pytest.mark.anyio

OPENAI_CONTEXT = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, you "
        "requested 9001 tokens (8000 in the messages, 1001 in the completion). Please "
        "reduce the length of the messages or completion.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
RATE_TEXT = (
    "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): "
    "Limit 30000, Used 29937, Requested 385. Please try again in 6.5s."
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def openai_rate_limit() -> openai.RateLimitError:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    body = {"error": {"message": RATE_TEXT, "type": "tokens", "code": "rate_limit_exceeded"}}
    response = httpx.Response(429, request=request, json=body, headers={"retry-after": "7"})
    return openai.RateLimitError(RATE_TEXT, response=response, body=body)  # type: ignore[arg-type]


def fastapi_app(**options: Any) -> FastAPI:
    app = errtrace.instrument(FastAPI(), **options)

    @app.get("/llm/sdk")
    async def sdk() -> None:
        raise openai_rate_limit()

    @app.get("/llm/json")
    async def provider_json() -> JSONResponse:
        return JSONResponse(OPENAI_CONTEXT, status_code=400)

    @app.get("/llm/text")
    async def provider_text() -> PlainTextResponse:
        return PlainTextResponse(RATE_TEXT, status_code=429)

    @app.get("/plain/text")
    async def not_rewritten() -> PlainTextResponse:
        return PlainTextResponse("overloaded_error", status_code=529)

    @app.get("/llm/ok")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}

    return app


async def get(app: Any, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await c.get(path)


async def test_llm_sdk_exception_escaping_a_handler_is_classified() -> None:
    with errtrace.testing.capture_events() as events:
        r = await get(fastapi_app(), "/llm/sdk")
    assert r.status_code == 429
    body = r.json()
    assert body["code"] == "LLM_RATE_LIMITED" and body["retryable"] is True
    assert r.headers["retry-after"] == "7"
    assert "org-abc" not in r.text  # provider text stays server side
    provider_text = events[0].private_provider_text
    assert provider_text is not None and "org-abc" in provider_text


async def test_provider_text_shown_only_in_debug() -> None:
    r = await get(fastapi_app(debug=True), "/llm/sdk")
    assert "org-abc" in r.text


async def test_uncoded_error_responses_rewritten_on_enabled_routes() -> None:
    app = fastapi_app(rewrite_responses=["/llm"])
    json_r = await get(app, "/llm/json")
    text_r = await get(app, "/llm/text")
    plain_r = await get(app, "/plain/text")
    ok_r = await get(app, "/llm/ok")
    assert json_r.status_code == 400
    assert json_r.json()["code"] == "LLM_CONTEXT_LENGTH_EXCEEDED"
    assert json_r.json()["details"]["provider_error_code"] == "context_length_exceeded"
    assert "9001" not in json_r.text or "requested_tokens" in json_r.json()["details"]
    assert text_r.status_code == 429 and text_r.json()["code"] == "LLM_RATE_LIMITED"
    assert text_r.headers["x-error-code"] == "LLM_RATE_LIMITED"
    assert "org-abc" not in text_r.text
    assert (plain_r.status_code, plain_r.text) == (529, "overloaded_error")  # route not enabled
    assert ok_r.json() == {"ok": "yes"}


async def test_coded_error_responses_are_left_alone() -> None:
    app = fastapi_app(rewrite_responses=True)

    @app.get("/coded")
    async def coded() -> None:
        raise errtrace.AppError("AI_POLICY_REJECTED")

    r = await get(app, "/coded")
    assert r.json()["code"] == "AI_POLICY_REJECTED"


def flask_app(**options: Any) -> Flask:
    app = Flask(__name__)

    @app.get("/llm/json")
    def provider_json() -> Any:
        return OPENAI_CONTEXT, 400

    @app.get("/llm/sdk")
    def sdk() -> Any:
        raise openai_rate_limit()

    @app.get("/llm/stream")
    def stream() -> Any:
        def gen() -> Any:
            yield "overloaded_error: "
            yield "Overloaded"

        return app.response_class(gen(), status=529, mimetype="text/plain")

    @app.get("/plain")
    def plain() -> Any:
        return "overloaded_error", 529

    return errtrace.instrument(app, **options)


def test_flask_rewrites_and_classifies() -> None:
    client = flask_app(rewrite_responses=["/llm"]).test_client()
    r_json = client.get("/llm/json")
    r_sdk = client.get("/llm/sdk")
    r_stream = client.get("/llm/stream")
    r_plain = client.get("/plain")
    assert r_json.status_code == 400
    assert json.loads(r_json.data)["code"] == "LLM_CONTEXT_LENGTH_EXCEEDED"
    assert r_sdk.status_code == 429 and r_sdk.headers["X-Error-Code"] == "LLM_RATE_LIMITED"
    assert r_stream.status_code == 503
    assert json.loads(r_stream.data)["code"] == "LLM_OVERLOADED"
    assert (r_plain.status_code, r_plain.data) == (529, b"overloaded_error")


def test_flask_rewritten_response_keeps_the_providers_headers_and_uses_fallbacks() -> None:
    errtrace.set_fallback(
        "LLM_CONTEXT_LENGTH_EXCEEDED", lambda err, ctx: {"answer": "summarised first"}
    )
    app = flask_app(rewrite_responses=["/llm"])

    @app.get("/llm/limited")
    def limited() -> Any:
        return "Rate limit exceeded", 429, {
            "Retry-After": "30", "x-ratelimit-remaining-requests": "0",
            "x-error-level": "6",
        }

    client = app.test_client()
    with errtrace.testing.capture_events() as events:
        limited_r = client.get("/llm/limited")
        fallback_r = client.get("/llm/json")
    assert limited_r.status_code == 429
    assert json.loads(limited_r.data)["code"] == "LLM_RATE_LIMITED"
    assert limited_r.headers["Retry-After"] == "30"
    assert limited_r.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited_r.headers.getlist("x-error-level") == ["2"]
    assert fallback_r.status_code == 200
    assert json.loads(fallback_r.data) == {"answer": "summarised first"}
    assert [(e.code, e.fallback) for e in events] == [
        ("LLM_RATE_LIMITED", None), ("LLM_CONTEXT_LENGTH_EXCEEDED", "applied"),
    ]



def test_flask_rewritten_response_keeps_every_value_of_a_repeated_header() -> None:
    app = flask_app(rewrite_responses=["/llm"])

    @app.get("/llm/cookies")
    def cookies() -> Any:
        return "Rate limit reached for gpt-4o", 500, [
            ("Set-Cookie", "__cf_bm=a1; Path=/"), ("Set-Cookie", "_cfuvid=b2; Path=/"),
        ]

    r = app.test_client().get("/llm/cookies")
    assert r.status_code == 429 and json.loads(r.data)["code"] == "LLM_RATE_LIMITED"
    assert r.headers.getlist("Set-Cookie") == ["__cf_bm=a1; Path=/", "_cfuvid=b2; Path=/"]

def test_httpx_failure_escaping_a_handler_maps_to_upstream_code() -> None:
    app = Flask(__name__)

    @app.get("/call")
    def call() -> Any:
        with httpx.Client(timeout=0.5) as c:
            return c.get("http://127.0.0.1:9/never").text  # port 9: nothing listens

    r = errtrace.instrument(app).test_client().get("/call")
    assert r.status_code == 503
    assert r.headers["X-Error-Code"] == "UPSTREAM_UNAVAILABLE"


# -- ASGI: what the rewriting send holds, rewrites and passes through -------------------


def streaming_app(**options: Any) -> FastAPI:
    """Error answers sent in several body chunks, as a proxy streaming a provider's reply."""
    from starlette.responses import StreamingResponse

    app = errtrace.instrument(FastAPI(), **options)

    @app.get("/llm/chunks")
    async def chunks() -> StreamingResponse:
        async def body() -> Any:
            yield b"overloaded_error: "
            yield b"Overloaded"

        return StreamingResponse(body(), status_code=529, media_type="text/plain")

    @app.get("/llm/big")
    async def big() -> StreamingResponse:
        async def body() -> Any:
            for _ in range(8):
                yield b"overloaded_error " * 4  # 68 bytes a chunk

        return StreamingResponse(body(), status_code=529, media_type="text/plain")

    @app.get("/llm/coded")
    async def coded() -> JSONResponse:
        return JSONResponse(
            {"message": "quota used up"}, status_code=429,
            headers={"X-Error-Code": "RATE_LIMITED"},
        )

    @app.get("/llm/missing")
    async def missing() -> None:
        from fastapi import HTTPException

        raise HTTPException(status_code=404, detail="no such model")

    return app


async def test_error_body_in_chunks_is_joined_then_rewritten() -> None:
    r = await get(streaming_app(rewrite_responses=["/llm"]), "/llm/chunks")
    assert r.status_code == 503
    assert r.json()["code"] == "LLM_OVERLOADED"
    assert r.headers["content-length"] == str(len(r.content))


async def test_error_body_over_the_limit_passes_through_unchanged() -> None:
    app = streaming_app(rewrite_responses=["/llm"], rewrite_max_body_bytes=100)
    with errtrace.testing.capture_events() as events:
        r = await get(app, "/llm/big")
    assert r.status_code == 529
    assert r.content == b"overloaded_error " * 32  # every chunk, in order, none lost
    assert r.headers["content-type"].startswith("text/plain")
    assert "x-error-code" not in r.headers
    assert len(r.headers["x-trace-id"]) == 32
    assert events == []  # passed through: nothing was classified or recorded


async def test_error_body_under_a_raised_limit_is_rewritten() -> None:
    app = streaming_app(rewrite_responses=["/llm"], rewrite_max_body_bytes=1000)
    r = await get(app, "/llm/big")
    assert r.status_code == 503 and r.json()["code"] == "LLM_OVERLOADED"


async def test_error_response_with_a_code_is_kept_as_sent() -> None:
    with errtrace.testing.capture_events() as events:
        r = await get(streaming_app(rewrite_responses=["/llm"]), "/llm/coded")
    assert r.status_code == 429
    assert r.json() == {"message": "quota used up"}
    assert r.headers["x-error-code"] == "RATE_LIMITED"
    assert events == []


async def test_framework_error_on_a_rewritten_route_is_answered_once() -> None:
    with errtrace.testing.capture_events() as events:
        r = await get(streaming_app(rewrite_responses=["/llm"]), "/llm/missing")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "NOT_FOUND"
    assert [e.code for e in events] == ["NOT_FOUND"]  # errtrace's own answer, not rewritten


async def test_rewritten_response_keeps_the_providers_delay_and_headers() -> None:
    app = errtrace.instrument(FastAPI(), rewrite_responses=["/llm"])

    @app.get("/llm/limited")
    async def limited() -> PlainTextResponse:
        return PlainTextResponse("Rate limit exceeded", status_code=429, headers={
            "Retry-After": "30", "x-ratelimit-remaining-requests": "0",
            "set-cookie": "route=b; Path=/", "x-error-level": "6",
        })

    r = await get(app, "/llm/limited")
    assert r.status_code == 429 and r.json()["code"] == "LLM_RATE_LIMITED"
    assert r.headers["retry-after"] == "30" and r.json()["retry_after"] == 30
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["set-cookie"] == "route=b; Path=/"
    # What errtrace sets itself is its own, once, and the length fits the new body.
    assert r.headers.get_list("x-error-level") == [str(r.json()["level"])]
    assert r.headers.get_list("content-type") == ["application/problem+json"]
    assert int(r.headers["content-length"]) == len(r.content)



async def test_rewritten_response_keeps_every_value_of_a_repeated_header() -> None:
    app = errtrace.instrument(FastAPI(), rewrite_responses=["/llm"])

    @app.get("/llm/limited")
    async def limited() -> PlainTextResponse:
        response = PlainTextResponse("Rate limit reached for gpt-4o", status_code=500)
        response.set_cookie("__cf_bm", "a1")
        response.set_cookie("_cfuvid", "b2")
        response.headers.append("link", "</docs/limits>; rel=help")
        response.headers.append("link", "</status>; rel=status")
        return response

    r = await get(app, "/llm/limited")
    assert r.status_code == 429 and r.json()["code"] == "LLM_RATE_LIMITED"
    cookies = r.headers.get_list("set-cookie")
    assert [c.split(";")[0] for c in cookies] == ["__cf_bm=a1", "_cfuvid=b2"]
    assert r.headers.get_list("link") == ["</docs/limits>; rel=help", "</status>; rel=status"]

async def test_rewritten_response_is_answered_by_the_codes_fallback() -> None:
    errtrace.set_fallback(
        "LLM_CONTEXT_LENGTH_EXCEEDED", lambda err, ctx: {"answer": "summarised first"}
    )
    app = fastapi_app(rewrite_responses=["/llm"])
    with errtrace.testing.capture_events() as events:
        r = await get(app, "/llm/json")
    assert r.status_code == 200 and r.json() == {"answer": "summarised first"}
    assert r.headers["x-errtrace-fallback"] == "LLM_CONTEXT_LENGTH_EXCEEDED"
    assert [(e.code, e.fallback) for e in events] == [("LLM_CONTEXT_LENGTH_EXCEEDED", "applied")]
