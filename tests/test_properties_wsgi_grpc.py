"""Property-based tests (Hypothesis) of the WSGI, Flask and gRPC paths that take untrusted
input, the companion of ``tests/test_properties.py`` (same profile, shared strategies).

What a user would notice is what is checked: a request never crashes and never loses its
response, every response carries a valid trace id, an error answers with problem+json
(or a rich gRPC status) that agrees with that id, nothing a client or a peer sent is
echoed unless it validated, and no context outlives its request.

The WSGI apps are called directly, by a small server below that keeps to PEP 3333, so no
socket is needed; the gRPC interceptors get a stand-in servicer context and failed call.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import grpc
import pytest
from flask import Flask, Response, abort, request
from google.rpc import error_details_pb2, status_pb2
from hypothesis import example, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

import errtrace
from errtrace.core.codes import CODE_ID_RE, registry
from errtrace.core.config import Config
from errtrace.core.context import ErrorContext
from errtrace.core.encoding import ErrorWriter
from errtrace.core.errors import AppError
from errtrace.core.propagation import DEFAULT_SETTINGS, extract, new_root_context
from errtrace.core.runtime import Runtime
from errtrace.grpc_interceptors._client import ClientBase
from errtrace.grpc_interceptors._metadata import metadata_getter
from errtrace.grpc_interceptors._server import ServerInterceptor
from errtrace.grpc_interceptors._status import (
    DETAILS_KEY,
    MAX_STATUS_BYTES,
    Status,
    decode_status,
    error_status,
)
from errtrace.middleware.wsgi import ErrtraceWSGIMiddleware, ResponseCutShort, wsgi_getter
from errtrace.testing import capture_events
from tests.test_properties import (
    BIZ,
    CODE_LIKE,
    LATIN1,
    META_KEY,
    META_VALUE,
    RAW_BAGGAGE,
    _scrub,
    assert_bounded_error,
    assert_valid_context,
    default_recursion_limit,
    header_value,
    is_id,
    mutated,
    repeated,
    tracestates,
)

settings.load_profile("errtrace-properties")  # the profile test_properties registers

BIZ_RE = re.compile(DEFAULT_SETTINGS.biz_pattern.pattern)
CODE_IDS = sorted(c.id for c in registry)
SECRET = "sk-live-SECRET-7f3a"
"""Put in exception texts and peers' messages: never to be seen by a client."""
CONFIG = Config(service_name="props", log_errors=False)


# --- a PEP 3333 server, in process ------------------------------------------------------


class CloseFailed(Exception):
    """What an app iterable's ``close()`` raises in these tests."""


@dataclass
class Served:
    """What the server sent for one request, and what escaped the app while it did."""

    status: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raised: BaseException | None = None
    raised_in: str | None = None  # "call", "iterate" or "close"

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def trace_id(self) -> str:
        found = self.values("x-trace-id")
        assert len(found) == 1, self.headers
        assert is_id(found[0], 32), found[0]
        return found[0]


def serve(app: Callable[..., Any], environ: dict[str, Any], *, server: str,
          drop_after: int | None = None) -> Served:
    """Run one request as a WSGI server does (PEP 3333).

    The headers go out with the first body chunk: a non-empty one (``"lazy"``, as
    PEP 3333 asks) or any (``"eager"``, what wsgiref, werkzeug's server and gunicorn
    do). A later ``start_response`` must carry ``exc_info`` and is refused, by
    re-raising it, once the headers went out; ``"refuses"`` always refuses it (as
    werkzeug's test client does). ``drop_after``: the client went away after that many
    chunks. ``close()`` of the app's iterable is called whatever happened.
    """
    out = Served()
    state: dict[str, Any] = {"status": None, "headers": None, "sent": False}

    def send_headers() -> None:
        assert state["status"] is not None, "body before start_response"
        out.status, out.headers = state["status"], list(state["headers"])
        state["sent"] = True

    def write(data: bytes) -> None:
        assert type(data) is bytes
        if not state["sent"]:
            send_headers()
        out.body += data

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            if state["sent"] or server == "refuses":
                raise exc_info[1].with_traceback(exc_info[2])
        elif state["status"] is not None:
            raise AssertionError("start_response called twice without exc_info")
        assert type(status) is str and re.fullmatch(r"[1-5][0-9][0-9] \S.*", status), status
        for name, value in headers:
            # A header the server can write: latin-1, no line break or NUL in it.
            assert type(name) is str and type(value) is str
            assert re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name), name
            value.encode("latin-1")
            assert not any(c in value for c in "\r\n\x00"), (name, value)
        state["status"], state["headers"] = status, headers
        return write

    stage = "call"
    result = None
    try:
        result = app(environ, start_response)
        stage = "iterate"
        for i, chunk in enumerate(result):
            assert type(chunk) is bytes
            if chunk or server == "eager":
                write(chunk)
            if drop_after is not None and i + 1 >= drop_after:
                break
        if not state["sent"]:
            send_headers()
    except BaseException as exc:  # what a server logs (and answers 500 for, if it can)
        out.raised, out.raised_in = exc, stage
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except BaseException as exc:
                if out.raised is None:
                    out.raised, out.raised_in = exc, "close"
    return out


