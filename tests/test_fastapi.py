"""FastAPI and Starlette apps instrumented in one line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, WebSocket
from fastapi.middleware.gzip import GZipMiddleware
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

import errtrace

from .conftest import TRACE_ID, TRACEPARENT, uvicorn_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Prompt(BaseModel):
    template: str
    max_tokens: int


def ctx_dict() -> dict[str, Any]:
    ctx = errtrace.current()
    assert ctx is not None
    return ctx.as_dict()


def make_fastapi(**options: Any) -> tuple[FastAPI, list[dict[str, Any]]]:
    background: list[dict[str, Any]] = []
    app = errtrace.instrument(FastAPI(), service_name="api", **options)

    def dep() -> dict[str, Any]:
        return ctx_dict()

    @app.get("/async")
    async def async_route(d: dict[str, Any] = Depends(dep)) -> dict[str, Any]:
        return {"route": ctx_dict(), "dependency": d}

    @app.get("/sync")
    def sync_route() -> dict[str, Any]:  # runs in Starlette's threadpool
        return ctx_dict()

    @app.get("/background")
    async def with_background(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(lambda: background.append(ctx_dict()))
        return {"ok": "yes"}

    @app.get("/llm")
    async def llm() -> None:
        raise errtrace.AppError("LLM_CONTEXT_LENGTH_EXCEEDED", details={"limit_tokens": 8192})

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("internal secret: key=sk-123")

    @app.get("/http")
    async def http_error() -> None:
        raise HTTPException(status_code=403, detail="not your tenant")

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418)

    @app.post("/prompt")
    async def prompt(p: Prompt) -> Prompt:
        return p

    @app.get("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        await asyncio.sleep(0.001)  # let other requests interleave
        return {"ctx": ctx_dict(), "outgoing": errtrace.outgoing_headers()}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> Any:
            yield "data: one\n\n"
            raise errtrace.AppError("LLM_SERVER_ERROR")

        return StreamingResponse(gen(), media_type="text/event-stream")

    return app, background


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


H = {"traceparent": TRACEPARENT, "x-biz-code": "tenant-42"}


async def test_context_everywhere_a_handler_runs() -> None:
    app, background = make_fastapi()
    async with client(app) as c:
        r_async = await c.get("/async", headers=H)
        r_sync = await c.get("/sync", headers=H)
        r_bg = await c.get("/background", headers=H)
    route, dep = r_async.json()["route"], r_async.json()["dependency"]
    assert route == dep
    assert route["trace_id"] == TRACE_ID and route["biz_code"] == "tenant-42"
    assert r_sync.json()["trace_id"] == TRACE_ID and r_sync.json()["biz_code"] == "tenant-42"
    assert background[0]["trace_id"] == TRACE_ID
    assert background[0]["span_id"] != route["span_id"]  # its own request, its own span
    for r in (r_async, r_sync, r_bg):
        assert r.headers["x-trace-id"] == TRACE_ID
    assert errtrace.current() is None


async def test_app_error_problem_json() -> None:
    app, _ = make_fastapi()
    async with client(app) as c:
        r = await c.get("/llm", headers=H)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "LLM_CONTEXT_LENGTH_EXCEEDED" and body["level"] == 3
    assert body["details"] == {"limit_tokens": 8192}
    assert "larger context window" in body["hint"]
    assert body["biz_code"] == "tenant-42" and body["trace_id"] == TRACE_ID
    assert r.headers["x-error-event-id"] == body["event_id"] == body["instance"]



@pytest.mark.parametrize("kind", ["fastapi", "starlette"])
async def test_an_app_error_header_with_several_values_sends_each(kind: str) -> None:
    def handler() -> None:
        raise errtrace.AppError("RATE_LIMITED", headers={
            "Set-Cookie": ["session=a; Path=/", "region=eu; Path=/"], "X-Shard": "7",
        })

    if kind == "fastapi":
        app: Any = errtrace.instrument(FastAPI())
        app.get("/limited")(handler)
    else:
        async def endpoint(request: Request) -> PlainTextResponse:
            handler()
            return PlainTextResponse("unreachable")

        app = errtrace.instrument(Starlette(routes=[Route("/limited", endpoint)]))
    async with client(app) as c:
        r = await c.get("/limited", headers=H)
    assert r.status_code == 429 and r.json()["code"] == "RATE_LIMITED"
    assert r.headers.get_list("set-cookie") == ["session=a; Path=/", "region=eu; Path=/"]
    assert r.headers["x-shard"] == "7" and r.headers["x-trace-id"] == TRACE_ID
    assert r.headers.get_list("content-type") == ["application/problem+json"]
    assert int(r.headers["content-length"]) == len(r.content)


async def test_the_apps_exception_handler_sends_each_value_of_an_error_header() -> None:
    # The handler errtrace registers for Exception answers what reaches Starlette's own
    # error middleware outside errtrace's (a middleware built in after it).
    app = errtrace.instrument(Starlette())
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}
    err = errtrace.AppError("RATE_LIMITED", headers={"Set-Cookie": ["a=1", "b=2"]})
    response = await app.exception_handlers[Exception](Request(scope), err)
    assert response.status_code == 429
    cookies = [v for k, v in response.raw_headers if k == b"set-cookie"]
    assert cookies == [b"a=1", b"b=2"]
    assert (b"content-type", b"application/problem+json") in response.raw_headers
    assert (b"content-length", str(len(response.body)).encode()) in response.raw_headers

async def test_unhandled_500_carries_context_and_no_secret() -> None:
    app, _ = make_fastapi()
    async with client(app) as c:
        r = await c.get("/boom", headers=H)
    assert r.status_code == 500
    assert r.headers["x-error-code"] == "INTERNAL" and r.headers["x-trace-id"] == TRACE_ID
    assert "sk-123" not in r.text and "RuntimeError" not in r.text


async def test_debug_mode_shows_exception_text() -> None:
    app, _ = make_fastapi(debug=True)
    async with client(app) as c:
        r = await c.get("/boom")
    assert "sk-123" in r.json()["debug"]["exception"]


async def test_http_exceptions_become_problems_with_their_status() -> None:
    app, _ = make_fastapi()
    async with client(app) as c:
        r403 = await c.get("/http", headers=H)
        r404 = await c.get("/nowhere", headers=H)
        r405 = await c.post("/sync", headers=H)
        r418 = await c.get("/teapot", headers=H)
    assert (r403.status_code, r403.json()["code"], r403.json()["detail"]) == (
        403, "PERMISSION_DENIED", "not your tenant",
    )
    assert (r404.status_code, r404.json()["code"]) == (404, "NOT_FOUND")
    assert (r405.status_code, r405.json()["code"]) == (405, "BAD_REQUEST")
    assert r405.headers["allow"] == "GET"
    assert (r418.status_code, r418.json()["code"]) == (418, "BAD_REQUEST")
    for r in (r403, r404, r405, r418):
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["x-trace-id"] == TRACE_ID


async def test_validation_error_lists_fields_without_echoing_input() -> None:
    app, _ = make_fastapi()
    async with client(app) as c:
        r = await c.post("/prompt", json={"template": "<script>x</script>", "max_tokens": "many"})
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "VALIDATION_FAILED"
    assert body["errors"] == [
        {"field": "body.max_tokens", "message": body["errors"][0]["message"], "type": "int_parsing"}
    ]
    assert "many" not in r.text and "<script>" not in r.text


async def test_streaming_error_after_start_sends_sse_error_event() -> None:
    app, _ = make_fastapi()
    with errtrace.testing.capture_events() as events:
        async with client(app) as c:
            r = await c.get("/stream", headers=H)
    assert r.status_code == 200
    assert "event: error" in r.text and '"code": "LLM_SERVER_ERROR"' in r.text
    assert events[-1].response_started is True


async def test_concurrent_requests_never_cross_contexts() -> None:
    app, _ = make_fastapi()
    n = 300
    traces = [f"{i + 1:032x}" for i in range(n)]

    async with client(app) as c:
        async def one(i: int) -> httpx.Response:
            return await c.get("/echo", headers={
                "traceparent": f"00-{traces[i]}-{i + 1:016x}-01",
                "x-biz-code": f"tenant-{i}",
            })

        responses = await asyncio.gather(*(one(i) for i in range(n)))
    for i, r in enumerate(responses):
        body = r.json()
        assert r.headers["x-trace-id"] == traces[i]
        assert body["ctx"]["trace_id"] == traces[i]
        assert body["ctx"]["biz_code"] == f"tenant-{i}"
        assert body["ctx"]["parent_span_id"] == f"{i + 1:016x}"
        assert body["outgoing"]["traceparent"].split("-")[1] == traces[i]
        assert body["outgoing"]["x-biz-code"] == f"tenant-{i}"


async def test_instrument_is_idempotent_and_keeps_user_handlers() -> None:
    app = FastAPI()

    @app.exception_handler(StarletteHTTPException)
    async def mine(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("mine", status_code=404)

    errtrace.instrument(app)
    errtrace.instrument(app)
    async with client(app) as c:
        r = await c.get("/missing")
    assert r.text == "mine" and "x-trace-id" in r.headers
    # No middleware of the app's own: one layer, not one more per call.
    ours = [m.cls.__name__ == "ErrtraceMiddleware" for m in app.user_middleware]  # type: ignore[attr-defined]
    assert ours == [True]


async def test_instrument_twice_with_middlewares_wraps_them_once() -> None:
    app = FastAPI()
    app.add_middleware(GZipMiddleware)
    errtrace.instrument(app)
    errtrace.instrument(app)
    async with client(app) as c:
        r = await c.get("/missing", headers=H)
    assert r.status_code == 404 and r.headers["x-trace-id"] == TRACE_ID
    # One around the app's middlewares, one around the routes: not one more per call.
    ours = [m.cls.__name__ == "ErrtraceMiddleware" for m in app.user_middleware]  # type: ignore[attr-defined]
    assert ours == [True, False, True]


async def test_plain_starlette_app() -> None:
    async def home(request: Request) -> JSONResponse:
        return JSONResponse(ctx_dict())

    async def fail(request: Request) -> JSONResponse:
        raise errtrace.AppError("AI_VECTOR_INDEX_UNAVAILABLE")

    app = errtrace.instrument(Starlette(routes=[Route("/", home), Route("/fail", fail)]))
    async with client(app) as c:
        ok = await c.get("/", headers=H)
        bad = await c.get("/fail", headers=H)
        missing = await c.get("/missing", headers=H)
    assert ok.json()["trace_id"] == TRACE_ID
    assert bad.status_code == 503 and bad.json()["code"] == "AI_VECTOR_INDEX_UNAVAILABLE"
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"


# --- a real server ------------------------------------------------------------------------


@pytest.fixture
def uvicorn_url() -> Iterator[str]:
    app, _ = make_fastapi()
    with uvicorn_server(app) as url:
        yield url


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_end_to_end_against_uvicorn(uvicorn_url: str, anyio_backend: str) -> None:
    with httpx.Client(base_url=uvicorn_url, timeout=10) as c:
        ok = c.get("/async", headers=H)
        rate = c.get("/llm", headers=H)
        boom = c.get("/boom", headers=H)
        stream = c.get("/stream", headers=H)
    assert ok.status_code == 200 and ok.headers["x-trace-id"] == TRACE_ID
    assert ok.json()["route"]["biz_code"] == "tenant-42"
    assert rate.status_code == 400 and rate.json()["code"] == "LLM_CONTEXT_LENGTH_EXCEEDED"
    assert boom.status_code == 500 and "sk-123" not in boom.text
    assert boom.headers["x-trace-id"] == TRACE_ID
    lines = stream.text.strip().split("\n\n")
    assert lines[0] == "data: one" and lines[-1].startswith("event: error")
    assert json.loads(lines[-1].split("data: ", 1)[1])["code"] == "LLM_SERVER_ERROR"


async def test_context_inside_a_users_exception_handler() -> None:
    class QuotaWarning(Exception):
        pass

    app = errtrace.instrument(FastAPI())

    @app.exception_handler(QuotaWarning)
    async def on_quota(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(ctx_dict(), status_code=200)

    @app.get("/quota")
    async def quota() -> None:
        raise QuotaWarning()

    async with client(app) as c:
        r = await c.get("/quota", headers=H)
    assert r.json()["trace_id"] == TRACE_ID and r.json()["biz_code"] == "tenant-42"
    assert r.headers["x-trace-id"] == TRACE_ID


# --- the framework's own error paths -------------------------------------------------------


async def test_fallback_answers_a_framework_http_exception() -> None:
    app = errtrace.instrument(FastAPI())

    @app.get("/search")
    async def search() -> None:
        raise HTTPException(status_code=404, detail="no index for this tenant")

    @app.get("/similar")
    async def similar() -> None:
        raise HTTPException(status_code=409, detail="index rebuilding")

    errtrace.set_fallback("NOT_FOUND", lambda err, ctx: {"results": [], "cached": True})
    errtrace.set_fallback(
        "CONFLICT", lambda err, ctx: PlainTextResponse("stale results", status_code=203)
    )
    with errtrace.testing.capture_events() as events:
        async with client(app) as c:
            plain = await c.get("/search", headers=H)
            framework = await c.get("/similar", headers=H)
    assert plain.status_code == 200 and plain.json() == {"results": [], "cached": True}
    assert plain.headers["x-errtrace-fallback"] == "NOT_FOUND"
    assert plain.headers["x-trace-id"] == TRACE_ID
    # A framework response from the fallback is sent as it is.
    assert (framework.status_code, framework.text) == (203, "stale results")
    assert framework.headers["x-trace-id"] == TRACE_ID
    assert [(e.code, e.fallback) for e in events] == [
        ("NOT_FOUND", "applied"), ("CONFLICT", "applied"),
    ]


async def test_http_exception_below_400_is_not_an_error() -> None:
    app = errtrace.instrument(FastAPI())

    @app.get("/cached")
    async def cached() -> None:
        raise HTTPException(status_code=304, headers={"ETag": '"v7"'})

    with errtrace.testing.capture_events() as events:
        async with client(app) as c:
            r = await c.get("/cached", headers=H)
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == '"v7"' and r.headers["x-trace-id"] == TRACE_ID
    assert "x-error-code" not in r.headers and events == []


async def test_error_in_a_middleware_added_after_instrument() -> None:
    class Gatekeeper:  # added after instrument(): errtrace's middleware still wraps it
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == "/guarded":
                raise RuntimeError("token store at 10.0.0.9 down")
            await self.app(scope, receive, send)

    app = errtrace.instrument(FastAPI())
    app.add_middleware(Gatekeeper)

    @app.get("/guarded")
    async def guarded() -> dict[str, str]:
        return {"never": "reached"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with errtrace.testing.capture_events() as events:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.get("/guarded", headers=H)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "INTERNAL" and body["trace_id"] == TRACE_ID
    assert r.headers["x-trace-id"] == TRACE_ID
    assert "10.0.0.9" not in r.text
    assert [(e.code, e.biz_code, e.event_id) for e in events] == [
        ("INTERNAL", "tenant-42", body["instance"].rsplit(":", 1)[-1]),
    ]


async def test_instrument_after_the_app_started_is_a_clear_error() -> None:
    app = FastAPI()
    async with client(app) as c:
        await c.get("/")  # the middleware stack is built on the first request
    with pytest.raises(RuntimeError, match="before the application starts"):
        errtrace.instrument(app)


# --- what users combine with instrument() -----------------------------------------------


async def test_middlewares_added_after_instrument_answer_with_the_context() -> None:
    from fastapi.middleware.cors import CORSMiddleware
    from starlette.middleware.base import BaseHTTPMiddleware

    class Auth(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: Any) -> Any:
            if "authorization" not in request.headers:
                return JSONResponse({"seen": ctx_dict()["trace_id"]}, status_code=401)
            return await call_next(request)

    app = errtrace.instrument(FastAPI())
    app.add_middleware(Auth)
    app.add_middleware(CORSMiddleware, allow_origins=["https://ok.example"], allow_methods=["GET"])

    @app.get("/data")
    async def data() -> dict[str, str]:
        return {"ok": "yes"}

    preflight = {
        **H, "origin": "https://ok.example", "access-control-request-method": "GET",
    }
    async with client(app) as c:
        cors = await c.options("/data", headers=preflight)
        denied = await c.get("/data", headers=H)
        served = await c.get("/data", headers={**H, "authorization": "Bearer t"})
    assert cors.status_code == 200 and cors.headers["x-trace-id"] == TRACE_ID
    assert denied.status_code == 401 and denied.headers["x-trace-id"] == TRACE_ID
    assert denied.json() == {"seen": TRACE_ID}  # the middleware ran inside the context
    assert served.json() == {"ok": "yes"} and served.headers["x-trace-id"] == TRACE_ID
    assert app.user_middleware[0].cls.__name__ == "ErrtraceMiddleware"  # type: ignore[attr-defined]


async def test_http_exception_on_a_websocket_is_a_denial_carrying_the_problem() -> None:
    from starlette.testclient import TestClient, WebSocketDenialResponse

    app = errtrace.instrument(FastAPI())

    def auth() -> None:
        raise HTTPException(403, "no ticket")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, _: None = Depends(auth)) -> None:
        await websocket.accept()

    with (
        errtrace.testing.capture_events() as events,
        TestClient(app) as tc,
        pytest.raises(WebSocketDenialResponse) as denied,
        tc.websocket_connect("/ws", headers=H),
    ):
        pass
    response = denied.value
    assert response.status_code == 403
    assert response.headers["x-error-code"] == "PERMISSION_DENIED"
    assert response.headers["x-trace-id"] == TRACE_ID
    assert response.json()["code"] == "PERMISSION_DENIED"
    assert [(e.code, e.method, e.route) for e in events] == [("PERMISSION_DENIED", None, "/ws")]


def sub_app() -> FastAPI:
    sub = FastAPI()

    @sub.get("/conflict")
    async def conflict() -> None:
        raise errtrace.AppError("CONFLICT")

    @sub.get("/boom")
    async def boom() -> None:
        raise RuntimeError("db password hunter2")

    @sub.get("/gone")
    async def gone() -> None:
        raise HTTPException(404, "no such thing")

    @sub.get("/ctx")
    async def ctx() -> dict[str, Any]:
        return ctx_dict()

    return sub


@pytest.mark.parametrize("instrument_sub", [False, True], ids=["outer-only", "both"])
async def test_mounted_apps_answer_structured_errors_in_the_requests_context(
    instrument_sub: bool,
) -> None:
    seen: list[Any] = []

    class Probe:  # sees the context the outer app's middleware bound
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(errtrace.current())
            await self.app(scope, receive, send)

    app = errtrace.instrument(FastAPI())
    app.add_middleware(Probe)
    sub = sub_app()
    if instrument_sub:
        errtrace.instrument(sub)
    app.mount("/sub", sub)
    with errtrace.testing.capture_events() as events:
        async with client(app) as c:
            conflict = await c.get("/sub/conflict", headers=H)
            boom = await c.get("/sub/boom", headers=H)
            gone = await c.get("/sub/gone", headers=H)
            ctx = await c.get("/sub/ctx", headers=H)
    for r, status, code in [(conflict, 409, "CONFLICT"), (boom, 500, "INTERNAL"),
                            (gone, 404, "NOT_FOUND")]:
        assert r.status_code == status
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == code and r.headers["x-error-code"] == code
        assert r.headers["x-trace-id"] == TRACE_ID
    assert "hunter2" not in boom.text
    assert [(e.code, e.response_started) for e in events] == [
        ("CONFLICT", False), ("INTERNAL", False), ("NOT_FOUND", False),
    ]
    # One context per request, the outer app's, down to the mounted route.
    assert ctx.json()["span_id"] == seen[-1].span_id
    assert ctx.json()["trace_id"] == TRACE_ID


async def test_client_gone_mid_upload_is_cancelled_not_an_internal_alert() -> None:
    alerts: list[str] = []
    errtrace.on_alert(lambda event, ctx: alerts.append(event.code))
    app = errtrace.instrument(FastAPI())

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    messages = [
        {"type": "http.request", "body": b"part one", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        pass

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/upload", "raw_path": b"/upload", "root_path": "",
        "query_string": b"", "headers": [(b"traceparent", TRACEPARENT.encode())],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
    }
    with errtrace.testing.capture_events() as events:
        await app(scope, receive, send)
    assert [(e.code, e.level, e.trace_id) for e in events] == [("CANCELLED", 5, TRACE_ID)]
    assert alerts == []


async def test_sse_error_event_survives_a_base_http_middleware_below() -> None:
    from starlette.middleware.base import BaseHTTPMiddleware

    class Noop(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: Any) -> Any:
            return await call_next(request)

    app = FastAPI()
    app.add_middleware(Noop)  # before instrument(): below errtrace's middleware
    errtrace.instrument(app)
    app.add_middleware(Noop)  # after: moved below it as well

    async def events_then(fail: bool) -> Any:
        yield "data: one\n\n"
        if fail:
            raise errtrace.AppError("LLM_RATE_LIMITED")
        yield "data: two\n\n"

    @app.get("/sse")
    async def sse(fail: bool) -> StreamingResponse:
        return StreamingResponse(events_then(fail), media_type="text/event-stream")

    async with client(app) as c:
        failed = await c.get("/sse", params={"fail": "true"}, headers=H)
        clean = await c.get("/sse", params={"fail": "false"}, headers=H)
    assert failed.status_code == 200 and failed.text.startswith("data: one\n\n")
    assert "event: error\n" in failed.text
    problem = json.loads(failed.text.split("event: error\ndata: ", 1)[1])
    assert problem["code"] == "LLM_RATE_LIMITED" and problem["trace_id"] == TRACE_ID
    assert clean.text == "data: one\n\ndata: two\n\n"


@pytest.mark.parametrize("when", ["before", "after"])
async def test_the_apps_own_500_handler_answers_unhandled_errors(when: str) -> None:
    app = FastAPI()

    def mine(request: Request, exc: Exception) -> JSONResponse:  # sync: Starlette allows it
        return JSONResponse({"mine": type(exc).__name__}, status_code=500)

    if when == "before":
        app.add_exception_handler(Exception, mine)
    errtrace.instrument(app)
    if when == "after":
        app.add_exception_handler(500, mine)

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("session")

    @app.get("/coded")
    async def coded() -> None:
        raise errtrace.AppError("CONFLICT")

    with errtrace.testing.capture_events() as events:
        async with client(app) as c:
            boom_r = await c.get("/boom", headers=H)
            coded_r = await c.get("/coded", headers=H)
    assert boom_r.status_code == 500 and boom_r.json() == {"mine": "KeyError"}
    assert boom_r.headers["x-trace-id"] == TRACE_ID
    assert coded_r.status_code == 409 and coded_r.json()["code"] == "CONFLICT"
    assert [e.code for e in events] == ["INTERNAL", "CONFLICT"]


@pytest.mark.parametrize("middleware", [False, True])
async def test_an_own_handler_whose_response_fails_to_send_leaves_the_answer_to_errtrace(
    middleware: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.responses import FileResponse

    app = FastAPI()

    @app.exception_handler(Exception)
    async def error_page(request: Request, exc: Exception) -> FileResponse:
        return FileResponse("/nonexistent/errtrace-error-page.html", status_code=500)

    if middleware:  # two errtrace layers
        app.add_middleware(GZipMiddleware)
    errtrace.instrument(app)

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("session")

    with errtrace.testing.capture_events() as events:
        async with client(app) as c:
            r = await c.get("/boom", headers=H)
    assert r.status_code == 500 and r.json()["code"] == "INTERNAL"
    assert r.headers["x-trace-id"] == TRACE_ID
    assert r.json()["event_id"] == events[0].event_id and len(events) == 1
    assert "the response of the app's error handler" in caplog.text


async def test_async_fallbacks_are_awaited() -> None:
    async def cached(err: errtrace.AppError, ctx: Any) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"answer": "from cache", "trace": ctx.trace_id}

    async def broken(err: errtrace.AppError, ctx: Any) -> dict[str, str]:
        raise LookupError("cache down")

    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", cached)
    errtrace.set_fallback("AI_POLICY_REJECTED", broken)
    app = errtrace.instrument(FastAPI())

    @app.get("/model")
    async def model() -> None:
        raise errtrace.AppError("AI_MODEL_LOAD_FAILED")

    @app.get("/policy")
    async def policy_route() -> None:
        raise errtrace.AppError("AI_POLICY_REJECTED")

    with errtrace.testing.capture_events() as events:
        async with client(app) as c:
            served = await c.get("/model", headers=H)
            refused = await c.get("/policy", headers=H)
    assert served.status_code == 200
    assert served.json() == {"answer": "from cache", "trace": TRACE_ID}
    assert served.headers["x-errtrace-fallback"] == "AI_MODEL_LOAD_FAILED"
    assert refused.status_code == 403 and refused.json()["code"] == "AI_POLICY_REJECTED"
    assert [(e.code, e.fallback) for e in events] == [
        ("AI_MODEL_LOAD_FAILED", "applied"), ("AI_POLICY_REJECTED", "failed"),
    ]


async def test_a_coded_error_from_a_task_group_keeps_its_code() -> None:
    import anyio

    app = errtrace.instrument(FastAPI())

    @app.get("/group")
    async def group() -> None:
        async def lookup() -> None:
            raise errtrace.AppError("NOT_FOUND", "no such document")

        async with anyio.create_task_group() as tg:
            tg.start_soon(lookup)

    async with client(app) as c:
        r = await c.get("/group", headers=H)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"


async def test_instrument_again_with_other_settings_is_an_error() -> None:
    app = errtrace.instrument(FastAPI(), service_name="first")
    errtrace.instrument(app, service_name="first")  # the same settings: a no-op
    with pytest.raises(RuntimeError, match="instrumented already, with other settings"):
        errtrace.instrument(app, service_name="second")
