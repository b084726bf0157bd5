"""Fallbacks defined with ``async def`` on gRPC servers, against real servers on 127.0.0.1.

On ``grpc.aio.server`` the async handlers (coroutines, async generators, writers) run on
the loop, where the fallback is awaited. Plain-function handlers, on either server, run
in a worker thread with no loop to await it in: the fallback counts as failed there.

Fallbacks go to the process-wide policy, which the autouse fixture of ``conftest.py``
clears before and after every test.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

import errtrace
from errtrace.testing import capture_events
from tests.conftest import TRACE_ID, TRACEPARENT
from tests.grpc_helpers import KINDS, Result, invoke, serve, serve_methods

MD = [("traceparent", TRACEPARENT)]


def _set_async_fallback(code: str = "AI_MODEL_LOAD_FAILED") -> list[str]:
    """An ``async def`` fallback for ``code`` answering ``cached:<trace id>``; returns the
    list of trace ids it was called with."""
    calls: list[str] = []

    async def cached(err: errtrace.AppError, ctx: Any) -> StringValue:
        await asyncio.sleep(0)  # it really is awaited on the server's loop
        calls.append(ctx.trace_id)
        return StringValue(value=f"cached:{ctx.trace_id}")

    errtrace.set_fallback(code, cached)
    return calls


def _call(mode: str, kind: str, command: str) -> Result:
    with serve(mode) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return invoke(ch, kind, command, MD)


# --- async handlers on grpc.aio: the fallback is awaited ----------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_async_fallback_answers_an_async_handler_on_aio(kind: str) -> None:
    """Unary responses get the fallback's message; a response stream that failed before
    its first message gets it as its one message (as the sync server does for a sync
    fallback)."""
    calls = _set_async_fallback()
    with capture_events() as events:
        result = _call("aio", kind, "app:AI_MODEL_LOAD_FAILED")
    assert result.error is None and result.code is grpc.StatusCode.OK
    assert result.values == [f"cached:{TRACE_ID}"]
    assert result.trailing()["x-trace-id"] == TRACE_ID
    assert "x-error-code" not in result.trailing()
    assert calls == [TRACE_ID]
    assert [(e.code, e.response_started, e.fallback) for e in events] == [
        ("AI_MODEL_LOAD_FAILED", False, "applied"),
    ]
    assert errtrace.stats().get("hook_failures", 0) == 0


@pytest.mark.parametrize("kind", ["ServerStream", "BidiStream"])
def test_async_fallback_does_not_replace_a_stream_that_started(kind: str) -> None:
    """After the first message a fallback cannot stand in: the stream ends with the
    error's status, and the fallback is not even called."""
    calls = _set_async_fallback()
    with capture_events() as events:
        result = _call("aio", kind, "mid:AI_MODEL_LOAD_FAILED")
    assert result.values == ["one", "two"]
    assert result.code is grpc.StatusCode.UNAVAILABLE
    assert result.trailing()["x-error-code"] == "AI_MODEL_LOAD_FAILED"
    assert result.trailing()["x-trace-id"] == TRACE_ID
    assert calls == []
    assert [(e.response_started, e.fallback) for e in events] == [(True, None)]


def test_async_fallback_answers_a_writer_that_wrote_nothing_yet() -> None:
    """The reader/writer style (``await context.write``): before the first write the
    fallback's message is written; after one, the error's status ends the stream."""
    calls = _set_async_fallback()

    async def writer(request: StringValue, context: Any) -> None:
        if request.value == "mid":
            await context.write(StringValue(value="one"))
        raise errtrace.AppError("AI_MODEL_LOAD_FAILED")

    with serve_methods("aio", {}, {"ServerStream": writer}) as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch, capture_events() as events:
        before = invoke(ch, "ServerStream", "before", MD)
        mid = invoke(ch, "ServerStream", "mid", MD)
    assert before.error is None and before.values == [f"cached:{TRACE_ID}"]
    assert before.trailing()["x-trace-id"] == TRACE_ID
    assert mid.values == ["one"] and mid.code is grpc.StatusCode.UNAVAILABLE
    assert calls == [TRACE_ID]
    assert [(e.response_started, e.fallback) for e in events] == [
        (False, "applied"), (True, None),
    ]


@pytest.mark.parametrize("kind", ["Unary", "ServerStream"])
def test_async_fallback_that_raises_answers_with_the_error(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A fallback's bug is logged and counted; the client gets errtrace's error status."""

    async def broken(err: errtrace.AppError, ctx: Any) -> StringValue:
        await asyncio.sleep(0)
        raise LookupError("cache down")

    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", broken)
    with capture_events() as events, caplog.at_level(logging.ERROR, logger="errtrace"):
        result = _call("aio", kind, "app:AI_MODEL_LOAD_FAILED")
    assert result.values == []
    assert result.code is grpc.StatusCode.UNAVAILABLE
    assert result.call.details() == "safe message"
    trailing = result.trailing()
    assert trailing["x-error-code"] == "AI_MODEL_LOAD_FAILED"
    assert trailing["x-trace-id"] == TRACE_ID
    [event] = events
    assert event.fallback == "failed"
    assert trailing["x-error-event-id"] == event.event_id
    assert errtrace.stats()["hook_failures"] == 1
    [record] = [r for r in caplog.records if "fallback for AI_MODEL_LOAD_FAILED" in r.getMessage()]
    assert record.exc_info is not None and "cache down" in caplog.text


# --- plain-function handlers: no loop to await in, the fallback counts as failed ----------


@pytest.mark.parametrize("mode", ["sync", "aio-sync"])
@pytest.mark.parametrize("kind", ["Unary", "ServerStream"])
def test_async_fallback_fails_for_a_sync_handler(
    mode: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain-function handler runs in a worker thread on either server: the fallback's
    coroutine is closed unawaited (no warning) and the error's status answers."""
    calls = _set_async_fallback()
    with capture_events() as events, caplog.at_level(logging.ERROR, logger="errtrace"):
        result = _call(mode, kind, "app:AI_MODEL_LOAD_FAILED")
    assert result.values == []
    assert result.code is grpc.StatusCode.UNAVAILABLE
    assert result.trailing()["x-error-code"] == "AI_MODEL_LOAD_FAILED"
    assert result.trailing()["x-trace-id"] == TRACE_ID
    assert calls == []
    assert [e.fallback for e in events] == ["failed"]
    assert errtrace.stats()["hook_failures"] == 1
    assert any("coroutine function" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", ["Unary", "ServerStream"])
def test_sync_fallback_still_answers_async_handlers_on_aio(kind: str) -> None:
    """A fallback defined with ``def`` is unchanged by the awaiting path."""
    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", lambda err, ctx: StringValue(value="plain"))
    with capture_events() as events:
        result = _call("aio", kind, "app:AI_MODEL_LOAD_FAILED")
    assert result.error is None and result.values == ["plain"]
    assert [e.fallback for e in events] == ["applied"]