# --- inbound headers, as a WSGI server hands them over ------------------------------------


def as_wsgi(value: str) -> str:
    """The ``environ`` value for a header a client sent as the UTF-8 of ``value``:
    WSGI decodes header bytes as latin-1, so every code point is 0-255."""
    return value.encode("utf-8", "surrogatepass").decode("latin-1")


WSGI_VALUE = st.one_of(
    st.text(LATIN1, max_size=80),
    header_value().map(as_wsgi),
    repeated(st.text(LATIN1, min_size=1, max_size=4), 5000),
)
# Valid values often enough that the paths that keep them run: ids drawn as integers
# (a hex text filtered for "not all zeros" is often given up on).
VALID_TRACEPARENT = st.builds(
    lambda t, p, f: f"00-{t:032x}-{p:016x}-{f:02x}",
    st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255),
)
INBOUND_TEXT = {
    "traceparent": st.one_of(
        VALID_TRACEPARENT, VALID_TRACEPARENT.map(lambda v: f" {v}\t"),
        st.lists(VALID_TRACEPARENT, min_size=2, max_size=2).map(", ".join),  # two headers
        mutated(VALID_TRACEPARENT),
    ),
    "tracestate": tracestates() | mutated(tracestates()),
    "baggage": st.builds(lambda raw, biz: ",".join([f"biz.code={biz}", raw] if raw else
                                                   [f"biz.code={biz}"]), RAW_BAGGAGE,
                         BIZ | mutated(BIZ)) | RAW_BAGGAGE,
    "x-biz-code": BIZ | mutated(BIZ),
}
INBOUND = st.fixed_dictionaries({}, optional={
    "HTTP_" + name.upper().replace("-", "_"): (values.map(as_wsgi) | WSGI_VALUE)
    for name, values in INBOUND_TEXT.items()
} | {
    # A client's own X-Error-Code is never trusted (README).
    "HTTP_X_ERROR_CODE": st.sampled_from(["LLM_RATE_LIMITED", "INTERNAL"]) | WSGI_VALUE,
})
METHOD = st.sampled_from(["GET", "GET", "POST", "HEAD"])
SERVER = st.sampled_from(["lazy", "eager", "refuses"])


def replaceable(server: str, sent: list[bytes], where: str, at: int) -> bool:
    """Whether the server still takes a new status and headers when the app fails
    ``where`` (``"iter"``: at item ``at``, after ``sent``)."""
    if where == "before":
        return True  # the app never called start_response: the first call is errtrace's
    if server == "refuses":
        return False
    if server == "eager":
        return where != "iter" or at == 0
    return not any(sent)  # PEP 3333: the headers wait for the first body byte


def expected_context(environ: dict[str, Any]) -> ErrorContext:
    """The context the inbound headers stand for (``extract`` is tested on its own)."""
    return extract(environ, wsgi_getter, DEFAULT_SETTINGS)


# --- app behaviour -------------------------------------------------------------------


@dataclass
class Plan:
    """What the app does: answer ``status`` with ``chunks``; or, when ``fails``, raise
    ``AppError(error)`` (``None``: a plain crash) at ``where``: ``"before"`` or
    ``"after-start"`` (``start_response``), or ``"iter"`` (its iterable raises when asked
    for item ``at``). ``close_raises``: its iterable's ``close()`` raises."""

    status: int
    content_type: str
    chunks: list[bytes]
    fails: bool
    error: str | None
    where: str
    at: int
    close_raises: bool

    def exception(self) -> Exception:
        if self.error is None:
            return RuntimeError(f"db password={SECRET}")
        return AppError(self.error)

    @property
    def code(self) -> str:
        return "INTERNAL" if self.error is None else self.error

    def sent_before_failing(self) -> list[bytes]:
        return self.chunks[: self.at] if self.where == "iter" else []


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    chunks = draw(st.lists(st.binary(max_size=20) | st.just(b""), max_size=4))
    return Plan(
        status=draw(st.integers(200, 599)),
        content_type=draw(st.sampled_from(
            ["text/plain", "application/json", "text/event-stream", "text/event-stream; a=b"])),
        chunks=chunks,
        fails=draw(st.booleans()),
        error=draw(st.none() | st.sampled_from(CODE_IDS)),
        where=draw(st.sampled_from(["before", "after-start", "iter", "iter"])),
        at=draw(st.integers(0, len(chunks))),
        close_raises=draw(st.integers(0, 4)) == 0,
    )


