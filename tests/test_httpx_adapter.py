"""The httpx adapter: context into outgoing calls, error responses back into AppError.

Apps are real: FastAPI apps instrumented with ``errtrace.instrument`` (so problem+json
comes from errtrace itself) and a plain Starlette app for foreign error shapes, reached
through ``httpx.ASGITransport`` (async) or a uvicorn server on 127.0.0.1 (sync, and
connection failures / timeouts, which need a socket). A raw socket server sends bodies
that stall or are cut short after the headers.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

import errtrace
from errtrace.adapters import httpx as eh
from errtrace.core import runtime as runtime_module
from errtrace.core.encoding import caused_by, from_http_response
from errtrace.core.propagation import parse_traceparent

from .conftest import TRACE_ID, TRACEPARENT

INBOUND_SPAN = TRACEPARENT.split("-")[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- apps -----------------------------------------------------------------------------


def _instrumented(app: FastAPI, name: str) -> FastAPI:
    # instrument() makes the first configured app the process default; module-scoped
    # apps must not leave that behind for other test modules.
    saved = runtime_module._default
    try:
        return errtrace.instrument(app, service_name=name)
    finally:
        runtime_module.set_default_runtime(saved)


def make_down() -> FastAPI:
    """The downstream service: echoes what it received, fails with a code, or stalls."""
    app = FastAPI()

    @app.get("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        ctx = errtrace.current()
        assert ctx is not None
        names = ("traceparent", "tracestate", "baggage", "x-biz-code")
        return {"headers": {n: request.headers.get(n) for n in names}, "ctx": ctx.as_dict()}

    @app.get("/fail")
    async def fail() -> None:
        raise errtrace.AppError("LLM_RATE_LIMITED", "slow down", details={"retry_after": 3})

    @app.get("/huge")
    async def huge() -> PlainTextResponse:
        return PlainTextResponse("x" * (3 * 1024 * 1024), status_code=500)

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await anyio.sleep(1.5)
        return {"late": "yes"}

    @app.get("/moved")
    async def moved() -> RedirectResponse:
        return RedirectResponse("/fail", status_code=302)

    return _instrumented(app, "down")


def make_mid_async(down: Callable[[], httpx.AsyncClient]) -> FastAPI:
    """The middle service (async endpoints): calls the downstream with the adapter."""
    app = FastAPI()

    @app.get("/fanout")
    async def fanout() -> dict[str, Any]:
        async with down() as client:
            calls = [(await client.get("/echo")).json() for _ in range(2)]
        ctx = errtrace.current()
        assert ctx is not None
        return {"ctx": ctx.as_dict(), "outgoing": list(ctx.outgoing_spans), "calls": calls}

    @app.get("/chain")
    async def chain() -> None:
        async with down() as client:
            await client.get("/fail")  # the AppError escapes: errtrace answers for us

    @app.get("/explicit")
    async def explicit() -> dict[str, Any]:
        stale = "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01"
        async with down() as client:
            response = await client.get(
                "/echo", headers={"traceparent": stale, "X-Biz-Code": "tenant-7"}
            )
        return response.json()  # type: ignore[no-any-return]

    return _instrumented(app, "mid")


def make_mid_sync(down: Callable[[], httpx.Client]) -> FastAPI:
    """The middle service with sync endpoints (run in a threadpool) and a sync client."""
    app = FastAPI()

    @app.get("/fanout")
    def fanout() -> dict[str, Any]:
        with down() as client:
            calls = [client.get("/echo").json() for _ in range(2)]
        ctx = errtrace.current()
        assert ctx is not None
        return {"ctx": ctx.as_dict(), "outgoing": list(ctx.outgoing_spans), "calls": calls}

    @app.get("/chain")
    def chain() -> None:
        with down() as client:
            client.get("/fail")

    return _instrumented(app, "mid")


OPENAI_429 = (
    b'{"error": {"message": "Rate limit reached for gpt-4o in organization org-x on tokens '
    b"per min (TPM): Limit 30000, Used 29937, Requested 385. Please try again in 644ms.\", "
    b'"type": "tokens", "param": null, "code": "rate_limit_exceeded"}}'
)


def make_plain() -> Starlette:
    """A service that knows nothing of errtrace, answering errors in foreign shapes."""

    async def top(_: Any) -> Response:
        body = {"code": "X_CUSTOM", "message": "custom failure", "level": 3, "event_id": "evt-top"}
        return JSONResponse(body, status_code=409)

    async def nested(_: Any) -> Response:
        return JSONResponse(
            {"error": {"code": "X_NESTED", "message": "nested failure"}},
            status_code=422, headers={"X-Error-Event-ID": "evt-nested"},
        )

    async def header(_: Any) -> Response:
        return PlainTextResponse("locked", status_code=423, headers={
            "X-Error-Code": "INVENTORY_LOCKED", "X-Error-Level": "3", "X-Error-Event-ID": "evt-hdr",
        })

    async def busy(_: Any) -> Response:
        return Response(status_code=503, headers={"Retry-After": "7"})

    async def limited(_: Any) -> Response:
        later = datetime.now(timezone.utc) + timedelta(seconds=30)
        retry = format_datetime(later, usegmt=True)
        return Response(status_code=429, headers={"Retry-After": retry})

    async def text500(_: Any) -> Response:
        return PlainTextResponse("Traceback (most recent call last): boom", status_code=500)

    async def status(request: Any) -> Response:
        return Response(status_code=int(request.path_params["code"]))

    async def huge(_: Any) -> Response:
        return PlainTextResponse("x" * (3 * 1024 * 1024), status_code=500)

    async def echo503(request: Any) -> Response:
        return JSONResponse({"got": request.headers.get("traceparent")}, status_code=503)

    async def gzipped(_: Any) -> Response:
        body = gzip.compress(b'{"code": "X_ZIPPED", "event_id": "evt-gz"}')
        return Response(body, status_code=500, media_type="application/json",
                        headers={"Content-Encoding": "gzip"})

    async def completions(_: Any) -> Response:
        return Response(OPENAI_429, status_code=429, media_type="application/json")

    async def moved(_: Any) -> Response:
        return RedirectResponse("/top", status_code=302)

    return Starlette(routes=[
        Route("/top", top), Route("/nested", nested), Route("/header", header),
        Route("/busy", busy), Route("/limited", limited), Route("/text500", text500),
        Route("/status/{code:int}", status), Route("/huge", huge), Route("/echo503", echo503),
        Route("/gzipped", gzipped), Route("/moved", moved),
        Route("/v1/chat/completions", completions, methods=["POST"]),
    ])


# --- a real server --------------------------------------------------------------------


class Server:
    """uvicorn on 127.0.0.1, an OS-chosen port, in a thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def down_url() -> Iterator[str]:
    with Server(make_down()) as url:
        yield url


