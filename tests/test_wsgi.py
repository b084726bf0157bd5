"""The pure WSGI middleware, driven by werkzeug's test client and a real werkzeug server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest
from werkzeug.serving import make_server
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Response

import errtrace
from errtrace.core.config import Config
from errtrace.core.runtime import Runtime
from errtrace.middleware.wsgi import ErrtraceWSGIMiddleware, ResponseCutShort, WSGIEnvironGetter
from errtrace.testing import capture_events
from tests.conftest import TRACE_ID, TRACEPARENT, wait_until

PARENT_SPAN = "1234567890123456"
WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def echo_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Answers with the context it sees."""
    ctx = errtrace.current()
    assert ctx is not None
    body = json.dumps(ctx.as_dict() | {"tracestate": ctx.tracestate}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def raising_app(exc: BaseException) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise exc

    return app


class TrackedBody:
    """A body iterable that yields ``chunks``, then raises ``error`` (if any)."""

    def __init__(
        self,
        chunks: list[bytes],
        error: Exception | None = None,
        close_error: Exception | None = None,
    ) -> None:
        self.chunks = chunks
        self.error = error
        self.close_error = close_error
        self.closed = 0
        self.seen: list[ErrtraceContextView] = []

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.seen.append(ErrtraceContextView.now())
            yield chunk
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed += 1
        if self.close_error is not None:
            raise self.close_error


class ErrtraceContextView:
    """What ``errtrace.current()`` showed at one moment."""

    def __init__(self, trace_id: str | None) -> None:
        self.trace_id = trace_id

    @classmethod
    def now(cls) -> ErrtraceContextView:
        ctx = errtrace.current()
        return cls(ctx.trace_id if ctx else None)


def streaming_app(body: TrackedBody, content_type: str = "text/plain") -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", content_type)])
        return body

    return app


def client(app: WSGIApp, **options: Any) -> Client:
    return Client(ErrtraceWSGIMiddleware(app, **options))


# -- propagation -----------------------------------------------------------------------


def test_success_continues_the_inbound_trace_with_a_new_span() -> None:
    r = client(echo_app).get("/", headers={"traceparent": TRACEPARENT, "X-Biz-Code": "pay"})
    seen = r.get_json()
    assert r.status_code == 200
    assert r.headers["X-Trace-ID"] == TRACE_ID
    assert seen["trace_id"] == TRACE_ID
    assert seen["parent_span_id"] == PARENT_SPAN
    assert seen["span_id"] not in (PARENT_SPAN, None)
    assert seen["biz_code"] == "pay"
    assert errtrace.current() is None  # reset once the body was read


def test_no_traceparent_starts_a_new_trace_and_reports_it() -> None:
    r = client(echo_app).get("/")
    seen = r.get_json()
    assert len(seen["trace_id"]) == 32 and seen["trace_id"] != TRACE_ID
    assert r.headers["X-Trace-ID"] == seen["trace_id"]
    assert seen["parent_span_id"] is None


def test_repeated_traceparent_headers_are_ambiguous_and_start_a_new_trace() -> None:
    # werkzeug (like every WSGI server) joins repeated headers with ", ".
    r = client(echo_app).get(
        "/", headers=[("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)]
    )
    assert r.get_json()["trace_id"] != TRACE_ID
    assert r.headers["X-Trace-ID"] == r.get_json()["trace_id"]


def test_repeated_tracestate_headers_are_one_list() -> None:
    r = client(echo_app).get(
        "/",
        headers=[("traceparent", TRACEPARENT), ("tracestate", "a=1"), ("tracestate", "b=2")],
    )
    assert r.get_json()["tracestate"] == "a=1,b=2"


def test_environ_getter_maps_header_names_and_splits_only_traceparent() -> None:
    getter = WSGIEnvironGetter()
    environ = {
        "HTTP_X_BIZ_CODE": "tenant-42",
        "HTTP_TRACEPARENT": f"{TRACEPARENT}, {TRACEPARENT}",
        "HTTP_BAGGAGE": "a=1, biz.code=x",
    }
    assert getter.get(environ, "x-biz-code") == ["tenant-42"]
    assert getter.get(environ, "traceparent") is not None
    assert len(getter.get(environ, "traceparent") or []) == 2
    assert getter.get(environ, "baggage") == ["a=1, biz.code=x"]
    assert getter.get(environ, "tracestate") is None


def test_biz_code_from_baggage_when_no_header() -> None:
    r = client(echo_app).get("/", headers={"baggage": "k=v, biz.code=tenant-7"})
    assert r.get_json()["biz_code"] == "tenant-7"


def test_app_own_trace_header_is_not_duplicated() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("x-trace-id", "mine")])
        return [b""]

    r = client(app).get("/")
    assert r.headers.getlist("X-Trace-ID") == ["mine"]


def test_options_build_a_runtime_of_their_own() -> None:
    r = client(echo_app, trace_id_header="X-Request-Trace").get(
        "/", headers={"traceparent": TRACEPARENT}
    )
    assert r.headers["X-Request-Trace"] == TRACE_ID
    assert "X-Trace-ID" not in r.headers


# -- errors before the body ------------------------------------------------------------


def test_app_error_becomes_problem_json_with_error_headers() -> None:
    app = raising_app(errtrace.AppError("LLM_RATE_LIMITED", details={"retry_after": 7}))
    with capture_events() as events:
        r = client(app).get("/chat", headers={"traceparent": TRACEPARENT, "X-Biz-Code": "pay"})
    body = r.get_json(force=True)
    assert r.status_code == 429
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.headers["X-Error-Code"] == "LLM_RATE_LIMITED"
    assert r.headers["X-Error-Level"] == "2"
    assert r.headers["Retry-After"] == "7"
    assert r.headers["X-Trace-ID"] == TRACE_ID
    assert r.headers["Content-Length"] == str(len(r.data))
    assert body["code"] == "LLM_RATE_LIMITED"
    assert body["trace_id"] == TRACE_ID and body["biz_code"] == "pay"
    assert body["event_id"] == r.headers["X-Error-Event-ID"]
    assert [(e.event_id, e.code, e.trace_id, e.biz_code, e.route) for e in events] == [
        (body["event_id"], "LLM_RATE_LIMITED", TRACE_ID, "pay", "/chat")
    ]
    assert events[0].response_started is False


def test_unhandled_exception_is_internal_500_without_its_text() -> None:
    with capture_events() as events:
        r = client(raising_app(RuntimeError("db password is hunter2"))).get("/")
    assert r.status_code == 500
    assert r.headers["X-Error-Code"] == "INTERNAL"
    assert b"hunter2" not in r.data and b"RuntimeError" not in r.data
    assert r.get_json(force=True)["code"] == "INTERNAL"
    assert len(events) == 1 and events[0].exception_type == "RuntimeError"


def test_error_after_start_response_but_before_body_gets_a_new_response() -> None:
    # werkzeug's test client re-raises any exc_info, so use a PEP 3333 server: the
    # real werkzeug server accepts a second start_response until the body started.
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen() -> Iterator[bytes]:
            raise errtrace.AppError("UPSTREAM_UNAVAILABLE")
            yield b"never"

        return gen()

    with serve(ErrtraceWSGIMiddleware(app)) as url, capture_events() as events:
        r = httpx.get(url, headers={"traceparent": TRACEPARENT})
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert r.headers["x-trace-id"] == TRACE_ID
    assert len(events) == 1 and events[0].response_started is False


def test_error_after_write_records_without_a_second_response() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial")
        raise RuntimeError("late")

    with capture_events() as events, pytest.raises(ResponseCutShort) as cut:
        client(app).get("/")
    # The server is told, so it closes the connection: "partial" is not passed off as
    # the whole body.
    assert len(events) == 1 and events[0].response_started is True
    assert (cut.value.code, cut.value.event_id) == ("INTERNAL", events[0].event_id)


# -- errors while streaming ------------------------------------------------------------


def test_error_mid_stream_is_recorded_once_and_the_body_is_cut_short() -> None:
    body = TrackedBody([b"one ", b"two "], RuntimeError("boom"))
    with capture_events() as events:
        result, status = _call(ErrtraceWSGIMiddleware(streaming_app(body)),
                               {"traceparent": TRACEPARENT})
        chunks = iter(result)
        assert [next(chunks), next(chunks)] == [b"one ", b"two "]
        with pytest.raises(ResponseCutShort):
            next(chunks)
        result.close()  # type: ignore[attr-defined]
    assert [line for line, _ in status] == ["200 OK"]
    assert [(e.code, e.response_started, e.trace_id) for e in events] == [
        ("INTERNAL", True, TRACE_ID)
    ]
    assert body.closed == 1
    assert errtrace.current() is None


def test_sse_error_mid_stream_ends_with_an_error_event() -> None:
    body = TrackedBody([b"data: 1\n\n"], errtrace.AppError("LLM_OVERLOADED"))
    r = client(streaming_app(body, "text/event-stream")).get(
        "/", headers={"traceparent": TRACEPARENT}
    )
    # The error event starts with a blank line, which ends any event cut off mid-line.
    first, error = [block for block in r.data.decode().split("\n\n") if block][:2]
    assert first == "data: 1"
    name, data = error.split("\n")
    assert name == "event: error"
    doc = json.loads(data.removeprefix("data: "))
    assert doc["code"] == "LLM_OVERLOADED" and doc["trace_id"] == TRACE_ID
    assert r.data.endswith(b"\n\n")


def test_sse_error_event_can_be_switched_off() -> None:
    body = TrackedBody([b"data: 1\n\n"], errtrace.AppError("LLM_OVERLOADED"))
    # Without its error event, a failed stream is cut short like any other body.
    r = client(streaming_app(body, "text/event-stream"), sse_error_event=False).get("/")
    with pytest.raises(ResponseCutShort):
        r.get_data()


def test_generator_sees_the_context_while_streaming() -> None:
    body = TrackedBody([b"a", b"b", b"c"])
    r = client(streaming_app(body)).get("/", headers={"traceparent": TRACEPARENT})
    assert r.data == b"abc"
    assert [view.trace_id for view in body.seen] == [TRACE_ID] * 3


# -- the context's lifetime ------------------------------------------------------------


def _call(app: WSGIApp, headers: dict[str, str] | None = None) -> tuple[Iterable[bytes], list[Any]]:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    environ = EnvironBuilder(headers=headers).get_environ()
    return app(environ, start_response), started


def test_context_is_bound_until_close_even_if_the_body_is_never_iterated() -> None:
    body = TrackedBody([b"never read"])
    result, started = _call(
        ErrtraceWSGIMiddleware(streaming_app(body)), {"traceparent": TRACEPARENT}
    )
    ctx = errtrace.current()
    assert ctx is not None and ctx.trace_id == TRACE_ID  # the server may iterate later
    assert ("X-Trace-ID", TRACE_ID) in started[0][1]
    result.close()  # type: ignore[attr-defined]
    assert errtrace.current() is None
    assert body.closed == 1


def test_context_is_reset_when_the_client_goes_away_mid_body() -> None:
    body = TrackedBody([b"a", b"b", b"c"])
    result, _ = _call(ErrtraceWSGIMiddleware(streaming_app(body)), {"traceparent": TRACEPARENT})
    assert next(iter(result)) == b"a"
    result.close()  # type: ignore[attr-defined]
    assert errtrace.current() is None
    assert body.closed == 1
    assert list(result) == []  # nothing more after close


def test_base_exceptions_never_leave_the_context_bound() -> None:
    # Threads are reused: an interrupt or exit passing through must still reset.
    with capture_events() as events:
        with pytest.raises(KeyboardInterrupt):
            interrupted = ErrtraceWSGIMiddleware(raising_app(KeyboardInterrupt()))
            _call(interrupted, {"traceparent": TRACEPARENT})
        assert errtrace.current() is None

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])

            def body() -> Iterator[bytes]:
                yield b"a"
                raise SystemExit(3)

            return body()

        result, _ = _call(ErrtraceWSGIMiddleware(app), {"traceparent": TRACEPARENT})
        chunks = iter(result)
        assert next(chunks) == b"a"
        assert errtrace.current() is not None  # bound while the body streams
        with pytest.raises(SystemExit):
            next(chunks)
        assert errtrace.current() is None
    assert events == []  # not application errors: nothing recorded