class AppBody:
    """The app's body iterable: notes each step's context and its own ``close()``."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.seen: list[str | None] = []
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        plan = self.plan
        for i, chunk in enumerate(plan.chunks):
            ctx = errtrace.current()
            self.seen.append(ctx.trace_id if ctx else None)
            if plan.fails and i == plan.at:
                raise plan.exception()
            yield chunk
        if plan.fails and plan.at == len(plan.chunks):
            raise plan.exception()

    def close(self) -> None:
        self.closed += 1
        if self.plan.close_raises:
            raise CloseFailed("close")


@dataclass
class Seen:
    """What the app observed of errtrace while it ran."""

    in_call: list[str | None] = field(default_factory=list)
    bodies: list[AppBody] = field(default_factory=list)


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    plan: Plan = environ["props.plan"]
    seen: Seen = environ["props.seen"]
    ctx = errtrace.current()
    seen.in_call.append(ctx.trace_id if ctx else None)
    if plan.fails and plan.where == "before":
        raise plan.exception()
    start_response(f"{plan.status} Whatever", [("Content-Type", plan.content_type)])
    if plan.fails and plan.where == "after-start":
        raise plan.exception()
    body = AppBody(plan)
    seen.bodies.append(body)
    return body


# --- the checks every HTTP answer must pass ----------------------------------------------


def check_answer(
    served: Served,
    environ: dict[str, Any],
    plan: Plan,
    answered_error: bool,
    sent_body: bytes,
    events: list[Any],
    error_status: int,
    code: str,
) -> None:
    """The answer to one request: the status and body the plan calls for, one valid
    ``X-Trace-ID`` (the inbound trace's when that validated), a problem+json answer that
    agrees with it, nothing inbound echoed unvalidated, no secret, no leaked context."""
    assert errtrace.current() is None, "the request's context outlived it"
    trace_id = served.trace_id()
    expected = expected_context(environ)
    if expected.remote:
        assert trace_id == expected.trace_id
    head = environ["REQUEST_METHOD"] == "HEAD"
    # An inbound X-Error-Code is never taken for this answer's code.
    assert served.values("x-error-code") == ([code] if answered_error else [])
    assert SECRET.encode() not in served.body
    assert not any(SECRET in v for _, v in served.headers)
    if plan.fails:
        # Recorded once, with this request's ids, whatever was still sendable.
        assert [(e.code, e.trace_id) for e in events] == [(code, trace_id)]
    else:
        assert events == []
    if answered_error:
        assert served.status.startswith(f"{error_status} ")
        assert served.values("content-type") == ["application/problem+json"]
        length = served.values("content-length")
        assert len(length) == 1
        if head:
            assert served.body == b""
            return
        assert int(length[0]) == len(served.body)
        problem = json.loads(served.body)
        check_problem(problem, code, trace_id, expected)
        assert served.values("x-error-event-id") == [problem["event_id"]] == [events[0].event_id]
        return
    assert served.status.startswith(f"{plan.status} ")
    assert served.body.startswith(sent_body)
    rest = served.body[len(sent_body):]
    # An event stream that failed after it started ends with an error event (after a
    # blank line, which ends whatever event the stream was cut in); any other answer is
    # the app's bytes as they were.
    if plan.fails and plan.content_type.startswith("text/event-stream"):
        prefix = b"\n\nevent: error\ndata: "
        assert rest.startswith(prefix) and rest.endswith(b"\n\n")
        check_problem(json.loads(rest[len(prefix):]), code, trace_id, expected)
    else:
        assert rest == b""


def check_cut_short(served: Served, cut: bool, events: list[Any], code: str) -> bool:
    """A body that failed after it started, with no error event to end it, is cut short:
    the server is told (``ResponseCutShort``) so that it closes the connection and the
    client sees the body incomplete. Nothing else escapes to the server.

    True when the server answers on its own: it refused errtrace's answer before any
    header went out (as werkzeug's test client does), so there is nothing of errtrace's
    to check but the one event and the context's end."""
    if not cut:
        assert served.raised is None, served.raised
        return False
    assert isinstance(served.raised, ResponseCutShort), served.raised
    if served.status:
        return False
    assert errtrace.current() is None, "the request's context outlived it"
    recorded = [e for e in events if not (e.exception_type or "").endswith(".CloseFailed")]
    assert [e.code for e in recorded] == [code]
    assert served.raised.event_id == recorded[0].event_id
    return True


def closing_failure(events: list[Any], served: Served, *, expected: bool) -> list[Any]:
    """Check the event of a failed ``close()`` (the last, when ``expected``: the request's
    own, after the answer) and return the other events."""
    closing = [e for e in events if (e.exception_type or "").endswith(".CloseFailed")]
    if expected:
        assert [(e.code, e.response_started, e.trace_id) for e in closing] == [
            ("INTERNAL", True, served.trace_id())
        ]
        assert events[-1] is closing[0]
    else:
        assert closing == []
    return [e for e in events if e not in closing]


def check_problem(problem: dict[str, Any], code: str, trace_id: str,
                  expected: ErrorContext) -> None:
    assert problem["code"] == code and problem["trace_id"] == trace_id
    assert is_id(problem["span_id"], 16)
    # The business code in the answer is the validated one, or none: never raw input.
    assert problem["biz_code"] == expected.biz_code
    assert problem["biz_code"] is None or BIZ_RE.fullmatch(problem["biz_code"])


# --- the WSGI middleware ------------------------------------------------------------------


@given(INBOUND, METHOD, plans(), SERVER, st.none() | st.integers(1, 3))
@example({"HTTP_X_BIZ_CODE": "tenant\r\nSet-Cookie: a=1", "HTTP_X_ERROR_CODE": "INTERNAL"},
         "GET", Plan(200, "text/plain", [b"ok"], False, None, "iter", 0, False), "lazy", None)
# An empty chunk hands the server no byte: the error still gets its problem+json (it got
# the app's 200 and an empty body before the fix).
@example({}, "GET", Plan(200, "text/plain", [b""], True, None, "iter", 1, False), "lazy", None)
# A refused replacement keeps the event stream's error event (it lost it, with werkzeug's
# test client, to the refused problem+json's content type).
@example({}, "GET", Plan(200, "text/event-stream", [], True, None, "iter", 0, False), "refuses",
         None)
@example({}, "GET", Plan(200, "text/event-stream", [b""], True, None, "iter", 1, False), "eager",
         None)
def test_wsgi_middleware_answers_every_request_and_leaks_nothing(
    inbound: dict[str, str], method: str, plan: Plan, server: str, drop_after: int | None
) -> None:
    """Whatever the headers and whatever the app does: one answer with a valid trace id,
    problem+json for an error raised before a body byte was sent, the app's own status
    and bytes otherwise (a stream that fails mid-way ends, with an error event when it
    is an event stream), the app's iterable closed once, and no context left bound.

    Nothing escapes to the server. An exception from the app iterable's own ``close()``
    comes after the answer: it is recorded as one more event of the request.
    """
    app = ErrtraceWSGIMiddleware(wsgi_app, config=CONFIG)
    seen = Seen()
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/p", "props.plan": plan,
               "props.seen": seen, **inbound}
    with capture_events() as events, default_recursion_limit():
        served = serve(app, environ, server=server, drop_after=drop_after)
    sent = plan.sent_before_failing() if plan.fails else plan.chunks
    if drop_after is not None:
        sent = sent[:drop_after]
    fails = plan.fails and (
        drop_after is None or plan.where != "iter" or plan.at < drop_after
    )
    if not fails:
        plan = Plan(**{**plan.__dict__, "fails": False})
    answered_error = fails and replaceable(server, sent, plan.where, plan.at)
    body_returned = not (fails and plan.where in ("before", "after-start"))
    event_stream = plan.content_type.startswith("text/event-stream") and plan.where != "before"
    if check_cut_short(served, fails and not answered_error and not event_stream, events,
                       plan.code):
        return
    events = closing_failure(events, served, expected=body_returned and plan.close_raises)
    trace_id = served.trace_id()
    assert seen.in_call == [trace_id]  # the app sees this request's context
    if body_returned:
        (body,) = seen.bodies
        assert body.closed == 1
        assert set(body.seen) <= {trace_id}  # bound while the server iterates
    check_answer(served, environ, plan, answered_error, b"".join(sent), events,
                 AppError(plan.code).http_status, plan.code)


# --- errtrace.instrument(Flask) ------------------------------------------------------------


@dataclass
class FlaskPlan:
    """What the view does: ``kind`` "body" (``chunks`` from a generator, failing at
    ``at`` when ``fails``), "raise" (``error``, or a crash) or "abort" (``status``);
    ``close_raises``: a ``call_on_close`` callback of its response raises."""

    kind: str
    status: int
    content_type: str
    chunks: list[bytes]
    fails: bool
    error: str | None
    at: int
    close_raises: bool
    closed: int = 0
    seen: list[str | None] = field(default_factory=list)


@st.composite
def flask_plans(draw: st.DrawFn) -> FlaskPlan:
    chunks = draw(st.lists(st.binary(max_size=20) | st.just(b""), max_size=4))
    kind = draw(st.sampled_from(["body", "body", "raise", "abort"]))
    statuses = (st.sampled_from([400, 401, 403, 404, 405, 409, 413, 422, 429, 451, 500, 501,
                                 502, 503, 504]) if kind == "abort" else st.integers(200, 599))
    return FlaskPlan(
        kind=kind,
        status=draw(statuses),
        content_type=draw(st.sampled_from(["text/plain", "text/event-stream"])),
        chunks=chunks,
        fails=draw(st.booleans()),
        error=draw(st.none() | st.sampled_from(CODE_IDS)),
        at=draw(st.integers(0, len(chunks))),
        close_raises=draw(st.integers(0, 4)) == 0,
    )


@cache
def flask_app() -> Flask:
    app = Flask(__name__)

    @app.route("/p", methods=["GET", "POST", "HEAD"])
    def view() -> Any:
        plan: FlaskPlan = request.environ["props.plan"]
        ctx = errtrace.current()
        plan.seen.append(ctx.trace_id if ctx else None)
        if plan.kind == "abort":
            abort(plan.status)
        if plan.kind == "raise":
            raise RuntimeError(f"token {SECRET}") if plan.error is None else AppError(plan.error)

        def gen() -> Iterator[bytes]:
            for i, chunk in enumerate(plan.chunks):
                if plan.fails and i == plan.at:
                    raise RuntimeError(f"token {SECRET}")
                yield chunk
            if plan.fails and plan.at == len(plan.chunks):
                raise RuntimeError(f"token {SECRET}")

        response = Response(gen(), status=plan.status, content_type=plan.content_type)

        def closed() -> None:
            plan.closed += 1

        def close_failed() -> None:
            raise CloseFailed("close")

        response.call_on_close(closed)
        if plan.close_raises:
            response.call_on_close(close_failed)
        return response

    return errtrace.instrument(app, config=CONFIG)


@given(INBOUND, METHOD, flask_plans(), SERVER)
@example({}, "GET", FlaskPlan("body", 200, "text/plain", [b""], True, None, 1, False), "lazy")
@example({}, "GET", FlaskPlan("body", 200, "text/event-stream", [], True, None, 0, False),
         "refuses")  # Flask's test client: the error event was lost
def test_flask_answers_every_request_and_leaks_nothing(
    inbound: dict[str, str], method: str, plan: FlaskPlan, server: str
) -> None:
    """``errtrace.instrument(flask_app)`` called as a WSGI app: the same guarantees as
    the bare middleware, through Flask's own error handling (its view errors and
    ``abort``) and a streamed body that fails."""
    environ = EnvironBuilder(path="/p", method=method).get_environ()
    environ.update(inbound)
    environ["props.plan"] = plan
    plan.closed, plan.seen = 0, []
    with capture_events() as events, default_recursion_limit():
        served = serve(flask_app(), environ, server=server)
    # werkzeug sends no body for HEAD, 204 and 304: the generator never runs then.
    bodiless = method == "HEAD" or plan.status in (204, 304)
    if plan.kind == "body":
        iterated = not bodiless
        sent = plan.chunks[: plan.at] if plan.fails else plan.chunks
        if not iterated:
            sent = []
        fails = plan.fails and iterated
        answered_error = fails and replaceable(server, sent, "iter", plan.at)
        code = "INTERNAL"
        status = 500
        if check_cut_short(served, fails and not answered_error
                           and not plan.content_type.startswith("text/event-stream"),
                           events, code):
            assert plan.closed == 1
            return
        events = closing_failure(events, served, expected=plan.close_raises)
        assert plan.closed == 1  # the view's response was closed
    else:
        fails = answered_error = True
        sent = []
        assert served.raised is None, served.raised
        if plan.kind == "abort":
            status = plan.status
            codes = [e.code for e in events]
            assert len(codes) == 1 and codes[0] in registry
            code = codes[0]
        else:
            code = plan.error or "INTERNAL"
            status = AppError(code).http_status
    assert plan.seen == [served.trace_id()]  # the view sees this request's context
    outcome = Plan(plan.status, plan.content_type, plan.chunks, fails, None, "iter",
                   plan.at, plan.close_raises)
    check_answer(served, environ, outcome, answered_error, b"".join(sent), events, status,
                 code)


# --- gRPC: the server's inbound metadata ---------------------------------------------------

GRPC_KEY = st.sampled_from([
    "traceparent", "tracestate", "baggage", "x-biz-code", "traceparent", "x-biz-code",
    "x-error-code", "grpc-trace-bin", "traceparent-bin", "x-biz-code-bin", "user-agent",
]) | st.text(max_size=10)
GRPC_TEXT = st.one_of(
    header_value(), st.text(LATIN1, max_size=40),
    repeated(st.sampled_from(["a", "00-", "biz.code=t,", "é"]), 5000),
)


def grpc_text(key: str) -> st.SearchStrategy[str]:
    known = INBOUND_TEXT.get(key)
    return GRPC_TEXT if known is None else known | GRPC_TEXT


@st.composite
def invocation_metadata(draw: st.DrawFn) -> tuple[tuple[str, Any], ...]:
    """Metadata pairs: text values, bytes under ``-bin`` keys (and, from a broken
    peer or proxy, under the others too), repeated keys, huge values."""
    pairs: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(0, 8))):
        key = draw(GRPC_KEY)
        binary = key.endswith("-bin") or draw(st.integers(0, 9)) == 0
        value: Any = draw(st.binary(max_size=60) | repeated(st.just("\x00\xff"), 2000).map(
            str.encode)) if binary else draw(grpc_text(key))
        pairs.append((key, value))
        if draw(st.integers(0, 4)) == 0:  # the same key again
            pairs.append((key, draw(grpc_text(key))))
    return tuple(pairs)