@pytest.fixture(scope="module")
def mid_url(down_url: str) -> Iterator[str]:
    with Server(make_mid_sync(lambda: eh.client(base_url=down_url))) as url:
        yield url


@pytest.fixture
def closed_port_url() -> str:
    # Bind, read the port, close: nothing listens there any more (connection refused).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def asgi_client(app: Any, base_url: str, **options: Any) -> httpx.AsyncClient:
    return eh.async_client(transport=httpx.ASGITransport(app=app), base_url=base_url, **options)


@pytest.fixture
def down_app() -> FastAPI:
    return make_down()


@pytest.fixture
def mid_app(down_app: FastAPI) -> FastAPI:
    return make_mid_async(lambda: asgi_client(down_app, "http://down"))


@pytest.fixture
async def plain() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(make_plain(), "http://plain") as client:
        yield client


# --- context injection ----------------------------------------------------------------


def assert_fanout(result: dict[str, Any]) -> None:
    mid = result["ctx"]
    assert mid["trace_id"] == TRACE_ID
    assert mid["parent_span_id"] == INBOUND_SPAN
    children = []
    for call in result["calls"]:
        sent = parse_traceparent(call["headers"]["traceparent"])
        assert sent is not None
        assert sent.trace_id == TRACE_ID  # the same trace continues downstream
        assert call["ctx"]["trace_id"] == TRACE_ID
        assert call["ctx"]["parent_span_id"] == sent.parent_id  # down's parent is our child span
        children.append(sent.parent_id)
        assert "biz.code=tenant-42" in call["headers"]["baggage"]
        assert "team=search" in call["headers"]["baggage"]
        assert call["headers"]["x-biz-code"] == "tenant-42"
        assert call["ctx"]["biz_code"] == "tenant-42"
    # A fresh child span per call, each a child of mid's own span (recorded on its context).
    assert len(set(children)) == 2
    assert mid["span_id"] not in children
    assert result["outgoing"] == children


INBOUND = {"traceparent": TRACEPARENT, "baggage": "team=search", "X-Biz-Code": "tenant-42"}


@pytest.mark.anyio
async def test_async_calls_continue_the_trace_with_a_fresh_child_span_each(
    mid_app: FastAPI,
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mid_app), base_url="http://mid"
    ) as client:
        response = await client.get("/fanout", headers=INBOUND)
    assert response.status_code == 200
    assert_fanout(response.json())


def test_sync_calls_continue_the_trace_over_real_sockets(mid_url: str) -> None:
    response = httpx.get(f"{mid_url}/fanout", headers=INBOUND, timeout=10)
    assert response.status_code == 200
    assert_fanout(response.json())


@pytest.mark.anyio
async def test_outside_a_request_each_call_starts_a_new_trace(down_app: FastAPI) -> None:
    assert errtrace.current() is None
    async with asgi_client(down_app, "http://down") as client:
        first = (await client.get("/echo")).json()
        second = (await client.get("/echo")).json()
    sent = [parse_traceparent(c["headers"]["traceparent"]) for c in (first, second)]
    assert sent[0] is not None and sent[1] is not None
    assert sent[0].trace_id != sent[1].trace_id
    assert first["ctx"]["trace_id"] == sent[0].trace_id  # down continued what we sent
    assert first["headers"]["x-biz-code"] is None
    assert first["headers"]["baggage"] is None


def test_sync_outside_a_request_starts_a_new_trace(down_url: str) -> None:
    with eh.client(base_url=down_url) as client:
        echo = client.get("/echo").json()
    sent = parse_traceparent(echo["headers"]["traceparent"])
    assert sent is not None
    assert echo["ctx"]["trace_id"] == sent.trace_id
    assert echo["ctx"]["parent_span_id"] == sent.parent_id


@pytest.mark.anyio
async def test_traceparent_is_errtraces_but_an_explicit_biz_code_is_kept(
    mid_app: FastAPI,
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mid_app), base_url="http://mid"
    ) as client:
        echo = (await client.get("/explicit", headers=INBOUND)).json()
    # A copied or stale traceparent would break the trace: errtrace's replaces it.
    assert echo["ctx"]["trace_id"] == TRACE_ID
    # The caller chose the tenant for this call on purpose: its header is kept.
    assert echo["headers"]["x-biz-code"] == "tenant-7"
    assert echo["ctx"]["biz_code"] == "tenant-7"


