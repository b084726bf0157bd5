"""Regressions for hostile or broken input found in review: each test is one defect."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from google.rpc import status_pb2
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import errtrace
from errtrace.adapters.httpx import AsyncErrtraceTransport
from errtrace.core.codes import CODE_ID_RE
from errtrace.core.config import Config, ConfigError
from errtrace.core.encoding import error_headers, from_http_response, problem
from errtrace.core.events import events
from errtrace.core.runtime import Runtime
from errtrace.grpc_interceptors._status import DETAILS_KEY, decode_status, error_status

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def upstream(body: dict[str, Any], status: int = 500) -> Starlette:
    async def answer(request: Any) -> JSONResponse:
        return JSONResponse(body, status_code=status)

    return Starlette(routes=[Route("/x", answer)])


def gateway(up: Starlette, **options: Any) -> FastAPI:
    app = errtrace.instrument(FastAPI(), **options)

    @app.get("/call")
    async def call() -> None:
        transport = AsyncErrtraceTransport(httpx.ASGITransport(app=up))
        async with httpx.AsyncClient(transport=transport, base_url="http://up") as c:
            await c.get("/x")

    return app


async def get(app: Any, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await c.get(path)


SECRET_DETAIL = "KeyError: 'db_password=hunter2' at /srv/billing/app.py:42"


async def test_a_downstream_services_text_is_not_passed_on() -> None:
    up = upstream({"code": "INTERNAL", "detail": SECRET_DETAIL})
    r = await get(gateway(up), "/call")
    assert r.status_code == 500 and r.json()["code"] == "INTERNAL"
    assert "hunter2" not in r.text
    debug = await get(gateway(up, debug=True), "/call")
    assert "hunter2" in debug.json()["detail"]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


@pytest.mark.parametrize(
    "raise_",
    [
        lambda: (_ for _ in ()).throw(Unprintable()),
        lambda: (_ for _ in ()).throw(errtrace.AppError("BAD_REQUEST", details={1: "x"})),
    ],
)
def test_wsgi_odd_exceptions_answer_and_leave_no_context(raise_: Any) -> None:
    app = Flask(__name__)

    @app.get("/")
    def index() -> Any:
        next(raise_())

    client = errtrace.instrument(app).test_client()
    r = client.get("/", headers={"x-biz-code": "tenant-1"}, buffered=True)
    assert r.status_code in (400, 500)
    assert r.headers["Content-Type"] == "application/problem+json"
    assert errtrace.current() is None


def test_a_failing_event_listener_changes_nothing() -> None:
    def bad(event: Any) -> None:
        raise ZeroDivisionError("listener bug")

    unsubscribe = events.subscribe(bad)
    try:
        app = Flask(__name__)

        @app.get("/")
        def index() -> Any:
            raise errtrace.AppError("NOT_FOUND")

        r = errtrace.instrument(app).test_client().get("/", buffered=True)
    finally:
        unsubscribe()
    assert r.status_code == 404 and errtrace.current() is None
    assert errtrace.stats()["hook_failures"] == 1


@pytest.mark.parametrize("value", [1e300, 10**400])
def test_huge_retry_after_is_capped(value: float) -> None:
    err = errtrace.AppError("LLM_RATE_LIMITED", details={"retry_after": value})
    assert err.retry_after == 86400.0
    headers = dict(error_headers(err, None, "E", Config()))
    assert headers["Retry-After"] == "86400"
    status = error_status(err, None, Config())  # a Duration in range: no exception
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_non_finite_retry_after_is_ignored() -> None:
    assert errtrace.AppError("RATE_LIMITED", details={"retry_after": math.inf}).retry_after is None
    body = b'{"code": "LLM_RATE_LIMITED", "retry_after": Infinity}'
    assert from_http_response(429, {"content-type": "application/json"}, body) is None
    err = from_http_response(429, {"content-type": "application/json"},
                             b'{"code": "LLM_RATE_LIMITED", "retry_after": 1e400}')
    assert err is None or err.retry_after is None or math.isfinite(err.retry_after)


def test_codes_and_header_names_with_a_final_newline_are_rejected() -> None:
    assert CODE_ID_RE.match("FOO\n") is None
    json_headers = {"content-type": "application/json"}
    assert from_http_response(500, json_headers, b'{"code": "FOO\\n"}') is None
    with pytest.raises(ConfigError):
        Config(trace_id_header="X-Req-Trace\n")
    assert Config.load(env={"ERRTRACE_TRACE_ID_HEADER": "X-Req-Trace\n"}).trace_id_header == (
        "X-Req-Trace"
    )


@pytest.mark.parametrize("odd", ["\u00b2", "\u0663", "1\u00b2"])
def test_non_ascii_digits_never_crash_decoders(odd: str) -> None:
    err = from_http_response(503, {"x-error-code": "UPSTREAM_ERROR", "x-error-level": odd}, b"")
    assert err is not None and err.code == "UPSTREAM_ERROR"
    from errtrace.core.status import parse_retry_after

    assert parse_retry_after(odd) is None
    decoded = decode_status(
        grpc.StatusCode.UNAVAILABLE, "x",
        (("x-error-code", "UPSTREAM_ERROR"), ("x-error-level", odd)), Config(),
    )
    assert decoded.code == "UPSTREAM_ERROR"


def test_corrupt_rich_details_fall_back_to_the_plain_status() -> None:
    rich = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="m")
    bad = rich.details.add()
    bad.type_url = "type.googleapis.com/google.rpc.ErrorInfo"
    bad.value = b"\xff\xff\xff"  # not a message
    err = decode_status(
        grpc.StatusCode.UNAVAILABLE, "m", ((DETAILS_KEY, rich.SerializeToString()),), Config()
    )
    assert err.code == "UPSTREAM_UNAVAILABLE"



def test_a_deeply_nested_caused_by_chain_is_dropped_not_raised() -> None:
    # 2048 characters (within the causedBy bound) of nesting: json.loads raised
    # RecursionError through the client interceptors instead of the remote's error.
    from google.rpc import error_details_pb2

    info = error_details_pb2.ErrorInfo(reason="LLM_RATE_LIMITED", domain="errtrace.dev")
    info.metadata["level"] = "2"
    info.metadata["eventId"] = "01M81D64EECXRR0016YQ4X6310"
    info.metadata["causedBy"] = "[" * 1024 + "]" * 1024
    rich = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="m")
    rich.details.add().Pack(info)
    err = decode_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "m",
        ((DETAILS_KEY, rich.SerializeToString()),), Config(),
    )
    assert err.code == "LLM_RATE_LIMITED"
    assert err.remote is not None and err.remote.event_id == "01M81D64EECXRR0016YQ4X6310"
    assert err.remote.upstream == ()

async def test_httpx_error_response_with_non_ascii_header_is_an_app_error() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 502,
                    "headers": [(b"x-served-by", b"caf\xc3\xa9-node"),
                                (b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"bad gateway"})

    transport = AsyncErrtraceTransport(httpx.ASGITransport(app=app))
    async with httpx.AsyncClient(transport=transport, base_url="http://up") as c:
        with pytest.raises(errtrace.AppError) as info:
            await c.get("/")
    assert info.value.code == "UPSTREAM_ERROR"


def test_event_buffer_size_is_honoured() -> None:
    Runtime(Config(event_buffer_size=5000))
    for _ in range(1500):
        errtrace.report("AI_CACHE_MISS")
    assert len(events.recent()) == 1500


def test_problem_document_never_has_non_json_values() -> None:
    err = errtrace.AppError("BAD_REQUEST", details={"obj": object(), "n": math.nan})
    body = problem(err, None, "E", Config())
    json.dumps(body, default=str)  # serialisable with the encoder's fallback
    assert "obj" in body["details"]


# --- a request value put into an error's own header -------------------------------------

INJECTED = "t1\r\nSet-Cookie: session=attacker"


def _raw_get(url: str, path: str) -> bytes:
    """The bytes of a response to a plain GET, as a client on the wire sees them."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _quota_error() -> errtrace.AppError:
    return errtrace.AppError(
        "LLM_RATE_LIMITED", headers={"X-Quota-Tenant": INJECTED, "X-Quota-Left": "0"}
    )