class Aborted(Exception):
    """What the stand-in context's ``abort_with_status`` raises, as grpc's does."""


class ServicerContext:
    """The part of ``grpc.ServicerContext`` the sync server interceptor uses."""

    def __init__(self, metadata: tuple[tuple[str, Any], ...]) -> None:
        self.metadata = metadata
        self.trailing: tuple[tuple[str, Any], ...] = ()
        self.statuses: list[Status] = []

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.metadata

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.trailing

    def set_trailing_metadata(self, metadata: tuple[tuple[str, Any], ...]) -> None:
        self.trailing = tuple(metadata)

    def code(self) -> grpc.StatusCode | None:
        return None

    def is_active(self) -> bool:
        return True

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        # grpc sends the trailing metadata set last with the status.
        self.statuses.append(Status(code, details, self.trailing))
        raise Aborted()


class _Details:
    method = "/props.Svc/Call"


def _metadata_ok(key: str, value: Any) -> bool:
    """Metadata gRPC can send: ``-bin`` keys with bytes, others printable ASCII text."""
    if key.endswith("-bin"):
        return isinstance(value, bytes)
    return isinstance(value, str) and re.fullmatch(r"[\x20-\x7e]*", value) is not None


@given(invocation_metadata(), st.sampled_from(["ok", "crash", "app-error"]),
       st.sampled_from(CODE_IDS))