def make_gateway(down: Callable[[], httpx.AsyncClient]) -> FastAPI:
    """A gateway that forwards the inbound trace headers as they came (a common shortcut)."""
    app = FastAPI()

    @app.get("/forward")
    async def forward(request: Request) -> dict[str, Any]:
        names = ("traceparent", "tracestate")
        copied = {n: request.headers[n] for n in names if n in request.headers}
        async with down() as client:
            return (await client.get("/echo", headers=copied)).json()  # type: ignore[no-any-return]

    return _instrumented(app, "gateway")


@pytest.mark.anyio
async def test_a_forwarded_tracestate_never_rides_with_a_new_traceparent(
    down_app: FastAPI,
) -> None:
    gateway = make_gateway(lambda: asgi_client(down_app, "http://down"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://gateway"
    ) as client:
        # An all-zero trace id is invalid: the gateway starts a new trace and, per W3C,
        # discards the tracestate that came with the bad traceparent.
        invalid = "00-00000000000000000000000000000000-b7ad6b7169203331-01"
        stale = (await client.get(
            "/forward", headers={"traceparent": invalid, "tracestate": "vendor=stale"}
        )).json()
        # A valid pair is continued: the tracestate sent on is the context's own.
        kept = (await client.get(
            "/forward", headers={"traceparent": TRACEPARENT, "tracestate": "vendor=kept"}
        )).json()
    sent = parse_traceparent(stale["headers"]["traceparent"])
    assert sent is not None and sent.trace_id != "0" * 32
    assert stale["headers"]["tracestate"] is None
    assert kept["ctx"]["trace_id"] == TRACE_ID
    assert kept["headers"]["tracestate"] == "vendor=kept"


def test_a_callers_tracestate_is_dropped_outside_a_request(down_url: str) -> None:
    with eh.client(base_url=down_url) as client:
        echo = client.get("/echo", headers={"tracestate": "vendor=stale"}).json()
    assert parse_traceparent(echo["headers"]["traceparent"]) is not None
    assert echo["headers"]["tracestate"] is None


# --- remote errors --------------------------------------------------------------------


def assert_chain(err: errtrace.AppError, down_event_id: str) -> None:
    assert isinstance(err, errtrace.TransientError)
    assert err.code == "LLM_RATE_LIMITED"
    assert err.level == errtrace.Level.SEVERE
    # Each hop keeps the text of the hop below for itself (err.remote.message) and sends
    # on only its code's hint: the bottom's own words do not travel two hops.
    assert err.message is None
    assert err.remote is not None
    assert err.remote.message == errtrace.registry.get("LLM_RATE_LIMITED").hint
    assert err.retry_after == 3.0
    assert err.details["upstream_status"] == 429
    status_error = err.__cause__
    assert isinstance(status_error, httpx.HTTPStatusError)
    response = status_error.response
    assert response.is_closed
    assert response.status_code == 429
    # mid's own event, read from its response, and down's event behind it.
    assert err.remote is not None
    assert err.remote.event_id == response.headers["x-error-event-id"]
    assert err.remote.event_id == response.json()["event_id"]
    chain = caused_by(err)
    assert [link["event_id"] for link in chain] == [err.remote.event_id, down_event_id]
    assert all(link["code"] == "LLM_RATE_LIMITED" for link in chain)


@pytest.mark.anyio
async def test_async_remote_code_level_event_and_chain_cross_two_hops(mid_app: FastAPI) -> None:
    with errtrace.testing.capture_events() as events, pytest.raises(errtrace.AppError) as info:
        async with asgi_client(mid_app, "http://mid") as client:
            await client.get("/chain")
    down_event = next(e for e in events if e.route == "/fail")
    assert_chain(info.value, down_event.event_id)
    assert caused_by(info.value)[0]["service"] == "mid"  # the host names the peer


def test_sync_remote_code_level_event_and_chain_over_real_sockets(mid_url: str) -> None:
    with (
        errtrace.testing.capture_events() as events,
        pytest.raises(errtrace.AppError) as info,
        eh.client(base_url=mid_url, timeout=10, service="mid") as client,
    ):
        client.get("/chain")
    down_event = next(e for e in events if e.route == "/fail")
    assert_chain(info.value, down_event.event_id)
    assert caused_by(info.value)[0]["service"] == "mid"


def raise_for_status(response: httpx.Response) -> None:
    response.raise_for_status()


async def araise_for_status(response: httpx.Response) -> None:
    response.raise_for_status()


def test_sync_raise_for_status_hook_keeps_the_remote_code(mid_url: str) -> None:
    hooks = {"response": [raise_for_status]}
    with (
        errtrace.testing.capture_events() as events,
        pytest.raises(errtrace.AppError) as info,
        eh.client(base_url=mid_url, timeout=10, service="mid", event_hooks=hooks) as client,
    ):
        client.get("/chain")
    down_event = next(e for e in events if e.route == "/fail")
    assert_chain(info.value, down_event.event_id)


@pytest.mark.anyio
async def test_async_raise_for_status_hook_keeps_the_remote_code(down_app: FastAPI) -> None:
    # The middle service's client checks every response in a hook: its caller must
    # still see the downstream's code, not a 500 INTERNAL.
    hooks = {"response": [araise_for_status]}
    mid = make_mid_async(lambda: asgi_client(down_app, "http://down", event_hooks=hooks))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mid), base_url="http://mid"
    ) as client:
        response = await client.get("/chain")
    assert response.status_code == 429
    assert response.headers["x-error-code"] == "LLM_RATE_LIMITED"
    assert response.json()["code"] == "LLM_RATE_LIMITED"
    async with asgi_client(mid, "http://mid", event_hooks=hooks) as client:
        with errtrace.testing.capture_events() as events, pytest.raises(errtrace.AppError) as info:
            await client.get("/chain")
    down_event = next(e for e in events if e.route == "/fail")
    assert_chain(info.value, down_event.event_id)


