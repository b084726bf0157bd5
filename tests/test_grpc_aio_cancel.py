"""A response stream that ends early on ``grpc.aio.server``: the handler's stream is closed.

grpc.aio iterates a plain (sync) generator handler in a worker thread and, when the call
ends before the stream does (the client cancelled, the deadline passed, a message could
not be sent), stops iterating it without closing it. errtrace closes it when the call
ends, so the handler's ``finally`` blocks run. Async generator handlers run on the loop
and see the cancellation themselves.

grpc may leave the worker thread of such a stream blocked for good (it waits to queue a
message nobody will read), out of errtrace's reach; these servers run sync handlers on
daemon threads, so that a blocked one cannot keep the test process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

import errtrace
from tests.conftest import TRACE_ID, TRACEPARENT
from tests.grpc_helpers import AioServerThread, echo_handler, path

MD = (("traceparent", TRACEPARENT),)
STREAMS = ("ServerStream", "BidiStream")


class _DaemonThreads(futures.Executor):
    """Runs each task on a new daemon thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, daemon=True).start()
        return future


class _Server(AioServerThread):
    """:class:`AioServerThread` with errtrace, running sync handlers on daemon threads."""

    async def _start(self) -> None:
        self._server = grpc.aio.server(
            interceptors=self.interceptors, migration_thread_pool=_DaemonThreads()
        )
        self._server.add_generic_rpc_handlers((self.handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()


@contextlib.contextmanager
def _serve(kind: str, behavior: Callable[..., Any]) -> Iterator[grpc.Channel]:
    """A channel to a server whose method ``kind`` is ``behavior``."""
    server = _Server(errtrace.grpc_aio_server_interceptors(), echo_handler({kind: behavior}))
    with server as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel


def _start_call(channel: grpc.Channel, kind: str, timeout: float = 10) -> Any:
    """Call the response stream ``kind`` with one request; returns the call (an iterator)."""
    ser, de = StringValue.SerializeToString, StringValue.FromString
    request = StringValue(value="go")
    if kind == "ServerStream":
        return channel.unary_stream(
            path(kind), request_serializer=ser, response_deserializer=de
        )(request, metadata=MD, timeout=timeout)
    return channel.stream_stream(
        path(kind), request_serializer=ser, response_deserializer=de
    )(iter([request]), metadata=MD, timeout=timeout)


def _trace_id() -> str | None:
    ctx = errtrace.current()
    return None if ctx is None else ctx.trace_id


@pytest.mark.parametrize("kind", STREAMS)
def test_a_sync_generator_is_closed_when_the_client_cancels(kind: str) -> None:
    closed = threading.Event()
    closes: list[str | None] = []

    def endless(request: Any, context: Any) -> Iterator[StringValue]:
        try:
            while True:
                yield StringValue(value="tick")
                time.sleep(0.01)
        finally:
            closes.append(_trace_id())
            closed.set()

    with _serve(kind, endless) as channel:
        call = _start_call(channel, kind)
        assert next(call).value == "tick"
        call.cancel()
        assert closed.wait(5), "the handler's finally block did not run"
    assert closes == [TRACE_ID]  # once, with the call's context bound


def test_a_sync_generator_is_closed_after_the_step_it_was_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A generator cannot be closed while it runs: the close waits for the step."""
    in_step, release, closed = threading.Event(), threading.Event(), threading.Event()

    def slow(request: Any, context: Any) -> Iterator[StringValue]:
        try:
            yield StringValue(value="one")
            in_step.set()
            release.wait(5)  # a long step (a model call): the client cancels meanwhile
            while True:
                yield StringValue(value="tick")
                time.sleep(0.01)
        finally:
            closed.set()

    with caplog.at_level(logging.ERROR), _serve("ServerStream", slow) as channel:
        call = _start_call(channel, "ServerStream")
        assert next(call).value == "one"
        assert in_step.wait(5)
        call.cancel()
        assert not closed.wait(0.3)
        release.set()
        assert closed.wait(5), "the handler's finally block did not run"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("ending", "code"),
    [
        ("end", grpc.StatusCode.OK),
        ("raise", grpc.StatusCode.UNAVAILABLE),
        ("deadline", grpc.StatusCode.DEADLINE_EXCEEDED),
        ("unsendable", grpc.StatusCode.UNKNOWN),
    ],
)
def test_a_sync_generator_is_closed_once_however_the_call_ends(
    ending: str, code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    closed = threading.Event()
    closes: list[str | None] = []

    def stream(request: Any, context: Any) -> Iterator[Any]:
        try:
            yield StringValue(value="one")
            if ending == "raise":
                raise errtrace.AppError("AI_MODEL_LOAD_FAILED")
            if ending == "unsendable":
                yield object()  # grpc fails to serialize it, on the loop
            while ending != "end":
                time.sleep(0.01)
                yield StringValue(value="tick")
        finally:
            closes.append(_trace_id())
            closed.set()

    with caplog.at_level(logging.CRITICAL, logger="grpc"), _serve(
        "ServerStream", stream
    ) as channel:
        call = _start_call(channel, "ServerStream", timeout=1 if ending == "deadline" else 10)
        with contextlib.suppress(grpc.RpcError):
            for _ in call:
                pass
        assert call.code() is code
        assert closed.wait(5), "the handler's finally block did not run"
    assert closes == [TRACE_ID]


@pytest.mark.parametrize("kind", STREAMS)
def test_an_async_generator_sees_its_own_cancellation(kind: str) -> None:
    waiting, closed = threading.Event(), threading.Event()
    seen: list[tuple[str, str | None]] = []

    async def endless(request: Any, context: Any) -> AsyncIterator[StringValue]:
        try:
            yield StringValue(value="one")
            waiting.set()
            await asyncio.sleep(30)
            yield StringValue(value="two")
        except asyncio.CancelledError:
            seen.append(("cancelled", _trace_id()))
            raise
        finally:
            closed.set()

    with _serve(kind, endless) as channel:
        call = _start_call(channel, kind)
        assert next(call).value == "one"
        assert waiting.wait(5)
        call.cancel()
        assert closed.wait(5), "the handler's finally block did not run"
    assert seen == [("cancelled", TRACE_ID)]