@example((("x-biz-code", "t-1"), ("x-biz-code", "bad biz"), ("baggage", "biz.code=%0a")),
         "crash", "INTERNAL")
def test_grpc_server_takes_any_metadata_and_answers_with_its_trace_id(
    metadata: tuple[tuple[str, Any], ...], behaviour: str, code: str
) -> None:
    """A handler behind the sync server interceptor, called with any invocation
    metadata: it sees a valid context, the same one the public ``MetadataGetter`` path
    builds, with the business code validated or none; a failed call aborts with one
    rich status that decodes back to the code and this call's trace id, whose every
    trailer gRPC can send; no exception text, and no context, survives the call."""
    interceptor = ServerInterceptor(Runtime(CONFIG))
    seen: list[ErrorContext | None] = []

    def behavior(request: Any, context: Any) -> Any:
        ctx = errtrace.current()
        seen.append(None if ctx is None else copy.copy(ctx))  # as the handler saw it
        if behaviour == "crash":
            raise RuntimeError(f"token {SECRET}")
        if behaviour == "app-error":
            raise AppError(code)
        return b"pong"

    handler = grpc.unary_unary_rpc_method_handler(behavior)
    wrapped = interceptor.intercept_service(lambda _details: handler, _Details())
    context = ServicerContext(metadata)
    with default_recursion_limit():
        if behaviour == "ok":
            assert wrapped.unary_unary(b"ping", context) == b"pong"
        else:
            with pytest.raises(Aborted):
                wrapped.unary_unary(b"ping", context)
    assert errtrace.current() is None
    (ctx,) = seen
    assert ctx is not None
    assert_valid_context(ctx, DEFAULT_SETTINGS)
    public = extract(metadata, metadata_getter, DEFAULT_SETTINGS)
    assert (ctx.remote, ctx.parent_span_id, ctx.trace_flags, ctx.tracestate,
            list(ctx.baggage), ctx.biz_code) == (
        public.remote, public.parent_span_id, public.trace_flags, public.tracestate,
        list(public.baggage), public.biz_code)
    if ctx.remote:
        assert ctx.trace_id == public.trace_id
    if behaviour == "ok":
        assert context.statuses == [] and context.trailing == ()
        return
    (status,) = context.statuses
    expected = "INTERNAL" if behaviour == "crash" else code
    assert status.code is not grpc.StatusCode.OK
    assert all(_metadata_ok(k, v) for k, v in status.trailing_metadata), status
    assert SECRET not in status.details
    assert not any(SECRET.encode() in (v if isinstance(v, bytes) else v.encode())
                   for _, v in status.trailing_metadata)
    trailers = dict(status.trailing_metadata)
    assert trailers["x-trace-id"] == ctx.trace_id
    back = decode_status(status.code, status.details, status.trailing_metadata, CONFIG)
    assert back.code == expected and back.remote is not None
    assert back.remote.trace_id == ctx.trace_id and back.remote.span_id == ctx.span_id
    info = error_details_pb2.ErrorInfo()
    status_pb2.Status.FromString(trailers[DETAILS_KEY]).details[0].Unpack(info)
    assert info.metadata.get("bizCode") == ctx.biz_code or (
        ctx.biz_code is None and "bizCode" not in info.metadata)