def assert_like_raise_for_status(err: errtrace.AppError, final_path: str) -> None:
    cause = err.__cause__
    assert isinstance(cause, httpx.HTTPStatusError)
    response = cause.response
    assert [r.status_code for r in response.history] == [302]
    assert response.request.url.path == final_path
    assert isinstance(response.elapsed, timedelta)


def test_sync_status_error_after_a_redirect_keeps_history_and_elapsed(down_url: str) -> None:
    with (
        httpx.Client(base_url=down_url, follow_redirects=True) as plain_client,
        pytest.raises(httpx.HTTPStatusError) as plain_info,
    ):
        plain_client.get("/moved").raise_for_status()
    assert len(plain_info.value.response.history) == 1  # the reference: plain httpx
    with (
        eh.client(base_url=down_url, follow_redirects=True, timeout=10) as client,
        pytest.raises(errtrace.AppError) as info,
    ):
        client.get("/moved")
    assert info.value.code == "LLM_RATE_LIMITED"
    assert_like_raise_for_status(info.value, "/fail")


@pytest.mark.anyio
async def test_async_status_error_after_a_redirect_keeps_history_and_elapsed(
    plain: httpx.AsyncClient,
) -> None:
    with pytest.raises(errtrace.AppError) as info:
        await plain.get("/moved", follow_redirects=True)
    assert info.value.code == "X_CUSTOM"
    assert_like_raise_for_status(info.value, "/top")


def test_a_transport_by_hand_gives_its_status_error_an_elapsed_time(down_url: str) -> None:
    transport = eh.ErrtraceTransport()
    with (
        httpx.Client(base_url=down_url, transport=transport) as client,
        pytest.raises(errtrace.AppError) as info,
    ):
        client.get("/fail")
    cause = info.value.__cause__
    assert isinstance(cause, httpx.HTTPStatusError)
    assert isinstance(cause.response.elapsed, timedelta)
    assert cause.response.json()["code"] == "LLM_RATE_LIMITED"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "code", "level", "event_id", "status"),
    [
        ("/top", "X_CUSTOM", 3, "evt-top", 409),  # JSON with a top-level code
        ("/nested", "X_NESTED", 2, "evt-nested", 422),  # {"error": {"code": ...}}
        ("/header", "INVENTORY_LOCKED", 3, "evt-hdr", 423),  # X-Error-Code only
    ],
)
async def test_foreign_error_shapes_keep_the_remote_code(
    plain: httpx.AsyncClient, path: str, code: str, level: int, event_id: str, status: int
) -> None:
    with pytest.raises(errtrace.AppError) as info:
        await plain.get(path)
    err = info.value
    assert err.code == code
    assert int(err.level) == level
    assert err.remote is not None and err.remote.event_id == event_id
    assert err.http_status == status
    assert err.details["upstream_status"] == status
    assert caused_by(err)[0] == {"code": code, "event_id": event_id, "service": "plain"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "code", "status"),
    [
        ("/text500", "UPSTREAM_ERROR", 500),
        ("/status/404", "UPSTREAM_ERROR", 404),
        ("/status/502", "UPSTREAM_ERROR", 502),
        ("/status/504", "TIMEOUT", 504),
        ("/status/408", "TIMEOUT", 408),
        ("/status/503", "UPSTREAM_UNAVAILABLE", 503),
    ],
)
async def test_uncoded_responses_map_by_status(
    plain: httpx.AsyncClient, path: str, code: str, status: int
) -> None:
    with pytest.raises(errtrace.AppError) as info:
        await plain.get(path)
    err = info.value
    assert err.code == code
    assert err.remote is None
    assert err.details == {"upstream_status": status}
    assert "boom" not in str(err) and err.message is None  # foreign text is not our message
    assert isinstance(err.__cause__, httpx.HTTPStatusError)


@pytest.mark.anyio
async def test_bare_503_keeps_retry_after_and_is_retryable(plain: httpx.AsyncClient) -> None:
    with pytest.raises(errtrace.TransientError) as info:
        await plain.get("/busy")
    assert info.value.code == "UPSTREAM_UNAVAILABLE"
    assert info.value.retryable
    assert info.value.details == {"upstream_status": 503, "retry_after": 7.0}


@pytest.mark.anyio
async def test_429_retry_after_as_an_http_date(plain: httpx.AsyncClient) -> None:
    with pytest.raises(errtrace.AppError) as info:
        await plain.get("/limited")
    assert info.value.code == "UPSTREAM_UNAVAILABLE"
    assert info.value.retry_after is not None
    assert 25 <= info.value.retry_after <= 30


@pytest.mark.anyio
async def test_an_error_body_is_read_up_to_1_mib(plain: httpx.AsyncClient) -> None:
    with pytest.raises(errtrace.AppError) as info:
        await plain.get("/huge")
    cause = info.value.__cause__
    assert isinstance(cause, httpx.HTTPStatusError)
    assert cause.response.is_closed
    assert len(cause.response.content) == eh.MAX_ERROR_BODY


