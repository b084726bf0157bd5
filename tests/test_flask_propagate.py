"""Flask's PROPAGATE_EXCEPTIONS (default: TESTING or DEBUG) under ``errtrace.instrument``.

Plain Flask raises an unhandled exception on to the test client, the debugger or the
server in those modes, and existing test suites rely on it (``pytest.raises`` around a
test-client call). errtrace records the error, then lets it go the same way; errors
with a code of their own are answered as before, as Flask still answers HTTPExceptions.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, abort, got_request_exception
from werkzeug.debug import DebuggedApplication
from werkzeug.test import Client

import errtrace
from errtrace.testing import capture_events
from tests.conftest import TRACE_ID, TRACEPARENT


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)

    @app.get("/boom")
    def boom() -> Any:
        raise ZeroDivisionError("secret divisor")

    @app.get("/coded")
    def coded() -> Any:
        raise errtrace.AppError("LLM_RATE_LIMITED", "slow down")

    @app.get("/missing")
    def missing() -> Any:
        abort(404)

    @app.get("/ctx")
    def ctx() -> Any:
        current = errtrace.current()
        assert current is not None
        return {"trace_id": current.trace_id}

    return errtrace.instrument(app, service_name="flask-propagate")


def test_testing_mode_raises_an_unhandled_exception_after_recording_it() -> None:
    app = make_app(TESTING=True)
    signalled: list[BaseException] = []

    def receiver(sender: Any, exception: BaseException, **_: Any) -> None:
        signalled.append(exception)

    got_request_exception.connect(receiver, app)
    with capture_events() as events, pytest.raises(ZeroDivisionError):
        app.test_client().get("/boom", headers={"traceparent": TRACEPARENT})
    [event] = events
    assert (event.code, event.trace_id, event.exception_type) == (
        "INTERNAL", TRACE_ID, "ZeroDivisionError")
    assert [type(e) for e in signalled] == [ZeroDivisionError]
    # Nothing stays bound: the next request starts its own trace, and none is current.
    assert errtrace.current() is None
    answer = app.test_client().get("/ctx")
    assert answer.status_code == 200 and answer.get_json()["trace_id"] != TRACE_ID


def test_propagate_exceptions_false_keeps_the_problem_json_answer_in_testing() -> None:
    app = make_app(TESTING=True, PROPAGATE_EXCEPTIONS=False)
    answer = app.test_client().get("/boom")
    assert answer.status_code == 500
    assert answer.mimetype == "application/problem+json"
    assert answer.get_json()["code"] == "INTERNAL"
    assert "secret" not in answer.get_data(as_text=True)


def test_propagate_exceptions_true_raises_outside_testing_too() -> None:
    app = make_app(PROPAGATE_EXCEPTIONS=True)
    with pytest.raises(ZeroDivisionError):
        app.test_client().get("/boom")


@pytest.mark.parametrize("path,status,code", [
    ("/coded", 429, "LLM_RATE_LIMITED"),
    ("/missing", 404, "NOT_FOUND"),
])
def test_errors_with_a_code_are_still_answered_in_testing(
    path: str, status: int, code: str
) -> None:
    answer = make_app(TESTING=True).test_client().get(path)
    assert answer.status_code == status
    assert answer.get_json()["code"] == code
    assert answer.headers["X-Error-Code"] == code


def test_the_apps_exception_handler_still_answers_in_testing() -> None:
    app = make_app(TESTING=True)

    @app.errorhandler(Exception)
    def own(exc: Exception) -> Any:
        return {"own": type(exc).__name__}, 500

    with capture_events() as events:
        answer = app.test_client().get("/boom")
    assert answer.get_json() == {"own": "ZeroDivisionError"}
    assert [e.code for e in events] == ["INTERNAL"]


def test_the_werkzeug_debugger_shows_its_page_in_debug_mode() -> None:
    app = make_app(DEBUG=True)
    with capture_events() as events:
        answer = Client(DebuggedApplication(app, evalex=False)).get("/boom")
    assert answer.status_code == 500
    assert answer.mimetype == "text/html"
    assert "ZeroDivisionError" in answer.get_data(as_text=True)
    assert [e.code for e in events] == ["INTERNAL"]
