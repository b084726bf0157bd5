"""Flask: errtrace and the app's own error handlers, Flask's ``got_request_exception``
signal, and responses errtrace did not build (shared by every request)."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from flask import Blueprint, Flask, Response, got_request_exception, request
from werkzeug.exceptions import InternalServerError
from werkzeug.serving import make_server

import errtrace
from errtrace.testing import capture_events
from tests.conftest import TRACE_ID, TRACEPARENT, wait_until


def make_app() -> Flask:
    app = Flask(__name__)

    @app.get("/app-error")
    def app_error() -> Any:
        raise errtrace.AppError("LLM_RATE_LIMITED", "slow down", details={"retry_after": 3})

    @app.get("/timeout")
    def timeout() -> Any:
        raise TimeoutError("the model did not answer")

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("db down")

    @app.get("/forbidden")
    def forbidden() -> Any:
        raise errtrace.AppError("PERMISSION_DENIED")

    @app.get("/ok")
    def ok() -> Any:
        return "ok"

    return app


def problem_of(r: Any) -> dict[str, Any]:
    assert r.headers["Content-Type"] == "application/problem+json"
    body = r.get_json(force=True)
    assert isinstance(body, dict)
    return body


class Handler:
    """An app's catch-all handler: a JSON 500 of its own; notes what it was given."""

    def __init__(self, name: str = "generic") -> None:
        self.name = name
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, exc: Exception) -> Any:
        ctx = errtrace.current()
        self.seen.append((type(exc).__name__, ctx.event_id if ctx else None))
        return {"error": self.name}, 500


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- the app's Exception handler --------------------------------------------------------


def app_with_exception_handler(where: str, handler: Handler) -> Flask:
    """The app of make_app(), its routes also in a blueprint under /bp, with ``handler``
    registered for Exception on the app (before or after instrument) or the blueprint."""
    flask_app = make_app()
    bp = Blueprint("bp", __name__)
    for rule, endpoint, view in [
        ("/app-error", "app_error", flask_app.view_functions["app_error"]),
        ("/timeout", "timeout", flask_app.view_functions["timeout"]),
        ("/boom", "boom", flask_app.view_functions["boom"]),
    ]:
        bp.add_url_rule(rule, endpoint, view)
    if where == "blueprint":
        bp.register_error_handler(Exception, handler)
    flask_app.register_blueprint(bp, url_prefix="/bp")
    if where == "app-before":
        flask_app.register_error_handler(Exception, handler)
    errtrace.instrument(flask_app)
    if where == "app-after":
        flask_app.register_error_handler(Exception, handler)
    return flask_app


WHERE = ["app-before", "app-after", "blueprint"]


@pytest.mark.parametrize("where", WHERE)
def test_errors_with_a_code_keep_problem_json_despite_an_exception_handler(where: str) -> None:
    handler = Handler()
    c = app_with_exception_handler(where, handler).test_client()
    prefix = "/bp" if where == "blueprint" else ""
    with capture_events() as events:
        r = c.get(f"{prefix}/app-error", headers={"traceparent": TRACEPARENT})
        timeout = c.get(f"{prefix}/timeout")
    body = problem_of(r)
    assert r.status_code == 429
    assert (r.headers["X-Error-Code"], r.headers["X-Error-Level"]) == ("LLM_RATE_LIMITED", "2")
    assert r.headers["X-Trace-ID"] == TRACE_ID
    assert r.headers["Retry-After"] == "3"
    assert (body["code"], body["detail"], body["event_id"]) == (
        "LLM_RATE_LIMITED", "slow down", r.headers["X-Error-Event-ID"]
    )
    assert timeout.status_code == 504
    assert problem_of(timeout)["code"] == timeout.headers["X-Error-Code"] == "TIMEOUT"
    assert [(e.code, e.trace_id) for e in events] == [
        ("LLM_RATE_LIMITED", TRACE_ID), ("TIMEOUT", events[1].trace_id)
    ]
    assert events[1].exception_type == "TimeoutError"
    assert handler.seen == []


@pytest.mark.parametrize("where", WHERE)
def test_the_apps_exception_handler_answers_unhandled_errors_once_recorded(where: str) -> None:
    handler = Handler()
    c = app_with_exception_handler(where, handler).test_client()
    prefix = "/bp" if where == "blueprint" else ""
    with capture_events() as events:
        r = c.get(f"{prefix}/boom", headers={"traceparent": TRACEPARENT})
    assert (r.status_code, r.get_json()) == (500, {"error": "generic"})
    assert r.headers["X-Trace-ID"] == TRACE_ID
    assert "X-Error-Code" not in r.headers
    assert [(e.code, e.exception_type, e.trace_id) for e in events] == [
        ("INTERNAL", "RuntimeError", TRACE_ID)
    ]
    # Called with the exception itself, as Flask does, once errtrace recorded it.
    assert handler.seen == [("RuntimeError", events[0].event_id)]