def test_context_reset_at_exhaustion_then_close_still_closes_the_app_body() -> None:
    body = TrackedBody([b"x"])
    result, _ = _call(ErrtraceWSGIMiddleware(streaming_app(body)))
    assert list(result) == [b"x"]
    assert errtrace.current() is None
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]  # a second close must not reset again
    assert body.closed == 2 and errtrace.current() is None


def test_an_error_raised_by_close_after_the_body_is_recorded_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A teardown that fails once the client has its answer (a session that cannot
    # commit, a lease that cannot be returned) is an error of this request.
    body = TrackedBody([b"all ", b"of it"], close_error=RuntimeError("commit failed"))
    caplog.handler.addFilter(errtrace.ContextFilter())
    with capture_events() as events, caplog.at_level("ERROR", logger="errtrace"):
        result, started = _call(
            ErrtraceWSGIMiddleware(streaming_app(body)), {"traceparent": TRACEPARENT}
        )
        assert b"".join(result) == b"all of it"
        assert errtrace.current() is None  # reset when the body was exhausted
        result.close()  # type: ignore[attr-defined]
    assert started[0][0] == "200 OK" and body.closed == 1
    assert [(e.code, e.response_started, e.trace_id) for e in events] == [
        ("INTERNAL", True, TRACE_ID)
    ]
    assert events[0].exception_type == "RuntimeError"
    assert errtrace.current() is None
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and logged[0].exc_info[1] is body.close_error  # type: ignore[index]
    assert getattr(logged[0], "trace_id", None) == TRACE_ID  # the context, bound again


def test_an_error_in_the_body_and_one_in_close_are_two_events() -> None:
    body = TrackedBody([b"a"], RuntimeError("mid-body"), close_error=ValueError("close"))
    with capture_events() as events:
        result, _ = _call(ErrtraceWSGIMiddleware(streaming_app(body)),
                          {"traceparent": TRACEPARENT})
        chunks = iter(result)
        assert next(chunks) == b"a"
        with pytest.raises(ResponseCutShort):
            next(chunks)
        result.close()  # type: ignore[attr-defined]
    assert [(e.code, e.exception_type) for e in events] == [
        ("INTERNAL", "RuntimeError"), ("INTERNAL", "ValueError")
    ]
    assert errtrace.current() is None


def test_close_failing_when_the_server_gives_up_early_still_resets_the_context() -> None:
    body = TrackedBody([b"a", b"b"], close_error=ConnectionResetError("lease service gone"))
    with capture_events() as events:
        result, _ = _call(ErrtraceWSGIMiddleware(streaming_app(body)), {"traceparent": TRACEPARENT})
        assert next(iter(result)) == b"a"
        result.close()  # type: ignore[attr-defined]
    assert errtrace.current() is None
    assert [(e.code, e.response_started) for e in events] == [("UPSTREAM_UNAVAILABLE", True)]


def test_after_response_runs_once_after_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Runtime(Config.load())
    done: list[Any] = []
    monkeypatch.setattr(runtime, "after_response", done.append)
    result, _ = _call(ErrtraceWSGIMiddleware(raising_app(RuntimeError("x")), runtime))
    assert done == []
    list(result)
    result.close()  # type: ignore[attr-defined]
    assert len(done) == 1 and done[0].error.code == "INTERNAL"


def test_after_response_runs_for_an_error_raised_by_close(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server stops after the error event, before the end: both errors of the request
    # get their after-response actions (a level 0 exit), the one of close() included.
    runtime = Runtime(Config.load())
    done: list[Any] = []
    monkeypatch.setattr(runtime, "after_response", done.append)
    body = TrackedBody([b"data: 1\n\n"], RuntimeError("mid"), close_error=ValueError("close"))
    result, _ = _call(ErrtraceWSGIMiddleware(streaming_app(body, "text/event-stream"), runtime))
    chunks = iter(result)
    assert next(chunks) == b"data: 1\n\n"
    assert next(chunks).lstrip(b"\n").startswith(b"event: error\n")
    result.close()  # type: ignore[attr-defined]
    assert [type(failure.error.cause) for failure in done] == [ValueError, RuntimeError]


# -- policy: fallbacks and hooks -------------------------------------------------------


def test_fallback_result_becomes_the_response() -> None:
    errtrace.set_fallback(
        "AI_PROMPT_TEMPLATE_VAR_MISSING", lambda err, ctx: {"answer": "default", "code": err.code}
    )
    app = raising_app(errtrace.AppError("AI_PROMPT_TEMPLATE_VAR_MISSING"))
    with capture_events() as events:
        r = client(app).get("/", headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200
    assert r.get_json() == {"answer": "default", "code": "AI_PROMPT_TEMPLATE_VAR_MISSING"}
    assert r.headers["X-Errtrace-Fallback"] == "AI_PROMPT_TEMPLATE_VAR_MISSING"
    assert r.headers["X-Trace-ID"] == TRACE_ID
    assert events[0].fallback == "applied"


def test_fallback_may_return_a_werkzeug_response() -> None:
    errtrace.set_fallback(
        "AI_PROMPT_TEMPLATE_VAR_MISSING",
        lambda err, ctx: Response("plain default", status=203, mimetype="text/plain"),
    )
    r = client(raising_app(errtrace.AppError("AI_PROMPT_TEMPLATE_VAR_MISSING"))).get("/")
    assert (r.status_code, r.data) == (203, b"plain default")
    assert "X-Trace-ID" in r.headers


def test_a_fallbacks_werkzeug_response_is_closed_once() -> None:
    # Its close callbacks release what the fallback opened (a file, a lease): once only.
    closed: list[str] = []

    def fallback(err: Any, ctx: Any) -> Response:
        response = Response("plain default", mimetype="text/plain")
        response.call_on_close(lambda: closed.append(err.code))
        return response

    errtrace.set_fallback("AI_PROMPT_TEMPLATE_VAR_MISSING", fallback)
    app = ErrtraceWSGIMiddleware(raising_app(errtrace.AppError("AI_PROMPT_TEMPLATE_VAR_MISSING")))
    result, started = _call(app)
    assert b"".join(result) == b"plain default"
    result.close()  # type: ignore[attr-defined]
    assert started[0][0] == "200 OK"
    assert closed == ["AI_PROMPT_TEMPLATE_VAR_MISSING"]
    r = Client(app).get("/", buffered=True)  # reads the body, then closes it
    assert r.data == b"plain default"
    assert closed == ["AI_PROMPT_TEMPLATE_VAR_MISSING"] * 2


def test_a_raising_hook_does_not_change_the_response() -> None:
    app = raising_app(errtrace.AppError("LLM_RATE_LIMITED"))
    calls: list[str] = []

    def bad_hook(event: Any, ctx: Any) -> None:
        calls.append(event.code)
        raise ValueError("hook bug")

    errtrace.on_error(bad_hook)
    r = client(app).get("/")
    assert calls == ["LLM_RATE_LIMITED"]
    assert r.status_code == 429 and r.headers["X-Error-Code"] == "LLM_RATE_LIMITED"
    assert errtrace.stats()["hook_failures"] == 1


# -- errtrace.instrument ---------------------------------------------------------------


def test_instrument_wraps_a_plain_wsgi_callable() -> None:
    app = errtrace.instrument(raising_app(errtrace.AppError("NOT_FOUND")))
    assert isinstance(app, ErrtraceWSGIMiddleware)
    r = Client(app).get("/", headers={"traceparent": TRACEPARENT})
    assert (r.status_code, r.headers["X-Error-Code"]) == (404, "NOT_FOUND")
    assert r.headers["X-Trace-ID"] == TRACE_ID


# -- a real server ---------------------------------------------------------------------


class serve:
    """Run ``app`` on a threaded werkzeug server on 127.0.0.1 for a ``with`` block."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_port}/"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_real_server_streams_context_and_cuts_the_body_short_on_a_mid_stream_error() -> None:
    body = TrackedBody([b"a", b"b"], RuntimeError("broke"))
    # The client sees the body incomplete, not a complete-looking "ab".
    with serve(ErrtraceWSGIMiddleware(streaming_app(body))) as url, capture_events() as ev, \
            pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url, headers={"traceparent": TRACEPARENT})
    assert [view.trace_id for view in body.seen] == [TRACE_ID, TRACE_ID]
    assert [(e.code, e.response_started) for e in ev] == [("INTERNAL", True)]
    # The server closes the body after the client has the last byte: wait for it.
    assert wait_until(lambda: body.closed == 1)


def test_real_server_answers_in_full_when_close_fails_and_records_it() -> None:
    body = TrackedBody([b"a", b"b"], close_error=RuntimeError("teardown failed"))
    with serve(ErrtraceWSGIMiddleware(streaming_app(body))) as url, capture_events() as ev:
        r = httpx.get(url, headers={"traceparent": TRACEPARENT})
        assert wait_until(lambda: len(ev) == 1)
    assert r.status_code == 200 and r.content == b"ab"
    assert [(e.code, e.response_started, e.trace_id) for e in ev] == [
        ("INTERNAL", True, TRACE_ID)
    ]


def raw_request(url: str, method: str) -> tuple[dict[str, str], bytes]:
    """``method /`` over HTTP/1.0 on a plain socket: the headers and every byte after them
    (an HTTP client would hide bytes a server wrongly sends after a HEAD answer)."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{method} / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):  # HTTP/1.0: the server closes after answering
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {"status": status.split(" ")[1]}
    headers.update((k.lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines))
    return headers, rest


def uncoded_500(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
    return [b"" if environ["REQUEST_METHOD"] == "HEAD" else b"Traceback: boom"]


@pytest.mark.parametrize(
    ("app", "options", "status", "code"),
    [
        (raising_app(errtrace.AppError("NOT_FOUND")), {}, "404", "NOT_FOUND"),
        (raising_app(errtrace.AppError("AI_PROMPT_TEMPLATE_VAR_MISSING")), {}, "200", None),
        (uncoded_500, {"rewrite_responses": True}, "502", "LLM_SERVER_ERROR"),
    ],
    ids=["problem", "fallback", "rewritten"],
)
def test_head_gets_the_error_headers_and_no_body_on_a_real_server(
    app: WSGIApp, options: dict[str, Any], status: str, code: str | None
) -> None:
    errtrace.set_fallback("AI_PROMPT_TEMPLATE_VAR_MISSING", lambda err, ctx: {"text": "default"})
    with serve(ErrtraceWSGIMiddleware(app, **options)) as url:
        got, got_body = raw_request(url, "GET")
        head, head_body = raw_request(url, "HEAD")
    assert got["status"] == head["status"] == status
    assert got.get("x-error-code") == head.get("x-error-code") == code
    assert got_body and got["content-length"] == str(len(got_body))
    # RFC 9110: the GET's headers, Content-Length included, and not one byte of content.
    assert head["content-length"] == got["content-length"]
    assert head_body == b""