def test_a_header_value_with_cr_lf_is_left_out_of_a_wsgi_error_answer() -> None:
    # A plain WSGI app on werkzeug's server, which writes header lines as given.
    import threading

    from werkzeug.serving import make_server

    from errtrace.middleware.wsgi import ErrtraceWSGIMiddleware

    def app(environ: Any, start_response: Any) -> Any:
        raise _quota_error()

    server = make_server("127.0.0.1", 0, ErrtraceWSGIMiddleware(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        raw = _raw_get(f"http://127.0.0.1:{server.server_port}", "/")
    finally:
        server.shutdown()
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 429")
    assert b"set-cookie" not in head and b"x-quota-tenant" not in head
    assert b"x-quota-left: 0" in head  # the error's other headers are still sent


def test_a_header_value_with_cr_lf_is_left_out_of_an_asgi_error_answer() -> None:
    from .conftest import uvicorn_server

    app = errtrace.instrument(FastAPI())

    @app.get("/q")
    async def q() -> None:
        raise _quota_error()

    with uvicorn_server(app) as url:
        raw = _raw_get(url, "/q")  # before: uvicorn closed the connection, no answer
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 429")
    assert b"set-cookie" not in head and b"x-quota-tenant" not in head
    assert b"x-quota-left: 0" in head


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-A", "a\nb"), ("X-A", "a\rb"), ("X-A", "a\x00b"), ("X-A", "a\x7fb"),
     ("X A", "v"), ("X-A:", "v"), ("X-A\r\nX-B", "v"), ("X-A", ["ok", "b\r\nX-C: 1"])],
)
def test_header_lines_no_response_can_carry_are_left_out(name: str, value: Any) -> None:
    err = errtrace.AppError("LLM_RATE_LIMITED", headers={name: value, "X-Kept": "a\tb"})
    headers = error_headers(err, None, "E", Config())
    sent = [(n, v) for n, v in headers if n.lower() not in ("x-error-code", "x-error-level",
                                                            "x-error-event-id", "retry-after")]
    assert all("\r" not in v and "\n" not in v and "\x00" not in v for _, v in sent)
    assert ("X-Kept", "a\tb") in sent  # a tab is allowed in a value
    assert all(n in ("X-Kept", "X-A") for n, _ in sent)


