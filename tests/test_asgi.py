"""The pure ASGI middleware on tiny inline ASGI apps, through httpx.ASGITransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import errtrace
from errtrace.middleware.asgi import ErrtraceMiddleware, Receive, Scope, Send

from .conftest import TRACE_ID, TRACEPARENT

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    ctx = errtrace.current()
    assert ctx is not None
    body = json.dumps(ctx.as_dict()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def raising_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/app-error":
        raise errtrace.AppError("AI_GPU_OUT_OF_MEMORY", "GPU 0 is full")
    raise RuntimeError("database password is hunter2")


async def mid_stream_app(scope: Scope, receive: Receive, send: Send) -> None:
    kind = b"text/event-stream" if scope["path"] == "/sse" else b"text/plain"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
    raise errtrace.AppError("LLM_OVERLOADED")


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_success_carries_trace_and_continues_inbound_trace() -> None:
    async with client(ErrtraceMiddleware(ok_app)) as c:
        r = await c.get("/", headers={"traceparent": TRACEPARENT, "x-biz-code": "tenant-9"})
    assert r.status_code == 200
    assert r.headers["x-trace-id"] == TRACE_ID
    body = r.json()
    assert body["trace_id"] == TRACE_ID and body["parent_span_id"] == "1234567890123456"
    assert body["span_id"] != "1234567890123456" and body["biz_code"] == "tenant-9"
    assert "x-error-code" not in r.headers


async def test_new_trace_when_none_or_invalid() -> None:
    async with client(ErrtraceMiddleware(ok_app)) as c:
        r1 = await c.get("/")
        r2 = await c.get("/", headers={"traceparent": "00-" + "0" * 32 + "-1234567890123456-01"})
    assert len(r1.headers["x-trace-id"]) == 32
    assert r2.headers["x-trace-id"] not in ("0" * 32, r1.headers["x-trace-id"])


SHARED_HEADERS = [(b"content-type", b"text/plain")]


async def shared_headers_app(scope: Scope, receive: Receive, send: Send) -> None:
    # One header list for every response, as a module-level response object would have.
    await send({"type": "http.response.start", "status": 200, "headers": SHARED_HEADERS})
    await send({"type": "http.response.body", "body": b"hi"})


async def own_trace_header_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-trace-id", b"set-by-the-app")]})
    await send({"type": "http.response.body", "body": b""})


async def test_each_response_gets_its_own_trace_id_and_the_apps_list_is_untouched() -> None:
    async with client(ErrtraceMiddleware(shared_headers_app)) as c:
        first = await c.get("/")
        second = await c.get("/")
    assert first.headers["x-trace-id"] != second.headers["x-trace-id"]
    assert SHARED_HEADERS == [(b"content-type", b"text/plain")]


async def test_a_trace_id_header_set_by_the_app_is_kept_not_doubled() -> None:
    async with client(ErrtraceMiddleware(own_trace_header_app)) as c:
        r = await c.get("/", headers={"traceparent": TRACEPARENT})
    assert r.headers.get_list("x-trace-id") == ["set-by-the-app"]


async def test_unhandled_exception_becomes_internal_without_leaking() -> None:
    with errtrace.testing.capture_events() as events:
        async with client(ErrtraceMiddleware(raising_app)) as c:
            r = await c.get("/boom", headers={"traceparent": TRACEPARENT})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-error-code"] == "INTERNAL" and r.headers["x-error-level"] == "1"
    assert "hunter2" not in r.text and "RuntimeError" not in r.text
    body = r.json()
    assert body["event_id"] == r.headers["x-error-event-id"] == events[0].event_id
    assert body["trace_id"] == TRACE_ID == r.headers["x-trace-id"]
    assert events[0].private_exception == "RuntimeError: database password is hunter2"


async def test_app_error_uses_its_code_status() -> None:
    async with client(ErrtraceMiddleware(raising_app)) as c:
        r = await c.get("/app-error")
    assert r.status_code == 503
    body = r.json()
    assert (body["code"], body["level"]) == ("AI_GPU_OUT_OF_MEMORY", 1)
    assert body["detail"] == "GPU 0 is full"
    assert r.headers["retry-after"] == "1"


async def test_error_after_start_is_recorded_and_leaves_the_body_unfinished() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/plain", "headers": []}
    with errtrace.testing.capture_events() as events:
        await ErrtraceMiddleware(mid_stream_app)(scope, receive, send)  # does not raise
    # No second response, and no end of the body: the server closes the connection, so
    # the client sees the body cut short instead of a complete-looking one.
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == b"data: first\n\n" and sent[1]["more_body"] is True
    assert events[0].code == "LLM_OVERLOADED" and events[0].response_started is True


async def test_a_client_sees_a_failed_plain_stream_as_incomplete() -> None:
    with errtrace.testing.capture_events() as events:
        async with client(ErrtraceMiddleware(mid_stream_app)) as c:
            with pytest.raises(AssertionError):  # httpx's check of a complete response
                await c.get("/plain")
    assert [e.code for e in events] == ["LLM_OVERLOADED"]


async def test_sse_gets_a_final_error_event() -> None:
    async with client(ErrtraceMiddleware(mid_stream_app)) as c:
        r = await c.get("/sse")
    first, blank, second = r.text.strip().split("\n\n")
    assert first == "data: first" and blank == ""  # the error event starts with a blank line
    event_line, data_line = second.split("\n")
    assert event_line == "event: error"
    doc = json.loads(data_line.removeprefix("data: "))
    assert doc["code"] == "LLM_OVERLOADED" and doc["trace_id"] == r.headers["x-trace-id"]


async def test_sse_error_event_can_be_disabled() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    app = ErrtraceMiddleware(mid_stream_app, sse_error_event=False)
    await app({"type": "http", "method": "GET", "path": "/sse", "headers": []}, receive, send)
    # No error event: the stream is then left unfinished like any other body.
    assert [m.get("body") for m in sent[1:]] == [b"data: first\n\n"]
    assert sent[-1]["more_body"] is True


async def test_fallback_result_answers_the_request() -> None:
    errtrace.set_fallback("AI_GPU_OUT_OF_MEMORY", lambda err, ctx: {"answer": "cached"})
    async with client(ErrtraceMiddleware(raising_app)) as c:
        r = await c.get("/app-error")
    assert r.status_code == 200 and r.json() == {"answer": "cached"}
    assert r.headers["x-errtrace-fallback"] == "AI_GPU_OUT_OF_MEMORY"
    assert "x-trace-id" in r.headers


async def test_fallback_may_answer_with_a_framework_response() -> None:
    from starlette.responses import PlainTextResponse

    errtrace.set_fallback(
        "AI_GPU_OUT_OF_MEMORY",
        lambda err, ctx: PlainTextResponse("served by the small model", status_code=203),
    )
    async with client(ErrtraceMiddleware(raising_app)) as c:
        r = await c.get("/app-error", headers={"traceparent": TRACEPARENT})
    assert (r.status_code, r.text) == (203, "served by the small model")
    assert r.headers["x-trace-id"] == TRACE_ID  # sent through errtrace's send


async def test_a_client_gone_while_the_error_is_answered() -> None:
    async def gone(message: Any) -> None:
        raise OSError("connection reset by peer")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/boom", "headers": []}
    with errtrace.testing.capture_events() as events:
        await ErrtraceMiddleware(raising_app)(scope, receive, gone)  # does not raise
    assert [e.code for e in events] == ["INTERNAL"]  # recorded before the answer failed


async def test_lifespan_and_websocket_pass_through_untouched() -> None:
    # Nothing is sent or changed for either; a websocket session gets its context.
    seen: list[tuple[str, object]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ctx = errtrace.current()
        seen.append((scope["type"], ctx and ctx.trace_id))
        if scope["type"] == "lifespan":
            raise RuntimeError("lifespan errors are the server's business")

    middleware = ErrtraceMiddleware(app)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        raise AssertionError("nothing may be sent")

    headers = [(b"traceparent", TRACEPARENT.encode())]
    await middleware({"type": "websocket", "path": "/ws", "headers": headers}, receive, send)
    with pytest.raises(RuntimeError, match="server's business"):
        await middleware({"type": "lifespan"}, receive, send)
    assert seen == [("websocket", TRACE_ID), ("lifespan", None)]
    assert errtrace.current() is None


async def test_context_reset_after_request() -> None:
    async with client(ErrtraceMiddleware(raising_app)) as c:
        await c.get("/boom")
    assert errtrace.current() is None


async def test_instrument_wraps_a_plain_asgi_callable() -> None:
    app = errtrace.instrument(raising_app)
    assert isinstance(app, ErrtraceMiddleware)
    async with client(app) as c:
        r = await c.get("/app-error")
    assert r.json()["code"] == "AI_GPU_OUT_OF_MEMORY"



async def _file_response_app(scope: Scope, receive: Receive, send: Send) -> None:
    # Starlette's FileResponse ends with "http.response.pathsend" when the server offers
    # that extension, then runs its background task, which fails here.
    from starlette.background import BackgroundTask
    from starlette.responses import FileResponse

    def failing_task() -> None:
        raise RuntimeError("cleanup failed")

    response = FileResponse(scope["file"], background=BackgroundTask(failing_task))
    await response(scope, receive, send)


async def _zerocopy_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    with open(scope["file"], "rb") as file:
        await send({"type": "http.response.zerocopysend", "file": file.fileno()})
    raise RuntimeError("cleanup failed")


@pytest.mark.parametrize(
    ("extension", "app"),
    [("http.response.pathsend", _file_response_app),
     ("http.response.zerocopysend", _zerocopy_app)],
)
async def test_a_response_ended_by_a_server_extension_gets_nothing_after_it(
    tmp_path: Any, extension: str, app: Any
) -> None:
    # An error after a response that a server extension ended is recorded, and nothing
    # is sent after that end (a server refuses it: "sent after response completed").
    path = tmp_path / "report.txt"
    path.write_bytes(b"quarterly numbers")
    sent: list[dict[str, Any]] = []

    async def server_send(message: Any) -> None:
        if sent and sent[-1]["type"] != "http.response.start" and sent[-1]["ended"]:
            raise RuntimeError(f"{message['type']} sent after the response ended")
        ends = message["type"] == "http.response.pathsend" or not message.get("more_body")
        sent.append({**message, "ended": ends})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http", "method": "GET", "path": "/report", "headers": [],
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "extensions": {extension: {}}, "file": str(path),
    }
    with errtrace.testing.capture_events() as events:
        await ErrtraceMiddleware(app)(scope, receive, server_send)  # does not raise
    assert [m["type"] for m in sent] == ["http.response.start", extension]
    assert b"x-trace-id" in dict(sent[0]["headers"])
    assert [(e.code, e.response_started) for e in events] == [("INTERNAL", True)]