@pytest.mark.anyio
async def test_a_compressed_error_body_is_decoded(plain: httpx.AsyncClient) -> None:
    with pytest.raises(errtrace.AppError) as info:
        await plain.get("/gzipped")
    assert info.value.code == "X_ZIPPED"
    cause = info.value.__cause__
    assert isinstance(cause, httpx.HTTPStatusError)
    # The copy holds the decoded body, so it must not claim to be gzip any more.
    assert "content-encoding" not in cause.response.headers
    assert cause.response.json()["event_id"] == "evt-gz"


# --- auth flows that answer a 401 challenge ------------------------------------------

DIGEST_REALM = "errtrace-tests"
DIGEST_NONCE = "5f1d0c6e9a7b4e21b3c8d7a60f2e9b14"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def make_digest_protected() -> Starlette:
    """A service behind HTTP Digest auth (RFC 7616, MD5, qop=auth) for alice / s3cret."""

    def authorized(request: Any) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Digest "):
            return False
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header[len("Digest "):]))
        try:
            ha1 = _md5(f"alice:{DIGEST_REALM}:s3cret")
            ha2 = _md5(f"{request.method}:{fields['uri']}")
            expected = _md5(
                f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}"
            )
        except KeyError:
            return False
        return (fields.get("username"), fields.get("response")) == ("alice", expected)

    async def secret(request: Any) -> Response:
        if authorized(request):
            return JSONResponse({"hello": "alice"})
        challenge = (
            f'Digest realm="{DIGEST_REALM}", qop="auth", nonce="{DIGEST_NONCE}", algorithm=MD5'
        )
        return PlainTextResponse("who are you?", status_code=401,
                                 headers={"WWW-Authenticate": challenge})

    return Starlette(routes=[Route("/secret", secret)])


@pytest.fixture(scope="module")
def digest_url() -> Iterator[str]:
    with Server(make_digest_protected()) as url:
        yield url


def assert_unauthenticated(err: errtrace.AppError) -> None:
    assert err.code == "UPSTREAM_ERROR" and err.details["upstream_status"] == 401
    cause = err.__cause__
    assert isinstance(cause, httpx.HTTPStatusError)
    assert cause.response.status_code == 401 and cause.response.text == "who are you?"
    assert not any(key.startswith("errtrace") for key in cause.response.extensions)


@pytest.mark.anyio
async def test_async_digest_auth_answers_the_challenge_and_only_a_final_error_raises() -> None:
    app = make_digest_protected()
    async with asgi_client(app, "http://secure", auth=httpx.DigestAuth("alice", "s3cret")) as c:
        response = await c.get("/secret")
        assert response.status_code == 200 and response.json() == {"hello": "alice"}
    async with asgi_client(app, "http://secure", auth=httpx.DigestAuth("alice", "nope")) as c:
        with pytest.raises(errtrace.AppError) as info:
            await c.get("/secret")
    assert_unauthenticated(info.value)


def test_sync_digest_auth_over_real_sockets(digest_url: str) -> None:
    with eh.client(base_url=digest_url, auth=httpx.DigestAuth("alice", "s3cret")) as c:
        assert c.get("/secret").json() == {"hello": "alice"}
        with pytest.raises(errtrace.AppError) as info:
            c.get("/secret", auth=httpx.DigestAuth("alice", "nope"))
        assert_unauthenticated(info.value)
        # The streaming form raises the same way, and the pool is not left holding it.
        with pytest.raises(errtrace.AppError), c.stream("GET", "/secret", auth=None):
            pass


def test_a_transport_put_on_a_plain_client_by_hand_raises_before_the_auth_flow(
    digest_url: str,
) -> None:
    # The documented limit of the by-hand form: the challenge itself raises.
    transport = eh.ErrtraceTransport()
    auth = httpx.DigestAuth("alice", "s3cret")
    with (
        httpx.Client(base_url=digest_url, transport=transport, auth=auth) as c,
        pytest.raises(errtrace.AppError) as info,
    ):
        c.get("/secret")
    assert_unauthenticated(info.value)


@pytest.mark.anyio
async def test_raise_errors_false_returns_the_response_untouched() -> None:
    async with asgi_client(make_plain(), "http://plain", raise_errors=False) as client:
        response = await client.get("/echo503")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert parse_traceparent(response.json()["got"]) is not None  # still injected
        err = eh.error_from_response(response)
    assert err.code == "UPSTREAM_UNAVAILABLE"
    assert err.details == {"upstream_status": 503}


def test_error_responses_give_their_connection_back(down_url: str) -> None:
    # One connection in the pool: an error response left open would starve the next call.
    limits = httpx.Limits(max_connections=1)
    with eh.client(base_url=down_url, limits=limits, timeout=2) as client:
        for path in ("/fail", "/huge", "/huge", "/fail"):
            with pytest.raises(errtrace.AppError) as info:
                client.get(path)
            assert info.value.code in ("LLM_RATE_LIMITED", "UPSTREAM_ERROR")


@pytest.mark.anyio
async def test_async_error_responses_give_their_connection_back(down_url: str) -> None:
    limits = httpx.Limits(max_connections=1)
    async with eh.async_client(base_url=down_url, limits=limits, timeout=2) as client:
        for path in ("/fail", "/huge", "/huge", "/fail"):
            with pytest.raises(errtrace.AppError) as info:
                await client.get(path)
            assert info.value.code in ("LLM_RATE_LIMITED", "UPSTREAM_ERROR")


