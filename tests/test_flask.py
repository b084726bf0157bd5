"""``errtrace.instrument(Flask(...))``: Flask's test client, then a real threaded server."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from flask import Blueprint, Flask, Response, abort, jsonify, request, stream_with_context
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import (
    BadRequest,
    ClientDisconnected,
    Forbidden,
    HTTPException,
    InternalServerError,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from werkzeug.serving import BaseWSGIServer, make_server

import errtrace
from errtrace.middleware.wsgi import ErrtraceWSGIMiddleware
from errtrace.testing import capture_events
from tests.conftest import TRACE_ID, TRACEPARENT, wait_until

PARENT_SPAN = "1234567890123456"


def make_app() -> Flask:
    app = Flask(__name__)

    @app.get("/echo")
    def echo() -> Any:
        ctx = errtrace.current()
        assert ctx is not None
        return jsonify(ctx.as_dict() | {"thread": threading.get_ident()})

    @app.get("/app-error")
    def app_error() -> Any:
        raise errtrace.AppError("LLM_RATE_LIMITED", "slow down", details={"retry_after": 3})

    @app.get("/boom")
    def boom() -> Any:
        raise KeyError("api_key=sk-secret")

    @app.get("/forbidden")
    def forbidden() -> Any:
        abort(403)

    @app.get("/stream")
    def stream() -> Any:
        def gen() -> Iterator[str]:
            for i in range(3):
                ctx = errtrace.current()
                yield f"{i}:{ctx.trace_id if ctx else None}\n"

        return Response(gen(), mimetype="text/plain")

    @app.get("/stream-error")
    def stream_error() -> Any:
        def gen() -> Iterator[str]:
            yield "data: first\n\n"
            raise errtrace.AppError("LLM_OVERLOADED")

        return Response(stream_with_context(gen()), mimetype="text/event-stream")

    @app.get("/slash/")
    def slash() -> Any:
        return "ok"

    return app


@pytest.fixture
def app() -> Flask:
    return errtrace.instrument(make_app())


def problem_of(r: Any) -> dict[str, Any]:
    assert r.headers["Content-Type"] == "application/problem+json"
    body = r.get_json(force=True)
    assert isinstance(body, dict)
    return body


# -- installation ----------------------------------------------------------------------


def test_instrument_returns_the_same_app_and_is_idempotent() -> None:
    flask_app = make_app()
    assert errtrace.instrument(flask_app) is flask_app
    wrapped = flask_app.wsgi_app
    assert isinstance(wrapped, ErrtraceWSGIMiddleware)
    assert errtrace.instrument(flask_app) is flask_app
    assert flask_app.wsgi_app is wrapped  # not wrapped twice
    assert "errtrace" in flask_app.extensions
    with capture_events() as events:
        flask_app.test_client().get("/boom")
    assert len(events) == 1


def test_user_handlers_registered_first_are_kept() -> None:
    flask_app = make_app()

    @flask_app.errorhandler(Exception)
    def mine(exc: Exception) -> Any:
        return "my own 500", 500

    @flask_app.errorhandler(HTTPException)
    def mine_http(exc: HTTPException) -> Any:
        return f"my own {exc.code}", exc.code

    errtrace.instrument(flask_app)
    c = flask_app.test_client()
    r = c.get("/boom")
    assert (r.status_code, r.data) == (500, b"my own 500")
    assert "X-Trace-ID" in r.headers  # the middleware still adds the context
    assert c.get("/missing").data == b"my own 404"


class ServerErrorPage:
    """An app's own 500 page; notes what it was given and what errtrace had recorded."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, exc: InternalServerError) -> Any:
        ctx = errtrace.current()
        original = exc.original_exception
        self.seen.append((type(original).__name__, ctx.event_id if ctx else None))
        return "<h1>our own 500 page</h1>", 500