@given(invocation_metadata(), st.integers(0, 3), st.none() | st.integers(0, 3),
       st.none() | st.integers(1, 3), st.none() | st.sampled_from(CODE_IDS))
def test_grpc_server_stream_binds_the_context_per_step_and_never_leaks_it(
    metadata: tuple[tuple[str, Any], ...],
    items: int,
    fail_at: int | None,
    stop_after: int | None,
    code: str | None,
) -> None:
    """A response stream behind the sync server interceptor, with any metadata: every
    step of the handler's iterator (and its close) sees the call's context, which is
    never bound between steps or after the call; the items come through as they were;
    a failure before the client went away aborts with the call's trace id, and an
    iterator the server drops is closed."""
    interceptor = ServerInterceptor(Runtime(CONFIG))
    steps: list[str | None] = []
    closes: list[str | None] = []

    def behavior(request: Any, context: Any) -> Iterator[int]:
        def stream() -> Iterator[int]:
            try:
                for i in range(items + 1):
                    ctx = errtrace.current()
                    steps.append(ctx.trace_id if ctx else None)
                    if i == fail_at:
                        raise RuntimeError(f"token {SECRET}") if code is None else AppError(code)
                    if i == items:
                        return
                    yield i
            finally:
                ctx = errtrace.current()
                closes.append(ctx.trace_id if ctx else None)

        return stream()

    handler = grpc.unary_stream_rpc_method_handler(behavior)
    wrapped = interceptor.intercept_service(lambda _details: handler, _Details())
    context = ServicerContext(metadata)
    got: list[int] = []
    aborted = False
    with default_recursion_limit():
        responses = wrapped.unary_stream(b"ping", context)
        assert errtrace.current() is None
        try:
            for item in responses:
                assert errtrace.current() is None, "bound across a yield"
                got.append(item)
                if stop_after is not None and len(got) >= stop_after:
                    break  # the client went away: grpc drops the iterator
        except Aborted:
            aborted = True
        finally:
            responses.close()
    assert errtrace.current() is None
    trace_id = steps[0]
    assert is_id(trace_id, 32) and set(steps) == {trace_id}
    public = extract(metadata, metadata_getter, DEFAULT_SETTINGS)
    if public.remote:
        assert trace_id == public.trace_id
    assert closes == [trace_id]  # closed once, within the call's context
    asked = len(got) + (0 if stop_after is not None and len(got) >= stop_after else 1)
    fails = fail_at is not None and fail_at <= items and fail_at < asked
    assert aborted == fails
    if fails:
        assert got == list(range(fail_at or 0))
        (status,) = context.statuses
        assert dict(status.trailing_metadata)["x-trace-id"] == trace_id
        assert SECRET not in status.details
        back = decode_status(status.code, status.details, status.trailing_metadata, CONFIG)
        assert back.code == (code or "INTERNAL")
    else:
        assert context.statuses == []
        assert got == list(range(items))[:stop_after]