def test_a_streamed_answer_closed_unread_gives_its_connection_back(down_url: str) -> None:
    # The body wrapper must pass close() on, or the pool's only connection stays taken.
    limits = httpx.Limits(max_connections=1)
    timeout = httpx.Timeout(2, pool=0.5)
    with eh.client(base_url=down_url, limits=limits, timeout=timeout) as client:
        for _ in range(3):
            with client.stream("GET", "/echo") as response:
                assert response.status_code == 200
        assert client.get("/echo").json()["ctx"]["trace_id"]


@pytest.mark.anyio
async def test_async_streamed_answer_closed_unread_gives_its_connection_back(
    down_url: str,
) -> None:
    limits = httpx.Limits(max_connections=1)
    timeout = httpx.Timeout(2, pool=0.5)
    async with eh.async_client(base_url=down_url, limits=limits, timeout=timeout) as client:
        for _ in range(3):
            async with client.stream("GET", "/echo") as response:
                assert response.status_code == 200
        assert (await client.get("/echo")).json()["ctx"]["trace_id"]

def test_error_from_response_with_a_plain_client(down_url: str) -> None:
    with httpx.Client(base_url=down_url) as client:
        response = client.get("/fail")
    err = eh.error_from_response(response, service="down")
    assert err.code == "LLM_RATE_LIMITED"
    assert err.remote is not None
    assert err.remote.event_id == response.headers["x-error-event-id"]
    assert caused_by(err)[0]["service"] == "down"


# --- LLM providers --------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_llm_provider_host_is_classified() -> None:
    pytest.importorskip("errtrace.core.rewrite")
    async with asgi_client(make_plain(), "https://api.openai.com") as client:
        with pytest.raises(errtrace.AppError) as info:
            await client.post("/v1/chat/completions", json={})
    err = info.value
    assert err.code == "LLM_RATE_LIMITED"
    assert err.retry_after == pytest.approx(0.644)
    assert err.details["upstream_status"] == 429
    assert "Rate limit reached" in err.details["_provider_text"]  # private: events only


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("base_url", "llm_provider", "code"),
    [
        ("http://internal", None, "UPSTREAM_UNAVAILABLE"),  # not a provider host
        ("https://api.openai.com", False, "UPSTREAM_UNAVAILABLE"),  # classification off
        ("http://vllm.internal:8000", "vllm", "LLM_RATE_LIMITED"),  # forced for a self-host
    ],
)
async def test_llm_classification_follows_the_host_or_the_option(
    base_url: str, llm_provider: bool | str | None, code: str
) -> None:
    if code.startswith("LLM_"):
        pytest.importorskip("errtrace.core.rewrite")
    async with asgi_client(make_plain(), base_url, llm_provider=llm_provider) as client:
        with pytest.raises(errtrace.AppError) as info:
            await client.post("/v1/chat/completions", json={})
    assert info.value.code == code


@pytest.mark.parametrize(
    ("url", "provider"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://my-res.openai.azure.com/openai", "azure"),
        ("https://us-central1-aiplatform.googleapis.com/v1", "vertex"),
        ("https://bedrock-runtime.eu-west-1.amazonaws.com/model", "bedrock"),
        ("http://127.0.0.1:11434/api/chat", "ollama"),
        ("https://openai.com.example.org/", None),
        ("http://billing.internal/", None),
    ],
)
def test_llm_provider_hosts(url: str, provider: str | None) -> None:
    assert eh.llm_provider_for(httpx.URL(url)) == provider


# --- transport failures ---------------------------------------------------------------


def test_sync_connection_refused_is_upstream_unavailable(closed_port_url: str) -> None:
    with eh.client(timeout=5) as client, pytest.raises(errtrace.AppError) as info:
        client.get(f"{closed_port_url}/x")
    assert info.value.code == "UPSTREAM_UNAVAILABLE"
    assert info.value.retryable
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert info.value.__cause__.request.url.path == "/x"


@pytest.mark.anyio
async def test_async_connection_refused_is_upstream_unavailable(closed_port_url: str) -> None:
    async with eh.async_client(timeout=5) as client:
        with pytest.raises(errtrace.AppError) as info:
            await client.get(f"{closed_port_url}/x")
    assert info.value.code == "UPSTREAM_UNAVAILABLE"
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_sync_read_timeout_is_timeout(down_url: str) -> None:
    with eh.client(base_url=down_url, timeout=0.2) as client, pytest.raises(
        errtrace.AppError
    ) as info:
        client.get("/slow")
    assert info.value.code == "TIMEOUT"
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


@pytest.mark.anyio
async def test_async_read_timeout_is_timeout(down_url: str) -> None:
    async with eh.async_client(base_url=down_url, timeout=0.2) as client:
        with pytest.raises(errtrace.AppError) as info:
            await client.get("/slow")
    assert info.value.code == "TIMEOUT"
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


# A call to an LLM provider (here a self-hosted one named with llm_provider=) gets the
# LLM codes, as the provider's SDK would: fallbacks and dashboards keyed on them work.
def test_sync_transport_failures_to_an_llm_provider_get_llm_codes(
    down_url: str, closed_port_url: str
) -> None:
    with eh.client(timeout=0.2, llm_provider="vllm") as client:
        with pytest.raises(errtrace.AppError) as timed_out:
            client.get(f"{down_url}/slow")
        with pytest.raises(errtrace.AppError) as refused:
            client.get(f"{closed_port_url}/x")
    assert (timed_out.value.code, refused.value.code) == ("LLM_TIMEOUT", "LLM_CONNECTION_ERROR")
    assert isinstance(timed_out.value.__cause__, httpx.ReadTimeout)
    assert isinstance(refused.value.__cause__, httpx.ConnectError)
    with eh.client(timeout=0.2, llm_provider=False) as client, pytest.raises(
        errtrace.AppError
    ) as plain:
        client.get(f"{down_url}/slow")
    assert plain.value.code == "TIMEOUT"