def test_werkzeug_errors_keep_problem_json_despite_an_exception_handler() -> None:
    handler = Handler()
    flask_app = errtrace.instrument(make_app())
    flask_app.register_error_handler(Exception, handler)
    c = flask_app.test_client()
    with capture_events() as events:
        missing = c.get("/missing")
        not_allowed = c.post("/ok")
    assert missing.status_code == 404 and problem_of(missing)["code"] == "NOT_FOUND"
    assert not_allowed.status_code == 405 and "GET" in not_allowed.headers["Allow"]
    assert [e.code for e in events] == ["NOT_FOUND", "BAD_REQUEST"]
    assert handler.seen == []


def test_a_handler_for_the_exceptions_own_class_is_the_apps_decision() -> None:
    catch_all = Handler()
    flask_app = make_app()
    flask_app.register_error_handler(Exception, catch_all)
    errtrace.instrument(flask_app)
    # Registered after instrument(): each is found when the error happens.
    flask_app.register_error_handler(
        errtrace.TransientError, lambda exc: (f"transient: {exc.code}", 418)
    )
    flask_app.register_error_handler(404, lambda exc: ("our own 404 page", 404))
    c = flask_app.test_client()
    with capture_events() as events:
        transient = c.get("/app-error")
        business = c.get("/forbidden")
        missing = c.get("/missing")
    assert (transient.status_code, transient.data) == (418, b"transient: LLM_RATE_LIMITED")
    assert (missing.status_code, missing.data) == (404, b"our own 404 page")
    # Another AppError has no handler of its own: errtrace's answer, not the catch-all.
    assert business.status_code == 403 and problem_of(business)["code"] == "PERMISSION_DENIED"
    assert [e.code for e in events] == ["PERMISSION_DENIED"]
    assert catch_all.seen == []


def test_an_app_handler_behind_a_blueprints_exception_handler_answers() -> None:
    flask_app = make_app()
    bp = Blueprint("bp", __name__)
    catch_all = Handler("bp")
    bp.register_error_handler(Exception, catch_all)

    @bp.get("/value")
    def value() -> Any:
        raise ValueError("bad input")

    flask_app.register_blueprint(bp, url_prefix="/bp")
    flask_app.register_error_handler(ValueError, lambda exc: ("value error", 400))
    errtrace.instrument(flask_app)
    r = flask_app.test_client().get("/bp/value")
    assert (r.status_code, r.data) == (400, b"value error")
    assert catch_all.seen == []


def test_an_exception_handler_that_fails_leaves_the_answer_to_errtrace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flask_app = errtrace.instrument(make_app())

    @flask_app.errorhandler(Exception)
    def broken(exc: Exception) -> Any:
        if request.path == "/boom":
            raise KeyError("template missing")
        return None  # not a response: Flask could not send it

    @flask_app.get("/none")
    def none() -> Any:
        raise LookupError("nothing")

    c = flask_app.test_client()
    with capture_events() as events:
        raised = c.get("/boom")
        returned_none = c.get("/none")
    for r in (raised, returned_none):
        assert r.status_code == 500 and problem_of(r)["code"] == "INTERNAL"
        assert r.headers["X-Error-Event-ID"] == problem_of(r)["event_id"]
    assert [e.exception_type for e in events] == ["RuntimeError", "LookupError"]
    failures = [rec for rec in caplog.records if "Exception error handler failed" in rec.message]
    assert len(failures) == 2


def test_a_fallback_answers_before_the_apps_exception_handler() -> None:
    handler = Handler()
    flask_app = errtrace.instrument(make_app())
    flask_app.register_error_handler(Exception, handler)
    errtrace.set_fallback("INTERNAL", lambda err, ctx: {"answer": "cached"})
    with capture_events() as events:
        r = flask_app.test_client().get("/boom")
    assert (r.status_code, r.get_json()) == (200, {"answer": "cached"})
    assert r.headers["X-Errtrace-Fallback"] == "INTERNAL"
    assert [(e.code, e.fallback) for e in events] == [("INTERNAL", "applied")]
    assert handler.seen == []


