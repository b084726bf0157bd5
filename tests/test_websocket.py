"""Websocket routes of an instrumented FastAPI app, served by uvicorn on 127.0.0.1.

A session gets the request's context from its handshake headers; an exception that
escapes it is recorded, then handled by the server exactly as without errtrace (the
close code, or the refused handshake, a client sees is compared with a plain app).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI, WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import errtrace
from errtrace.core import runtime as runtime_module
from errtrace.testing import capture_events

from .conftest import TRACE_ID, TRACEPARENT, uvicorn_server, wait_until


def make_app(instrumented: bool) -> FastAPI:
    app = FastAPI()

    def dependency() -> str | None:
        ctx = errtrace.current()
        return ctx.trace_id if ctx else None

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, seen: str | None = Depends(dependency)) -> None:
        await websocket.accept()
        command = await websocket.receive_text()
        ctx = errtrace.current()
        await websocket.send_json({
            "handler": ctx.as_dict() if ctx else None, "dependency": seen,
        })
        if command == "crash":
            raise RuntimeError("tokenizer crashed")
        if command == "wait":
            await websocket.receive_text()  # the client leaves instead
        await websocket.close()

    @app.websocket("/refuse")
    async def refuse(websocket: WebSocket) -> None:
        raise RuntimeError("crashed before accepting")

    if instrumented:
        saved = runtime_module._default
        try:
            errtrace.instrument(app, service_name="ws-gateway")
        finally:
            runtime_module.set_default_runtime(saved)
    return app


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[bool, str]]:
    with uvicorn_server(make_app(True)) as ours, uvicorn_server(make_app(False)) as plain:
        yield {True: ours.replace("http", "ws", 1), False: plain.replace("http", "ws", 1)}


HEADERS = {"traceparent": TRACEPARENT, "x-biz-code": "tenant-42"}


def session(url: str, command: str) -> tuple[dict[str, Any], int | None]:
    """Send ``command``; the first JSON message and the close code the client saw."""
    with connect(f"{url}/ws", additional_headers=HEADERS, open_timeout=10) as ws:
        ws.send(command)
        first = json.loads(ws.recv(timeout=10))
        try:
            ws.recv(timeout=10)
        except ConnectionClosed as closed:
            return first, closed.rcvd.code if closed.rcvd else None
    raise AssertionError("the session did not close")


def test_the_handler_and_its_dependency_see_the_sessions_context(
    urls: dict[bool, str],
) -> None:
    first, code = session(urls[True], "hello")
    assert first["dependency"] == TRACE_ID
    handler = first["handler"]
    assert handler["trace_id"] == TRACE_ID and handler["biz_code"] == "tenant-42"
    assert handler["parent_span_id"] == TRACEPARENT.split("-")[2]
    assert code == 1000


def test_an_exception_after_accept_is_recorded_and_closes_as_without_errtrace(
    urls: dict[bool, str], caplog: pytest.LogCaptureFixture
) -> None:
    with capture_events() as events, caplog.at_level(logging.ERROR, logger="errtrace"):
        _, code = session(urls[True], "crash")
        assert wait_until(lambda: len(events) == 1, timeout=5)
    _, plain_code = session(urls[False], "crash")
    assert code == plain_code  # uvicorn drops the connection (no close frame) either way
    [event] = events
    assert (event.code, event.transport, event.route, event.trace_id) == (
        "INTERNAL", "websocket", "/ws", TRACE_ID)
    assert event.exception_type == "RuntimeError" and event.response_started
    assert event.biz_code == "tenant-42"
    [record] = [r for r in caplog.records if r.name == "errtrace"]
    assert "RuntimeError" in record.getMessage() and "/ws" in record.getMessage()


def test_an_exception_before_accept_refuses_the_handshake_as_without_errtrace(
    urls: dict[bool, str],
) -> None:
    statuses = {}
    with capture_events() as events:
        for instrumented in (True, False):
            with pytest.raises(InvalidStatus) as info:
                connect(f"{urls[instrumented]}/refuse", open_timeout=10)
            statuses[instrumented] = info.value.response.status_code
        assert wait_until(lambda: len(events) == 1, timeout=5)
    assert statuses[True] == statuses[False] == 500
    [event] = events
    assert event.code == "INTERNAL" and not event.response_started


def test_a_client_that_leaves_is_cancelled_not_an_internal_error(
    urls: dict[bool, str], caplog: pytest.LogCaptureFixture
) -> None:
    with capture_events() as events, caplog.at_level(logging.ERROR, logger="errtrace"):
        with connect(f"{urls[True]}/ws", additional_headers=HEADERS, open_timeout=10) as ws:
            ws.send("wait")
            ws.recv(timeout=10)
        assert wait_until(lambda: len(events) == 1, timeout=5)
    assert [e.code for e in events] == ["CANCELLED"]
    assert not [r for r in caplog.records if r.name == "errtrace"]