@pytest.mark.anyio
async def test_async_transport_failures_to_an_llm_provider_get_llm_codes(
    closed_port_url: str,
) -> None:
    async with eh.async_client(timeout=5, llm_provider=True) as client:
        with pytest.raises(errtrace.AppError) as info:
            await client.get(f"{closed_port_url}/x")
    assert info.value.code == "LLM_CONNECTION_ERROR"


class BodyFailure:
    """A raw HTTP/1.1 server on 127.0.0.1 that sends a 200's headers and 3 of the 100
    body bytes it announces, then stalls (``cut=False``) or closes the connection."""

    def __init__(self, *, cut: bool) -> None:
        self.cut = cut
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)  # so that the accept loop sees `done`
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(5)
        self.listener.close()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            received = b""
            # Read the whole request first: closing with unread bytes would send a reset.
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                received += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            if not self.cut:
                self.done.wait(5)


# (server mode, the code, the httpx exception it is raised from)
BODY_FAILURES = [
    pytest.param((False, "TIMEOUT", httpx.ReadTimeout), id="body-stalls"),
    pytest.param((True, "UPSTREAM_UNAVAILABLE", httpx.RemoteProtocolError), id="peer-cuts-body"),
]


@pytest.fixture(params=BODY_FAILURES)
def body_failure(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, type[Exception]]]:
    cut, code, cause = request.param
    with BodyFailure(cut=cut) as url:
        yield url, code, cause


def assert_body_failure(
    info: pytest.ExceptionInfo[errtrace.AppError], code: str, cause: type[Exception]
) -> None:
    # The same error as a failure before the headers: a TransientError a retry loop
    # catches, raised from the httpx exception, which names the request.
    assert isinstance(info.value, errtrace.TransientError)
    assert info.value.code == code
    assert info.value.retryable
    assert isinstance(info.value.__cause__, cause)
    assert info.value.__cause__.request.url.path == "/x"
    assert "traceparent" in info.value.__cause__.request.headers


def sync_clients() -> list[Any]:
    return [
        pytest.param(lambda: eh.client(timeout=0.2), id="instrumented"),
        pytest.param(
            lambda: httpx.Client(transport=eh.ErrtraceTransport(), timeout=0.2), id="by-hand"
        ),
    ]


@pytest.mark.parametrize("make_client", sync_clients())
def test_sync_body_failure_after_the_headers_is_translated(
    body_failure: tuple[str, str, type[Exception]], make_client: Callable[[], httpx.Client]
) -> None:
    url, code, cause = body_failure
    with (
        make_client() as client,
        errtrace.testing.capture_events() as recorded,
        pytest.raises(errtrace.AppError) as info,
    ):
        client.get(f"{url}/x")
    assert_body_failure(info, code, cause)
    assert recorded == []  # the adapter raises; the middleware records, if nothing handles it


@pytest.mark.anyio
@pytest.mark.parametrize("by_hand", [False, True], ids=["instrumented", "by-hand"])
async def test_async_body_failure_after_the_headers_is_translated(
    body_failure: tuple[str, str, type[Exception]], by_hand: bool
) -> None:
    url, code, cause = body_failure
    client = (
        httpx.AsyncClient(transport=eh.AsyncErrtraceTransport(), timeout=0.2)
        if by_hand else eh.async_client(timeout=0.2)
    )
    async with client:
        with errtrace.testing.capture_events() as recorded, pytest.raises(
            errtrace.AppError
        ) as info:
            await client.get(f"{url}/x")
    assert_body_failure(info, code, cause)
    assert recorded == []


@pytest.mark.parametrize("read", ["iter_bytes", "iter_raw", "read"])
def test_sync_streamed_body_failure_is_translated_and_the_response_closed(
    body_failure: tuple[str, str, type[Exception]], read: str
) -> None:
    url, code, cause = body_failure
    with eh.client(timeout=0.2) as client:
        with client.stream("GET", f"{url}/x") as response:
            assert response.status_code == 200
            with pytest.raises(errtrace.AppError) as info:
                if read == "read":
                    response.read()
                else:
                    for _ in getattr(response, read)():
                        pass
        assert response.is_closed
        assert response.elapsed > timedelta(0)  # httpx's own close ran
    assert_body_failure(info, code, cause)