def test_an_async_exception_handler_is_awaited() -> None:
    flask_app = errtrace.instrument(make_app())

    @flask_app.errorhandler(Exception)
    async def generic(exc: Exception) -> Any:
        return {"error": "async"}, 500

    with capture_events() as events:
        r = flask_app.test_client().get("/boom")
    assert (r.status_code, r.get_json()) == (500, {"error": "async"})
    assert [e.code for e in events] == ["INTERNAL"]


def test_the_apps_exception_handler_on_a_real_server() -> None:
    handler = Handler()
    flask_app = app_with_exception_handler("app-after", handler)
    with capture_events() as events, serve(flask_app) as url:
        coded = httpx.get(f"{url}/app-error", headers={"traceparent": TRACEPARENT})
        unhandled = httpx.get(f"{url}/boom", headers={"traceparent": TRACEPARENT})
    assert coded.status_code == 429
    assert coded.headers["content-type"] == "application/problem+json"
    assert coded.headers["x-error-code"] == coded.json()["code"] == "LLM_RATE_LIMITED"
    assert (unhandled.status_code, unhandled.json()) == (500, {"error": "generic"})
    assert unhandled.headers["x-trace-id"] == TRACE_ID
    assert "x-error-code" not in unhandled.headers
    assert [e.code for e in events] == ["LLM_RATE_LIMITED", "INTERNAL"]
    assert handler.seen == [("RuntimeError", events[1].event_id)]


# -- got_request_exception --------------------------------------------------------------


class Receiver:
    """A got_request_exception receiver, as error reporters connect one."""

    def __init__(self, app: Flask) -> None:
        self.seen: list[tuple[str, str | None]] = []
        got_request_exception.connect(self, app, weak=False)
        self.app = app

    def __call__(self, sender: Flask, exception: Exception, **extra: Any) -> None:
        ctx = errtrace.current()
        self.seen.append((repr(exception), ctx.event_id if ctx else None))

    def disconnect(self) -> None:
        got_request_exception.disconnect(self, self.app)


@pytest.fixture
def signalled() -> Iterator[tuple[Flask, Receiver]]:
    flask_app = errtrace.instrument(make_app())
    receiver = Receiver(flask_app)
    try:
        yield flask_app, receiver
    finally:
        receiver.disconnect()


def test_got_request_exception_is_sent_once_for_an_unhandled_error(
    signalled: tuple[Flask, Receiver],
) -> None:
    flask_app, receiver = signalled
    with capture_events() as events:
        r = flask_app.test_client().get("/boom")
    assert r.status_code == 500 and problem_of(r)["code"] == "INTERNAL"
    # Sent once errtrace recorded the error: a reporter can quote its event id.
    assert receiver.seen == [("RuntimeError('db down')", events[0].event_id)]


def test_got_request_exception_is_sent_for_what_plain_flask_sends_it_for(
    signalled: tuple[Flask, Receiver],
) -> None:
    flask_app, receiver = signalled

    @flask_app.after_request
    def broken(response: Response) -> Response:
        if request.path == "/ok":
            raise ValueError("after_request bug")
        return response

    c = flask_app.test_client()
    with capture_events() as events:
        coded = c.get("/app-error")  # no handler of the app: plain Flask signals it
        after = c.get("/ok")
        missing = c.get("/missing")  # an HTTP error is answered, not signalled
    assert (coded.status_code, after.status_code, missing.status_code) == (429, 500, 404)
    assert [e.code for e in events] == ["LLM_RATE_LIMITED", "INTERNAL", "NOT_FOUND"]
    assert [name for name, _ in receiver.seen] == [
        "TransientError('LLM_RATE_LIMITED', 'slow down')", "ValueError('after_request bug')"
    ]


def test_got_request_exception_is_not_sent_for_what_an_app_handler_answers(
    signalled: tuple[Flask, Receiver],
) -> None:
    flask_app, receiver = signalled
    flask_app.register_error_handler(Exception, Handler())
    c = flask_app.test_client()
    assert c.get("/boom").get_json() == {"error": "generic"}
    assert c.get("/app-error").status_code == 429
    assert receiver.seen == []


def test_got_request_exception_then_the_apps_500_page(signalled: tuple[Flask, Receiver]) -> None:
    flask_app, receiver = signalled
    flask_app.register_error_handler(500, lambda exc: ("our own 500 page", 500))
    r = flask_app.test_client().get("/boom")
    assert (r.status_code, r.data) == (500, b"our own 500 page")
    assert [name for name, _ in receiver.seen] == ["RuntimeError('db down')"]