# --- gRPC: the client's decoding of a failed call ---------------------------------------

NON_OK = st.sampled_from([c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
# Text protobuf can carry (valid UTF-8), short, odd or huge.
PB_TEXT = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=40),
    repeated(st.sampled_from(["a", "é", "\n", "😀", "%"]), 3000),
)
ULID = st.from_regex(r"[0-9A-HJKMNP-TV-Z]{26}", fullmatch=True)
INFO_VALUE = st.one_of(
    META_VALUE.map(_scrub), ULID, st.text("0123456789abcdef", min_size=16, max_size=32),
    st.integers(129, 300).map(lambda n: "E" * n),
)
INFO_METADATA = st.dictionaries(META_KEY.map(_scrub), INFO_VALUE, max_size=7)
REASON = st.sampled_from(CODE_IDS) | CODE_LIKE | PB_TEXT
# "Without rich details, the gRPC status decides" (_status.decode_status).
FALLBACK = {"UNAVAILABLE": "UPSTREAM_UNAVAILABLE", "DEADLINE_EXCEEDED": "TIMEOUT",
            "RESOURCE_EXHAUSTED": "UPSTREAM_UNAVAILABLE", "CANCELLED": "CANCELLED"}


@dataclass
class RichStatus:
    """A ``grpc-status-details-bin`` value, and what it was built from."""

    raw: bytes
    whole: bool  # a well-formed Status, not damaged or replaced by random bytes
    has_info: bool  # with an ErrorInfo (a Status without one names no code)
    code: int
    reason: str
    metadata: dict[str, str]
    message: str


@st.composite
def rich_statuses(draw: st.DrawFn, call_code: grpc.StatusCode) -> RichStatus:
    """A ``google.rpc.Status`` built with protobuf: an ``ErrorInfo`` with any reason,
    domain and metadata strings, maybe a ``RetryInfo`` and foreign ``Any`` members,
    carrying the call's code or (a lying peer) another one; or damaged or random bytes."""
    code = call_code.value[0] if draw(st.integers(0, 3)) else draw(st.integers(-3, 40))
    message = draw(PB_TEXT)
    if draw(st.booleans()):
        message = SECRET + message  # a peer's text: never shown to this service's clients
    status = status_pb2.Status(code=code, message=message)
    for _ in range(draw(st.integers(0, 2))):
        status.details.add(
            type_url=draw(st.sampled_from(["x/y", "", "type.googleapis.com/google.rpc.DebugInfo"])),
            value=draw(st.binary(max_size=20)))
    reason = draw(REASON)
    metadata = draw(INFO_METADATA)
    has_info = draw(st.integers(0, 5)) > 0
    if has_info:
        status.details.add().Pack(error_details_pb2.ErrorInfo(
            reason=reason, domain=draw(PB_TEXT), metadata=metadata))
    if draw(st.booleans()):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.seconds = draw(st.integers(-(2**40), 2**40))
        retry.retry_delay.nanos = draw(st.integers(-(10**9) + 1, 10**9 - 1))
        status.details.add().Pack(retry)
    raw = status.SerializeToString()
    shape = draw(st.sampled_from(["whole"] * 5 + ["cut", "random", "big"]))
    if shape == "cut":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif shape == "random":
        raw = draw(st.binary(max_size=120))
    elif shape == "big":  # well-formed, with an unknown field making it too big to read
        raw += b"\x7a" + _varint(MAX_STATUS_BYTES) + b"\x00" * MAX_STATUS_BYTES
    return RichStatus(raw, shape in ("whole", "big"), has_info, code, reason, metadata,
                      message)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes([*out, value])


class FailedCall(grpc.RpcError):
    """A failed call as the channel raises it (``grpc.RpcError`` and ``grpc.Call``)."""

    def __init__(self, code: Any, details: Any, trailing: Any) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> Any:
        if isinstance(self._code, Exception):
            raise self._code
        return self._code

    def details(self) -> Any:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


