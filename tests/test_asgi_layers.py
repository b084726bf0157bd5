"""Where ``instrument()`` answers errors: inside the app's own middlewares, so that CORS,
compression and header-setting middlewares shape error answers too; and how a response
that fails after it started ends (an event stream with its error event, anything else
cut short, never complete-looking)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

import errtrace
from errtrace.middleware.asgi import ErrtraceMiddleware, Message, Receive, Scope, Send

from .conftest import TRACE_ID, TRACEPARENT, uvicorn_server

pytestmark = pytest.mark.anyio

ORIGIN = "https://ui.example"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SecurityHeaders:
    """A pure ASGI middleware adding one header to every answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()),
                                      (b"strict-transport-security", b"max-age=600")]
            await send(message)

        await self.app(scope, receive, add)


class Guard:
    """A middleware that raises an AppError itself, before any route runs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/guarded":
            raise errtrace.AppError("UNAUTHENTICATED", "no token")
        await self.app(scope, receive, send)


def make_app(*, own_500_handler: bool = False) -> FastAPI:
    app = FastAPI()

    @app.get("/coded")
    async def coded() -> None:
        raise errtrace.AppError("LLM_RATE_LIMITED", "slow down", details={"retry_after": 3})

    @app.get("/mapped")
    async def mapped() -> None:
        raise TimeoutError("model took too long")

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("secret sk-123")

    @app.get("/http")
    async def http() -> None:
        raise HTTPException(404, "no such model")

    @app.get("/big")
    async def big() -> None:
        raise errtrace.AppError("VALIDATION_FAILED", details={"notes": ["field " * 40] * 20})

    @app.get("/ok")
    async def ok() -> dict[str, str]:
        return {"status": "ok"}

    if own_500_handler:
        @app.exception_handler(Exception)
        async def mine(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"mine": True}, status_code=500)

    errtrace.instrument(app)
    app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN], expose_headers=["X-Trace-ID"])
    app.add_middleware(SecurityHeaders)
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(Guard)
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             headers={"origin": ORIGIN, "traceparent": TRACEPARENT})


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/coded", 429, "LLM_RATE_LIMITED"), ("/mapped", 504, "TIMEOUT"),
     ("/crash", 500, "INTERNAL"), ("/http", 404, "NOT_FOUND")],
)
async def test_route_errors_go_out_through_the_apps_middlewares(
    path: str, status: int, code: str
) -> None:
    with errtrace.testing.capture_events() as events:
        async with client(make_app()) as c:
            r = await c.get(path)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code and r.headers["x-error-code"] == code
    # What the app's middlewares add to every answer is on the error answer too.
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["strict-transport-security"] == "max-age=600"
    assert r.headers.get_list("x-trace-id") == [TRACE_ID]
    assert [e.code for e in events] == [code]
    assert "sk-123" not in r.text


async def test_an_error_answer_is_compressed_like_any_answer() -> None:
    async with client(make_app()) as c:
        r = await c.get("/big", headers={"accept-encoding": "gzip"})
    assert r.status_code == 422 and r.headers["content-encoding"] == "gzip"
    assert r.json()["code"] == "VALIDATION_FAILED"  # httpx decompressed it
    assert len(r.content) > int(r.headers["content-length"])  # it was compressed


async def test_the_apps_own_500_handler_answers_inside_its_middlewares() -> None:
    with errtrace.testing.capture_events() as events:
        async with client(make_app(own_500_handler=True)) as c:
            r = await c.get("/crash")
            coded = await c.get("/coded")
    assert r.status_code == 500 and r.json() == {"mine": True}
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["x-trace-id"] == TRACE_ID
    assert coded.status_code == 429 and coded.headers["access-control-allow-origin"] == ORIGIN
    assert [e.code for e in events] == ["INTERNAL", "LLM_RATE_LIMITED"]


async def test_an_error_raised_by_a_middleware_is_still_answered_by_errtrace() -> None:
    with errtrace.testing.capture_events() as events:
        async with client(make_app()) as c:
            r = await c.get("/guarded")
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHENTICATED"
    assert r.headers.get_list("x-trace-id") == [TRACE_ID]
    assert [e.code for e in events] == ["UNAUTHENTICATED"]


async def test_success_and_preflight_keep_one_trace_id() -> None:
    async with client(make_app()) as c:
        ok = await c.get("/ok")
        preflight = await c.options("/ok", headers={"access-control-request-method": "GET"})
    assert ok.status_code == 200 and ok.headers.get_list("x-trace-id") == [TRACE_ID]
    assert preflight.status_code == 200
    assert preflight.headers.get_list("x-trace-id") == [TRACE_ID]


# --- streams ------------------------------------------------------------------------------


async def test_an_event_stream_ends_before_its_background_task_runs() -> None:
    order: list[str] = []
    app = FastAPI()

    async def events() -> Any:
        yield "data: one\n\n"

    async def after() -> None:
        order.append("background")

    @app.get("/sse")
    async def sse(tasks: BackgroundTasks) -> StreamingResponse:
        tasks.add_task(after)
        return StreamingResponse(events(), media_type="text/event-stream")

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            order.append("end")

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client stays connected
        raise AssertionError

    errtrace.instrument(app)
    scope = {"type": "http", "method": "GET", "path": "/sse", "headers": [],
             "query_string": b"", "server": ("test", 80), "scheme": "http",
             "root_path": "", "http_version": "1.1"}
    await app(scope, receive, send)
    # The client has the whole stream before the background task starts.
    assert order == ["end", "background"]


async def test_an_event_stream_failing_behind_a_base_http_middleware_gets_its_event() -> None:
    app = FastAPI()

    async def events() -> Any:
        yield "data: one\n\n"
        raise errtrace.AppError("LLM_OVERLOADED")

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    class Passing(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            return await call_next(request)

    errtrace.instrument(app)
    app.add_middleware(Passing)
    with errtrace.testing.capture_events() as events_seen:
        async with client(app) as c:
            r = await c.get("/sse")
    blocks = r.text.strip().split("\n\n")
    assert blocks[0] == "data: one"
    assert blocks[-1].splitlines()[0] == "event: error"
    assert json.loads(blocks[-1].split("data: ", 1)[1])["code"] == "LLM_OVERLOADED"
    assert [e.code for e in events_seen] == ["LLM_OVERLOADED"]


async def test_a_held_4xx_file_answer_keeps_its_start_on_a_pathsend_server(
    tmp_path: Any,
) -> None:
    page = tmp_path / "missing.html"
    page.write_text("<h1>not here</h1>")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await FileResponse(page, status_code=404)(scope, receive, send)

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/page", "headers": [],
             "extensions": {"http.response.pathsend": {}}}
    await ErrtraceMiddleware(app, rewrite_responses=True)(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.pathsend"]
    assert sent[0]["status"] == 404


# --- a real server ------------------------------------------------------------------------


@pytest.fixture(params=["bare", "http-middleware"])
def stream_server(request: pytest.FixtureRequest) -> Iterator[str]:
    app = FastAPI()
    if request.param == "http-middleware":
        # Starlette's HTTP middleware base class ends a streamed body itself when the
        # app below returns without ending it: errtrace must keep the body cut short.
        @app.middleware("http")
        async def timing(request: Request, call_next: RequestResponseEndpoint) -> Response:
            return await call_next(request)

    async def rows() -> Any:
        for i in range(3):
            yield f"row{i}\n"
        raise errtrace.AppError("UPSTREAM_UNAVAILABLE", "the database went away")

    async def events() -> Any:
        yield "data: one\n\n"
        raise errtrace.AppError("LLM_OVERLOADED")

    @app.get("/export")
    async def export() -> StreamingResponse:
        return StreamingResponse(rows(), media_type="text/csv")

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    errtrace.instrument(app)
    with uvicorn_server(app) as url:
        yield url


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_a_client_of_a_real_server_sees_a_failed_download_cut_short(
    stream_server: str, anyio_backend: str
) -> None:
    with errtrace.testing.capture_events() as events, httpx.Client(
        base_url=stream_server, timeout=10
    ) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/export")
        sse = c.get("/sse")  # an event stream ends with its error event instead
    assert sse.status_code == 200
    assert sse.text.strip().split("\n\n")[-1].startswith("event: error")
    assert [e.code for e in events] == ["UPSTREAM_UNAVAILABLE", "LLM_OVERLOADED"]
    assert all(e.response_started for e in events)


async def test_a_structured_http_exception_detail_reaches_the_client() -> None:
    app = FastAPI()

    @app.get("/taken")
    async def taken() -> None:
        raise HTTPException(409, detail={"field": "email", "reason": "taken"})

    errtrace.instrument(app)
    async with client(app) as c:
        r = await c.get("/taken")
    body = r.json()
    assert r.status_code == 409 and body["code"] == "CONFLICT"
    assert isinstance(body["detail"], str)  # RFC 9457: a string
    assert body["details"]["detail"] == {"field": "email", "reason": "taken"}


async def test_a_hand_added_middleware_holds_an_event_streams_end_for_a_late_error() -> None:
    # What Starlette's HTTP middleware base class does between errtrace and a route: it
    # sends the end of the body, then re-raises the route's error.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": False})
        raise errtrace.AppError("LLM_OVERLOADED")

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/sse", "headers": []}
    await ErrtraceMiddleware(app)(scope, receive, send)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [m.get("more_body", False) for m in bodies] == [True, False]
    assert bodies[0]["body"] == b"data: one\n\n"
    assert b"event: error" in bodies[1]["body"] and b"LLM_OVERLOADED" in bodies[1]["body"]