async def test_a_request_path_or_message_cannot_forge_a_log_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    app = errtrace.instrument(FastAPI())

    @app.get("/items/{item}")
    async def item(item: str) -> None:
        raise errtrace.AppError("NOT_FOUND", f"item {item} not found")

    @app.get("/boom/{item}")
    async def boom(item: str) -> None:
        raise RuntimeError(item)

    forged = "zz%0d%0a2026-01-01 CRITICAL errtrace: admin login OK"
    caplog.set_level(logging.INFO, logger="errtrace")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for path in (f"/items/{forged}", f"/boom/{forged}", f"/nothing/{forged}"):
            await c.get(path)
    messages = [r.getMessage() for r in caplog.records if r.name == "errtrace"]
    assert len(messages) == 3
    for message in messages:
        assert "\r" not in message and "\n" not in message
        assert "zz\\r\\n2026-01-01 CRITICAL" in message  # escaped, still readable


def test_codes_from_other_services_cannot_grow_the_counters_without_bound() -> None:
    from errtrace.core.stats import MAX_COUNTERS

    runtime = Runtime(Config())
    for n in range(MAX_COUNTERS + 500):
        err = from_http_response(502, {"x-error-code": f"E_{n:X}"}, b"")
        assert err is not None
        runtime.record(err, None, transport="http")
    counters = errtrace.stats()
    assert len(counters) <= MAX_COUNTERS + 1
    assert counters["errors.E_0"] == 1  # the names counted before the limit go on
    assert counters["counters_over_limit"] >= 500