@pytest.mark.anyio
@pytest.mark.parametrize("read", ["aiter_bytes", "aiter_raw", "aread"])
async def test_async_streamed_body_failure_is_translated_and_the_response_closed(
    body_failure: tuple[str, str, type[Exception]], read: str
) -> None:
    url, code, cause = body_failure
    async with eh.async_client(timeout=0.2) as client:
        async with client.stream("GET", f"{url}/x") as response:
            assert response.status_code == 200
            with pytest.raises(errtrace.AppError) as info:
                if read == "aread":
                    await response.aread()
                else:
                    async for _ in getattr(response, read)():
                        pass
        assert response.is_closed
        assert response.elapsed > timedelta(0)
    assert_body_failure(info, code, cause)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ConnectTimeout("t"), "TIMEOUT"),
        (httpx.PoolTimeout("t"), "TIMEOUT"),
        (httpx.WriteTimeout("t"), "TIMEOUT"),
        (httpx.ReadError("r"), "UPSTREAM_UNAVAILABLE"),
        (httpx.WriteError("w"), "UPSTREAM_UNAVAILABLE"),
        (httpx.RemoteProtocolError("p"), "UPSTREAM_UNAVAILABLE"),
        (httpx.ProxyError("p"), "UPSTREAM_UNAVAILABLE"),
        (httpx.LocalProtocolError("ours"), None),
        (ValueError("not httpx"), None),
    ],
)
def test_error_from_exception(exc: Exception, code: str | None) -> None:
    err = eh.error_from_exception(exc)
    assert (err.code if err else None) == code
    if err is not None:
        assert err.__cause__ is exc


def test_the_callers_own_mistake_passes_unchanged() -> None:
    with eh.client() as client, pytest.raises(httpx.UnsupportedProtocol):
        client.get("ftp://example.invalid/")


# --- clients and packaging ------------------------------------------------------------


@pytest.mark.anyio
async def test_instrument_client_wraps_transport_and_mounts_once(down_app: FastAPI) -> None:
    inner = httpx.ASGITransport(app=down_app)
    async with httpx.AsyncClient(
        transport=inner, mounts={"http://other": httpx.ASGITransport(app=down_app)},
        base_url="http://down",
    ) as client:
        assert eh.instrument_client(client) is client
        eh.instrument_client(client)  # again: no double wrapping
        transport = client._transport
        assert isinstance(transport, eh.AsyncErrtraceTransport)
        assert transport.inner is inner
        assert all(isinstance(t, eh.AsyncErrtraceTransport) for t in client._mounts.values())
        echo = (await client.get("http://other/echo")).json()
        assert parse_traceparent(echo["headers"]["traceparent"]) is not None
        with pytest.raises(errtrace.AppError):
            await client.get("/fail")


def test_explicit_transport_wrapper_on_a_plain_client(down_url: str) -> None:
    with httpx.Client(base_url=down_url, transport=eh.ErrtraceTransport()) as client:
        echo = client.get("/echo").json()
        assert parse_traceparent(echo["headers"]["traceparent"]) is not None
        with pytest.raises(errtrace.TransientError):
            client.get("/fail")


def test_import_errtrace_does_not_import_httpx() -> None:
    code = (
        "import sys, errtrace; "
        "print('httpx' in sys.modules, 'errtrace.adapters.httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_httpx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # makes `import httpx` fail
    monkeypatch.delitem(sys.modules, "errtrace.adapters.httpx")
    with pytest.raises(ImportError, match=r'pip install "errtrace\[httpx\]"'):
        importlib.import_module("errtrace.adapters.httpx")


# --- a code only the remote service registers, passed on over HTTP -------------------------


def test_remote_only_code_keeps_retryable_and_domain_across_http_hops() -> None:
    """B (FastAPI) raises a retryable code only B defines; A (Flask) calls B with the
    adapter and lets the error propagate. A's caller must still read B's code with its
    domain and be told to retry, as over gRPC."""
    from flask import Flask

    busy = errtrace.ErrorCode(
        id="INVENTORY_BUSY", level=2, http_status=503, retryable=True,
        domain="inventory.example.com",
    )
    b = FastAPI()

    @b.get("/stock")
    async def stock() -> None:
        raise errtrace.AppError(busy, "busy", details={"retry_after": 5})

    decoded: list[errtrace.AppError] = []
    a = Flask(__name__)

    @a.get("/order")
    def order() -> str:
        try:
            with eh.client(base_url=b_url) as c:
                c.get("/stock")
        except errtrace.AppError as err:
            decoded.append(err)
            raise
        return "unreachable"

    saved = runtime_module._default
    try:
        errtrace.instrument(a, service_name="svc-a")
    finally:
        runtime_module.set_default_runtime(saved)
    with Server(_instrumented(b, "svc-b")) as b_url:
        answer = a.test_client().get("/order")
    [err] = decoded
    assert err.error_code.domain == "inventory.example.com" and err.retryable
    body = answer.get_json()
    assert answer.status_code == 503
    assert (body["code"], body["domain"], body["retryable"]) == (
        "INVENTORY_BUSY", "inventory.example.com", True)
    assert answer.headers["Retry-After"] == "5"
    # A's caller, which does not register the code either, rebuilds the same pair.
    again = from_http_response(
        answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, answer.data
    )
    assert again is not None
    assert again.error_code.domain == "inventory.example.com" and again.retryable


@pytest.mark.parametrize(("cut", "code"), [(False, "LLM_TIMEOUT"), (True, "LLM_CONNECTION_ERROR")])
def test_body_failure_from_an_llm_provider_gets_its_llm_code(cut: bool, code: str) -> None:
    with (
        BodyFailure(cut=cut) as url,
        eh.client(timeout=0.2, llm_provider="vllm") as client,
        pytest.raises(errtrace.AppError) as info,
    ):
        client.get(f"{url}/x")
    assert info.value.code == code


@pytest.mark.anyio
async def test_async_body_failure_from_an_llm_provider_gets_its_llm_code() -> None:
    with BodyFailure(cut=True) as url:
        async with eh.async_client(timeout=0.2, llm_provider="vllm") as client:
            with pytest.raises(errtrace.AppError) as info:
                await client.get(f"{url}/x")
    assert info.value.code == "LLM_CONNECTION_ERROR"