@pytest.mark.parametrize("key", [500, InternalServerError], ids=["code", "class"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_the_apps_500_page_renders_for_unhandled_exceptions(key: Any, when: str) -> None:
    flask_app = make_app()
    page = ServerErrorPage()
    if when == "before":
        flask_app.register_error_handler(key, page)
    errtrace.instrument(flask_app)
    if when == "after":
        flask_app.register_error_handler(key, page)
    c = flask_app.test_client()
    with capture_events() as events:
        r = c.get("/boom", headers={"traceparent": TRACEPARENT})
    assert (r.status_code, r.data) == (500, b"<h1>our own 500 page</h1>")
    assert r.headers["X-Trace-ID"] == TRACE_ID
    assert [(e.code, e.exception_type, e.trace_id) for e in events] == [
        ("INTERNAL", "KeyError", TRACE_ID)
    ]
    assert page.seen == [("KeyError", events[0].event_id)]
    # An AppError has a code and status of its own: errtrace's problem+json answers.
    r = c.get("/app-error")
    assert r.status_code == 429 and problem_of(r)["code"] == "LLM_RATE_LIMITED"
    assert len(page.seen) == 1


def test_a_blueprints_500_page_renders_for_its_unhandled_exceptions() -> None:
    flask_app = errtrace.instrument(make_app())
    admin = Blueprint("admin", __name__)
    page = ServerErrorPage()
    admin.register_error_handler(500, page)

    @admin.get("/admin/boom")
    def admin_boom() -> Any:
        raise RuntimeError("broken admin view")

    flask_app.register_blueprint(admin)
    c = flask_app.test_client()
    assert c.get("/admin/boom").data == b"<h1>our own 500 page</h1>"
    assert problem_of(c.get("/boom"))["code"] == "INTERNAL"  # outside the blueprint
    assert [name for name, _ in page.seen] == ["RuntimeError"]


def test_an_app_error_handler_of_the_app_still_wins_over_errtrace() -> None:
    flask_app = make_app()
    flask_app.register_error_handler(500, ServerErrorPage())
    errtrace.instrument(flask_app)
    flask_app.register_error_handler(errtrace.AppError, lambda exc: (f"mine: {exc.code}", 418))
    r = flask_app.test_client().get("/app-error")
    assert (r.status_code, r.data) == (418, b"mine: LLM_RATE_LIMITED")


def test_a_failing_500_page_falls_back_to_problem_json(caplog: pytest.LogCaptureFixture) -> None:
    flask_app = make_app()

    @flask_app.errorhandler(500)
    def broken_page(exc: InternalServerError) -> Any:
        raise ValueError("template missing")

    errtrace.instrument(flask_app)
    with capture_events() as events:
        r = flask_app.test_client().get("/boom")
    assert r.status_code == 500 and problem_of(r)["code"] == "INTERNAL"
    assert [e.exception_type for e in events] == ["KeyError"]
    assert any("500 error handler failed" in rec.getMessage() for rec in caplog.records)


def test_the_apps_500_page_on_a_real_server() -> None:
    flask_app = make_app()
    errtrace.instrument(flask_app)
    flask_app.register_error_handler(500, ServerErrorPage())
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with capture_events() as events:
            r = httpx.get(f"{url}/boom", headers={"traceparent": TRACEPARENT})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert (r.status_code, r.text) == (500, "<h1>our own 500 page</h1>")
    assert r.headers["x-trace-id"] == TRACE_ID
    assert [e.code for e in events] == ["INTERNAL"]


def test_code_specific_handler_still_wins(app: Flask) -> None:
    app.register_error_handler(404, lambda exc: ("custom not found", 404))
    r = app.test_client().get("/missing")
    assert (r.status_code, r.data) == (404, b"custom not found")


# -- success ---------------------------------------------------------------------------


def test_success_continues_the_inbound_trace(app: Flask) -> None:
    r = app.test_client().get("/echo", headers={"traceparent": TRACEPARENT, "X-Biz-Code": "pay"})
    seen = r.get_json()
    assert r.status_code == 200
    assert r.headers["X-Trace-ID"] == TRACE_ID
    assert (seen["trace_id"], seen["parent_span_id"], seen["biz_code"]) == (
        TRACE_ID, PARENT_SPAN, "pay"
    )
    assert seen["span_id"] != PARENT_SPAN
    assert seen["err_code"] is None


def test_redirects_pass_through_untouched(app: Flask) -> None:
    r = app.test_client().get("/slash")
    assert r.status_code == 308
    assert r.headers["Location"].endswith("/slash/")
    assert "X-Error-Code" not in r.headers


# -- errors ----------------------------------------------------------------------------


def test_app_error_gives_problem_json_and_headers(app: Flask) -> None:
    with capture_events() as events:
        r = app.test_client().get(
            "/app-error", headers={"traceparent": TRACEPARENT, "X-Biz-Code": "pay"}
        )
    body = problem_of(r)
    assert r.status_code == 429
    assert r.headers["X-Error-Code"] == "LLM_RATE_LIMITED"
    assert r.headers["X-Error-Level"] == "2"
    assert r.headers["X-Trace-ID"] == TRACE_ID
    assert r.headers["Retry-After"] == "3"
    assert r.headers.getlist("X-Trace-ID") == [TRACE_ID]
    assert body["detail"] == "slow down"
    assert (body["code"], body["trace_id"], body["biz_code"]) == (
        "LLM_RATE_LIMITED", TRACE_ID, "pay"
    )
    assert body["event_id"] == r.headers["X-Error-Event-ID"]
    # Recorded once, by Flask's handler, not again by the outer WSGI middleware.
    assert [(e.event_id, e.biz_code, e.route, e.method) for e in events] == [
        (body["event_id"], "pay", "/app-error", "GET")
    ]


def test_unhandled_exception_is_internal_500_logged_once_without_its_text(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with capture_events() as events:
        r = app.test_client().get("/boom")
    body = problem_of(r)
    assert r.status_code == 500
    assert r.headers["X-Error-Code"] == "INTERNAL"
    assert b"sk-secret" not in r.data and b"KeyError" not in r.data
    assert body["code"] == "INTERNAL"
    assert [e.exception_type for e in events] == ["KeyError"]
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].name == "errtrace"
    assert errors[0].exc_info is not None


def test_not_found_keeps_404(app: Flask) -> None:
    r = app.test_client().get("/missing", headers={"traceparent": TRACEPARENT})
    body = problem_of(r)
    assert r.status_code == 404
    assert (body["code"], body["status"], body["trace_id"]) == ("NOT_FOUND", 404, TRACE_ID)
    assert r.headers["X-Error-Code"] == "NOT_FOUND"
    assert r.headers["X-Trace-ID"] == TRACE_ID


def test_method_not_allowed_keeps_405_and_allow(app: Flask) -> None:
    r = app.test_client().post("/echo")
    body = problem_of(r)
    assert r.status_code == 405
    assert body["code"] == "BAD_REQUEST" and body["status"] == 405
    assert "GET" in r.headers["Allow"]
    assert r.headers["X-Error-Code"] == "BAD_REQUEST"


def test_abort_keeps_its_status_and_class(app: Flask) -> None:
    r = app.test_client().get("/forbidden")
    assert r.status_code == 403
    assert problem_of(r)["code"] == "PERMISSION_DENIED"


def test_werkzeug_retry_after_is_sent_once_and_shown_in_the_body(app: Flask) -> None:
    @app.get("/busy")
    def busy() -> Any:
        raise TooManyRequests(retry_after=30)

    r = app.test_client().get("/busy")
    assert r.status_code == 429
    assert r.headers.getlist("Retry-After") == ["30"]
    assert problem_of(r)["retry_after"] == 30


def test_repeated_headers_of_a_werkzeug_exception_are_all_sent(app: Flask) -> None:
    class SessionExpired(Forbidden):
        def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
            return [
                *super().get_headers(environ, scope),
                ("Set-Cookie", "session=; Max-Age=0"),
                ("Set-Cookie", "csrf=; Max-Age=0"),
            ]

    @app.get("/private")
    def private() -> Any:
        raise Unauthorized(www_authenticate=[
            WWWAuthenticate("basic", {"realm": "api"}),
            WWWAuthenticate("bearer", {"realm": "api"}),
        ])

    @app.get("/expired")
    def expired() -> Any:
        raise SessionExpired()

    challenges = ["Basic realm=api", "Bearer realm=api"]
    cookies = ["session=; Max-Age=0", "csrf=; Max-Age=0"]
    c = app.test_client()
    r = c.get("/private")
    assert r.status_code == 401 and problem_of(r)["code"] == "UNAUTHENTICATED"
    assert r.headers.getlist("WWW-Authenticate") == challenges
    r = c.get("/expired")
    assert r.status_code == 403 and problem_of(r)["code"] == "PERMISSION_DENIED"
    assert r.headers.getlist("Set-Cookie") == cookies
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        private, expired = httpx.get(f"{url}/private"), httpx.get(f"{url}/expired")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert private.headers.get_list("www-authenticate") == challenges
    assert expired.headers.get_list("set-cookie") == cookies


def test_a_client_that_left_mid_upload_is_cancelled_not_a_bad_request(app: Flask) -> None:
    @app.post("/upload")
    def upload() -> Any:
        raise ClientDisconnected()

    with capture_events() as events:
        app.test_client().post("/upload", data=b"x")
    assert [(e.code, e.level, e.exception_type) for e in events] == [
        ("CANCELLED", 5, "werkzeug.exceptions.ClientDisconnected")
    ]
    assert "errors.BAD_REQUEST" not in errtrace.stats()


def test_a_client_that_left_mid_upload_on_a_real_server(app: Flask) -> None:
    @app.post("/upload")
    def upload() -> Any:
        return {"size": len(request.get_data())}

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with capture_events() as events:
            with socket.create_connection(("127.0.0.1", server.server_port)) as sock:
                sock.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: test\r\n"
                    b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
                    + b"x" * 10
                )
                time.sleep(0.1)
                sock.shutdown(socket.SHUT_WR)  # gone, 99990 bytes short
            assert wait_until(lambda: len(events) >= 1)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert [(e.code, e.level, e.route) for e in events] == [("CANCELLED", 5, "/upload")]


def test_a_structured_description_is_a_detail_member_not_the_detail(app: Flask) -> None:
    @app.post("/items")
    def items() -> Any:
        abort(400, description={"name": ["required"]})

    @app.post("/text")
    def text() -> Any:
        abort(400, description="name is required")

    c = app.test_client()
    with capture_events() as events:
        r = c.post("/items")
    body = problem_of(r)
    assert r.status_code == 400 and r.headers["X-Error-Code"] == "BAD_REQUEST"
    # RFC 9457: "detail" is a string; the structure reaches the client in details.
    assert body["detail"] == BadRequest.description
    assert body["details"] == {"description": {"name": ["required"]}}
    assert events[0].details == {"description": {"name": ["required"]}}
    body = problem_of(c.post("/text"))
    assert body["detail"] == "name is required" and "details" not in body


def test_error_in_after_request_is_problem_json_recorded_once(app: Flask) -> None:
    @app.after_request
    def broken(response: Response) -> Response:
        if request.path == "/echo":
            raise ValueError("after_request bug with secret")
        return response

    with capture_events() as events:
        r = app.test_client().get("/echo")
    assert r.status_code == 500
    assert problem_of(r)["code"] == "INTERNAL"
    assert b"secret" not in r.data
    assert [e.exception_type for e in events] == ["ValueError"]


def test_handler_outside_the_middleware_still_answers_with_context() -> None:
    # A test request context runs Flask's handling without the WSGI middleware.
    flask_app = errtrace.instrument(make_app())
    with flask_app.test_request_context("/missing", headers={"traceparent": TRACEPARENT}):
        response = flask_app.handle_user_exception(NotFound())
    assert response.status_code == 404
    assert response.headers["X-Trace-ID"] == TRACE_ID


# -- streaming -------------------------------------------------------------------------


def test_streamed_body_sees_the_context(app: Flask) -> None:
    r = app.test_client().get("/stream", headers={"traceparent": TRACEPARENT})
    assert r.data.decode().splitlines() == [f"{i}:{TRACE_ID}" for i in range(3)]
    assert errtrace.current() is None


def test_sse_error_mid_stream_is_recorded_once_with_an_error_event(app: Flask) -> None:
    with capture_events() as events:
        r = app.test_client().get("/stream-error", headers={"traceparent": TRACEPARENT})
        text = r.data.decode()
    assert r.status_code == 200
    # The event starts with a blank line, which ends any event the stream left open.
    assert text.startswith("data: first\n\n\n\nevent: error\ndata: {")
    assert '"code": "LLM_OVERLOADED"' in text
    assert [(e.code, e.response_started, e.trace_id) for e in events] == [
        ("LLM_OVERLOADED", True, TRACE_ID)
    ]


# -- policy ----------------------------------------------------------------------------


def test_fallback_result_becomes_the_response(app: Flask) -> None:
    @app.get("/template")
    def template() -> Any:
        raise errtrace.AppError("AI_PROMPT_TEMPLATE_VAR_MISSING")

    errtrace.set_fallback("AI_PROMPT_TEMPLATE_VAR_MISSING", lambda err, ctx: {"text": "default"})
    r = app.test_client().get("/template", headers={"traceparent": TRACEPARENT})
    assert (r.status_code, r.get_json()) == (200, {"text": "default"})
    assert r.headers["X-Errtrace-Fallback"] == "AI_PROMPT_TEMPLATE_VAR_MISSING"
    assert r.headers["X-Trace-ID"] == TRACE_ID


def test_fallback_may_return_a_flask_response(app: Flask) -> None:
    @app.get("/template")
    def template() -> Any:
        raise errtrace.AppError("AI_PROMPT_TEMPLATE_VAR_MISSING")

    errtrace.set_fallback(
        "AI_PROMPT_TEMPLATE_VAR_MISSING", lambda err, ctx: Response("plain", status=202)
    )
    r = app.test_client().get("/template")
    assert (r.status_code, r.data) == (202, b"plain")


def test_raising_hook_does_not_change_the_response(app: Flask) -> None:
    def bad_hook(event: Any, ctx: Any) -> None:
        raise RuntimeError("hook bug")

    errtrace.on_error(bad_hook)
    r = app.test_client().get("/app-error")
    assert r.status_code == 429 and r.headers["X-Error-Code"] == "LLM_RATE_LIMITED"
    assert problem_of(r)["code"] == "LLM_RATE_LIMITED"
    assert errtrace.stats()["hook_failures"] == 1


def test_capture_events_sees_trace_and_biz_code(app: Flask) -> None:
    with capture_events() as events:
        app.test_client().get("/boom", headers={"traceparent": TRACEPARENT, "X-Biz-Code": "t-9"})
    assert [(e.code, e.trace_id, e.biz_code, e.transport) for e in events] == [
        ("INTERNAL", TRACE_ID, "t-9", "http")
    ]


# -- a real threaded server: thread reuse, concurrency, streaming ----------------------


class LeakProbe:
    """WSGI wrapper outside errtrace: what a server thread carries before each request."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.before: list[object] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.before.append(errtrace.current())
        return self.app(environ, start_response)


@pytest.fixture
def probe(app: Flask) -> LeakProbe:
    return LeakProbe(app)


class PooledWSGIServer(BaseWSGIServer):
    """werkzeug's server on a fixed pool of threads that serve request after request.

    werkzeug's own ``threaded=True`` starts a thread per connection and closes every
    connection, so only a pool (as gunicorn's gthread or waitress use) reuses threads.
    """

    multithread = True

    def __init__(self, app: Any, workers: int = 4) -> None:
        super().__init__("127.0.0.1", 0, app)
        self.pool = ThreadPoolExecutor(workers)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        self.pool.shutdown(wait=True)
        super().server_close()


@pytest.fixture(params=["threaded", "pooled"])
def server_url(request: pytest.FixtureRequest, probe: LeakProbe) -> Iterator[str]:
    server = (
        make_server("127.0.0.1", 0, probe, threaded=True)
        if request.param == "threaded"
        else PooledWSGIServer(probe)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    # Whatever a request bound must be gone before the thread serves the next one.
    assert probe.before and all(ctx is None for ctx in probe.before)


def new_traceparent() -> tuple[str, str]:
    trace_id = uuid.uuid4().hex
    return f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01", trace_id


def test_no_context_leaks_between_sequential_requests_on_reused_threads(
    server_url: str, probe: LeakProbe
) -> None:
    seen_traces: set[str] = set()
    # One keep-alive connection: werkzeug serves it on one thread, request after request.
    with httpx.Client(base_url=server_url) as http:
        for i in range(30):
            if i % 3 == 2:  # no headers at all: nothing of the previous request may show
                r = http.get("/echo")
                seen = r.json()
                assert seen["biz_code"] is None and seen["parent_span_id"] is None
                assert seen["trace_id"] not in seen_traces
            elif i % 3 == 1:  # an error in between must not leave its code behind
                r = http.get("/app-error", headers={"X-Biz-Code": f"err-{i}"})
                assert r.status_code == 429
                assert r.json()["biz_code"] == f"err-{i}"
                continue
            else:
                traceparent, trace_id = new_traceparent()
                r = http.get("/echo", headers={"traceparent": traceparent, "X-Biz-Code": f"b-{i}"})
                seen = r.json()
                assert (seen["trace_id"], seen["biz_code"]) == (trace_id, f"b-{i}")
            assert seen["err_code"] is None
            assert r.headers["X-Trace-ID"] == seen["trace_id"]
            seen_traces.add(seen["trace_id"])
    assert len(probe.before) == 30 and all(ctx is None for ctx in probe.before)


def test_pooled_threads_are_reused_without_leaking(probe: LeakProbe) -> None:
    server = PooledWSGIServer(probe, workers=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with httpx.Client(base_url=url) as http:
            first = http.get("/echo", headers={"traceparent": TRACEPARENT, "X-Biz-Code": "a"})
            assert first.status_code == 200
            bare = [http.get("/echo").json() for _ in range(10)]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    threads = [first.json()["thread"], *(seen["thread"] for seen in bare)]
    assert len(set(threads)) <= 2  # the premise: 11 requests on two live threads
    assert all(seen["trace_id"] != TRACE_ID and seen["biz_code"] is None for seen in bare)
    assert probe.before == [None] * 11


def test_no_context_crosses_between_concurrent_requests(server_url: str) -> None:
    def one(i: int, http: httpx.Client) -> tuple[str, str, dict[str, Any], str]:
        traceparent, trace_id = new_traceparent()
        r = http.get("/echo", headers={"traceparent": traceparent, "X-Biz-Code": f"c-{i}"})
        return trace_id, f"c-{i}", r.json(), r.headers["X-Trace-ID"]

    limits = httpx.Limits(max_connections=8)
    with httpx.Client(base_url=server_url, limits=limits) as http, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: one(i, http), range(80)))
    for trace_id, biz, seen, header in results:
        assert (seen["trace_id"], seen["biz_code"], header) == (trace_id, biz, trace_id)


def test_streamed_body_reads_the_context_on_a_real_server(server_url: str) -> None:
    with httpx.stream("GET", f"{server_url}/stream", headers={"traceparent": TRACEPARENT}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["x-trace-id"] == TRACE_ID
    assert lines == [f"{i}:{TRACE_ID}" for i in range(3)]


def test_mid_stream_error_on_a_real_server_ends_the_stream_cleanly(server_url: str) -> None:
    with capture_events() as events:
        r = httpx.get(f"{server_url}/stream-error", headers={"traceparent": TRACEPARENT})
        assert wait_until(lambda: len(events) >= 1)
    assert r.status_code == 200
    assert r.text.startswith("data: first\n\n\n\nevent: error\n")
    assert [(e.code, e.response_started) for e in events] == [("LLM_OVERLOADED", True)]