@st.composite
def failed_calls(draw: st.DrawFn) -> tuple[FailedCall, RichStatus | None, str | None]:
    code = draw(NON_OK)
    rich = draw(rich_statuses(code)) if draw(st.integers(0, 4)) else None
    trailing: list[tuple[str, Any]] = []
    plain_code: str | None = None
    if draw(st.booleans()):  # the plain trailers (kept when a proxy dropped the rich one)
        plain_code = draw(st.sampled_from(CODE_IDS) | CODE_LIKE | PB_TEXT)
        trailing.append(("x-error-code", plain_code))
        if draw(st.booleans()):
            trailing.append(("x-error-event-id", draw(ULID | PB_TEXT)))
    if rich is not None:
        trailing.insert(draw(st.integers(0, len(trailing))), (DETAILS_KEY, rich.raw))
    for _ in range(draw(st.integers(0, 2))):
        trailing.append((draw(GRPC_KEY), draw(st.binary(max_size=20) | PB_TEXT)))
    details = draw(st.none() | PB_TEXT.map(lambda s: SECRET + s))
    return FailedCall(code, details, tuple(trailing)), rich, plain_code


def _trusted(rich: RichStatus | None, call_code: grpc.StatusCode) -> bool:
    """A rich status to believe: sent whole, with the call's own code and a valid id."""
    return (rich is not None and rich.whole and rich.has_info
            and rich.code == call_code.value[0]
            and len(rich.raw) <= MAX_STATUS_BYTES and CODE_ID_RE.match(rich.reason) is not None)


def _parses_as_ours(raw: bytes, call_code: grpc.StatusCode, code: str) -> bool:
    """Damaged bytes that still are a Status of the call's code naming ``code``."""
    try:
        status = status_pb2.Status.FromString(raw)
        infos = [error_details_pb2.ErrorInfo.FromString(d.value) for d in status.details
                 if d.type_url.endswith("/google.rpc.ErrorInfo")]
    except Exception:
        return False
    return status.code == call_code.value[0] and any(i.reason == code for i in infos)


def _bounded_text(value: str | None) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


@given(failed_calls())
@example((FailedCall(grpc.StatusCode.UNAVAILABLE, "x", ((DETAILS_KEY, b"\xff"),)), None, None))
def test_grpc_client_turns_any_failed_call_into_a_bounded_app_error(
    call: tuple[FailedCall, RichStatus | None, str | None],
) -> None:
    """What the client interceptors raise for a failed call: an AppError chained to the
    call, whose code is the peer's only from a whole rich status carrying the call's own
    status code (else the plain ``x-error-code`` trailer, else the fallback the status
    decides), whose remote ids are kept only when well-formed (non-empty, at most 128
    characters), every text bounded, and which this service passes on without the
    peer's text."""
    failed, rich, _ = call
    client = ClientBase(Runtime(CONFIG))
    with default_recursion_limit():
        err = client._translate(failed)
    assert isinstance(err, AppError) and err.__cause__ is failed
    assert_bounded_error(err)
    assert err.http_status >= 400 and err.grpc_status != "OK"
    status = failed.code()
    plain = next((v.strip() for k, v in failed.trailing_metadata()
                  if k == "x-error-code" and isinstance(v, str)), None)
    fallback = plain if plain and CODE_ID_RE.match(plain) else FALLBACK.get(
        status.name, "UPSTREAM_ERROR")
    if _trusted(rich, status):
        assert rich is not None and err.remote is not None
        assert err.code == rich.reason
        for name, key in [("event_id", "eventId"), ("trace_id", "traceId"),
                          ("span_id", "spanId"), ("service", "service")]:
            assert getattr(err.remote, name) == _bounded_text(rich.metadata.get(key)), name
        assert err.remote.message == (rich.message[:2048] or None)
    else:
        assert err.code == fallback or (
            rich is not None and not rich.whole and _parses_as_ours(rich.raw, status, err.code)
        ), (err.code, fallback)
    # Passed on by this service (HTTP and gRPC): nothing of the peer's text goes along.
    ctx = new_root_context()
    http_status, headers, body = ErrorWriter(CONFIG).response(err, ctx, "evt")
    assert SECRET.encode() not in body and 400 <= http_status <= 599
    assert not any(SECRET.encode() in value for _, value in headers)
    answer = error_status(err, ctx, CONFIG)
    assert SECRET not in answer.details
    assert all(_metadata_ok(k, v) for k, v in answer.trailing_metadata), answer


@given(st.sampled_from([grpc.StatusCode.OK, None, 13, "INTERNAL", ValueError("no call")]),
       st.none() | PB_TEXT)
def test_grpc_client_passes_on_what_is_no_failed_status(code: Any, details: str | None) -> None:
    """An RpcError without a failed status (OK, a non-status code, or a ``code()`` that
    raises: not a finished call) is raised as it is, never turned into a made-up error."""
    failed = FailedCall(code, details, ())
    assert ClientBase(Runtime(CONFIG))._translate(failed) is failed