def test_got_request_exception_for_a_trapped_http_error(
    signalled: tuple[Flask, Receiver],
) -> None:
    flask_app, receiver = signalled
    flask_app.config["TRAP_HTTP_EXCEPTIONS"] = True  # plain Flask then signals a 404
    r = flask_app.test_client().get("/missing")
    assert r.status_code == 404 and problem_of(r)["code"] == "NOT_FOUND"
    assert [name for name, _ in receiver.seen] == ["<NotFound '404: Not Found'>"]


def test_a_failing_receiver_does_not_change_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    flask_app = errtrace.instrument(make_app())

    def broken(sender: Flask, exception: Exception, **extra: Any) -> None:
        raise RuntimeError("reporter bug")

    got_request_exception.connect(broken, flask_app)
    try:
        with capture_events() as events:
            r = flask_app.test_client().get("/boom")
    finally:
        got_request_exception.disconnect(broken, flask_app)
    assert r.status_code == 500 and problem_of(r)["code"] == "INTERNAL"
    assert [e.exception_type for e in events] == ["RuntimeError"]
    assert any("got_request_exception receiver raised" in rec.message for rec in caplog.records)


# -- responses errtrace did not build --------------------------------------------------


class Crash(RuntimeError):
    """An exception nothing maps (a built-in one cannot be weakly referenced)."""


class Tracked:
    """Weak references to the errors views raised: alive means something kept them."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[BaseException]] = []

    def raised(self, exc: BaseException) -> BaseException:
        self.refs.append(weakref.ref(exc))
        return exc

    def alive(self) -> int:
        gc.collect()
        return sum(ref() is not None for ref in self.refs)


def shared_response_app(answer: str, **options: Any) -> tuple[Flask, Response, Tracked]:
    shared = Response('{"answer": "cached"}', status=200, mimetype="application/json")
    tracked = Tracked()
    flask_app = errtrace.instrument(make_app(), **options)

    @flask_app.get("/model")
    def model() -> Any:
        raise tracked.raised(errtrace.AppError("AI_MODEL_LOAD_FAILED"))

    @flask_app.get("/crash")
    def crash() -> Any:
        raise tracked.raised(Crash("crash"))

    @flask_app.get("/unsafe")
    def unsafe() -> Any:
        raise errtrace.AppError("AI_PROCESS_UNSAFE")

    if answer == "fallback":
        for code in ("AI_MODEL_LOAD_FAILED", "AI_PROCESS_UNSAFE"):
            errtrace.set_fallback(code, lambda err, ctx: shared)
    elif answer == "500-page":
        flask_app.register_error_handler(500, lambda exc: shared)
    return flask_app, shared, tracked


@pytest.mark.parametrize(("answer", "path"), [("fallback", "/model"), ("500-page", "/crash")])
def test_a_shared_response_gains_nothing_per_request(answer: str, path: str) -> None:
    # Not logged: the test's log capture would keep the records' exceptions alive.
    flask_app, shared, tracked = shared_response_app(answer, log_errors=False)
    c = flask_app.test_client()
    with capture_events() as events:
        for _ in range(20):
            r = c.get(path)
            assert (r.status_code, r.get_json()) == (200, {"answer": "cached"})
            r.close()
    assert len(events) == 20
    assert shared._on_close == []  # nothing of any request was attached to it
    del events, r
    assert tracked.alive() == 0  # no request's error (nor its traceback) is kept


@pytest.mark.parametrize("answer", ["fallback", "errtrace"])
def test_a_level_0_exit_still_waits_for_the_response_to_close(answer: str) -> None:
    flask_app, shared, _ = shared_response_app(answer, exit_on_fatal=True)
    exits: list[str] = []
    flask_app.extensions["errtrace"].exit_handler = lambda: exits.append("exit")
    c = flask_app.test_client()
    r = c.get("/unsafe")
    if answer == "fallback":
        assert (r.status_code, r.get_json()) == (200, {"answer": "cached"})
    else:
        assert r.status_code == 500 and problem_of(r)["code"] == "AI_PROCESS_UNSAFE"
    assert exits == []  # the client does not have the whole answer yet
    r.close()
    assert exits == ["exit"]
    with serve(flask_app) as url:
        served = httpx.get(f"{url}/unsafe")
        assert wait_until(lambda: len(exits) == 2)
    assert served.status_code == r.status_code
    assert exits == ["exit", "exit"]
    assert shared._on_close == []



def test_an_unhandled_error_is_logged_once_also_with_the_apps_500_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    flask_app = errtrace.instrument(make_app())
    flask_app.register_error_handler(InternalServerError, lambda exc: ("page", 500))
    r = flask_app.test_client().get("/boom")
    assert (r.status_code, r.data) == (500, b"page")
    # errtrace's record, with the stack; not a second one from Flask's own logger.
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].name == "errtrace"
