"""gRPC server interceptors, sync and aio: one test body per behavior, run for every
server mode (``sync``, ``aio`` and ``aio-sync``: sync handlers on the aio server).

The client is a plain ``grpc`` channel with no errtrace interceptor, reading the rich
error details with ``grpc_status.rpc_status.from_call`` as any gRPC client would.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import errtrace
from errtrace.testing import capture_events
from tests.conftest import TRACE_ID, TRACEPARENT
from tests.grpc_helpers import (
    KINDS,
    MODES,
    SECRET,
    STREAMING_RESPONSE,
    AioServerThread,
    Result,
    invoke,
    serve,
    serve_methods,
    sync_server,
    typed_handler,
    typed_path,
)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def channel(mode: str) -> Iterator[grpc.Channel]:
    with serve(mode, service_name="svc-a") as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch:
        yield ch


def _rich(result: Any) -> tuple[Any, error_details_pb2.ErrorInfo, Any]:
    status = rpc_status.from_call(result.call)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    retry = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
    return status, info, retry


@pytest.mark.parametrize("kind", KINDS)
def test_context_from_metadata_is_current_in_every_kind(channel: grpc.Channel, kind: str) -> None:
    metadata = [("traceparent", TRACEPARENT), ("x-biz-code", "tenant-42"),
                ("tracestate", "vendor=abc")]
    result = invoke(channel, kind, "ctx", metadata)

    assert result.error is None, result.error
    seen = [json.loads(v) for v in result.values]
    assert len(seen) == (2 if kind in STREAMING_RESPONSE else 1)
    for ctx in seen:  # streams: still current at the second message
        assert ctx["trace_id"] == TRACE_ID
        assert ctx["parent_span_id"] == "1234567890123456"
        assert ctx["span_id"] not in (None, "1234567890123456")
        assert ctx["biz_code"] == "tenant-42"
    # By default a successful call carries no extra trailer (each one costs time).
    assert "x-trace-id" not in result.trailing()


@pytest.mark.parametrize("kind", KINDS)
def test_trace_id_on_success_when_configured(mode: str, kind: str) -> None:
    with serve(mode, grpc_trace_id_on_success=True) as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch:
        result = invoke(ch, kind, "ctx", [("traceparent", TRACEPARENT)])
        fresh = invoke(ch, kind, "ctx")
    assert result.error is None and result.trailing()["x-trace-id"] == TRACE_ID
    new_trace = json.loads(fresh.values[0])["trace_id"]
    assert new_trace != TRACE_ID and fresh.trailing()["x-trace-id"] == new_trace


def test_no_traceparent_starts_a_trace(channel: grpc.Channel) -> None:
    result = invoke(channel, "Unary", "ctx")
    ctx = json.loads(result.values[0])
    assert len(ctx["trace_id"]) == 32 and ctx["parent_span_id"] is None


def test_binary_and_invalid_metadata_are_ignored(channel: grpc.Channel) -> None:
    metadata = [("traceparent", "00-zz-bad"), ("x-biz-code", "bad code!"),
                ("x-biz-code-bin", b"tenant-42")]
    result = invoke(channel, "Unary", "ctx", metadata)
    ctx = json.loads(result.values[0])
    assert ctx["trace_id"] != TRACE_ID and ctx["biz_code"] is None


@pytest.mark.parametrize("kind", KINDS)
def test_app_error_becomes_status_with_error_info_and_retry_info(
    channel: grpc.Channel, kind: str
) -> None:
    with capture_events() as events:
        result = invoke(channel, kind, "app:LLM_RATE_LIMITED",
                        [("traceparent", TRACEPARENT), ("x-biz-code", "tenant-42")])

    assert result.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert result.call.details() == "safe message"
    status, info, retry = _rich(result)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert info.reason == "LLM_RATE_LIMITED"
    assert info.domain == "errtrace.dev"
    assert info.metadata["level"] == "2"
    assert info.metadata["traceId"] == TRACE_ID
    assert info.metadata["bizCode"] == "tenant-42"
    assert info.metadata["service"] == "svc-a"
    [event] = events
    assert info.metadata["eventId"] == event.event_id
    assert info.metadata["spanId"] == event.span_id
    assert event.transport == "grpc" and event.method == f"/test.Echo/{kind}"
    assert retry is not None and retry.retry_delay.seconds == 1
    trailing = result.trailing()
    assert trailing["x-error-code"] == "LLM_RATE_LIMITED"
    assert trailing["x-error-event-id"] == event.event_id
    assert trailing["x-trace-id"] == TRACE_ID


def test_retry_after_of_the_error_sets_retry_delay(mode: str) -> None:
    def handler(req: Any, ctx: Any) -> Any:
        raise errtrace.AppError("UPSTREAM_UNAVAILABLE", details={"retry_after": 2.5})

    async def aio(req: Any, ctx: Any) -> Any:
        return handler(req, ctx)

    result = _call_custom(mode, aio if mode == "aio" else handler)
    _status, info, retry = _rich(result)
    assert info.reason == "UPSTREAM_UNAVAILABLE"
    assert retry is not None
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (2, 500_000_000)


def test_non_retryable_error_has_no_retry_info(channel: grpc.Channel) -> None:
    result = invoke(channel, "Unary", "app:VALIDATION_FAILED")
    assert result.code is grpc.StatusCode.INVALID_ARGUMENT
    _status, info, retry = _rich(result)
    assert info.reason == "VALIDATION_FAILED" and retry is None


@pytest.mark.parametrize("kind", KINDS)
def test_unhandled_exception_is_internal_without_its_text(
    channel: grpc.Channel, kind: str
) -> None:
    with capture_events() as events:
        result = invoke(channel, kind, "boom")
    assert result.code is grpc.StatusCode.INTERNAL
    assert SECRET not in (result.call.details() or "")
    assert "event id" in result.call.details()
    _status, info, _retry = _rich(result)
    assert info.reason == "INTERNAL"
    assert all(SECRET not in v for v in info.metadata.values())
    [event] = events
    assert event.exception_type == "RuntimeError"  # the server keeps it; the client never sees it


def test_debug_shows_exception_text(mode: str) -> None:
    with serve(mode, debug=True) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        result = invoke(ch, "Unary", "boom")
    assert result.code is grpc.StatusCode.INTERNAL
    assert SECRET in result.call.details()


@pytest.mark.parametrize("kind", sorted(STREAMING_RESPONSE))
def test_error_mid_stream_after_first_messages(channel: grpc.Channel, kind: str) -> None:
    with capture_events() as events:
        result = invoke(channel, kind, "mid:AI_INFERENCE_TIMEOUT", [("traceparent", TRACEPARENT)])
    assert result.values == ["one", "two"]
    assert result.code is grpc.StatusCode.DEADLINE_EXCEEDED
    _status, info, retry = _rich(result)
    assert info.reason == "AI_INFERENCE_TIMEOUT" and retry is not None
    [event] = events
    assert event.response_started is True
    assert result.trailing()["x-trace-id"] == TRACE_ID


@pytest.mark.parametrize("kind", KINDS)
def test_handler_abort_passes_through_untouched(channel: grpc.Channel, kind: str) -> None:
    with capture_events() as events:
        result = invoke(channel, kind, "abort")
    assert result.code is grpc.StatusCode.PERMISSION_DENIED
    assert result.call.details() == "handler said no"
    assert rpc_status.from_call(result.call) is None
    assert "x-error-code" not in result.trailing()
    assert events == []


class _PublicOnlyContext:
    """A servicer context that shows only the public API (no private abort mark)."""

    def __init__(self, code: grpc.StatusCode | None) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code


@pytest.mark.parametrize(
    ("exc", "code", "aborted"),
    [
        (Exception(), grpc.StatusCode.PERMISSION_DENIED, True),  # what abort() raises
        (Exception(), None, False),  # a bare Exception with no status set
        (Exception(), grpc.StatusCode.OK, False),
        (Exception("db down"), grpc.StatusCode.PERMISSION_DENIED, False),
        (RuntimeError(), grpc.StatusCode.PERMISSION_DENIED, False),
    ],
)
def test_abort_detection_without_the_private_mark(
    exc: Exception, code: grpc.StatusCode | None, aborted: bool
) -> None:
    from errtrace.grpc_interceptors._server import aborted_by_handler

    assert aborted_by_handler(_PublicOnlyContext(code), exc) is aborted


@pytest.mark.parametrize("kind", ["Unary", "ClientStream"])
def test_status_set_by_handler_is_kept(channel: grpc.Channel, kind: str) -> None:
    with capture_events() as events:
        result = invoke(channel, kind, "setcode")
    assert result.code is grpc.StatusCode.NOT_FOUND
    assert result.call.details() == "nothing here"
    assert events == []


def test_fallback_result_answers_unary_call(mode: str) -> None:
    from google.protobuf.wrappers_pb2 import StringValue

    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", lambda err, ctx: StringValue(value="cached"))
    with serve(mode) as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch, capture_events() as events:
        result = invoke(ch, "Unary", "app:AI_MODEL_LOAD_FAILED")
        streamed = invoke(ch, "ServerStream", "mid:AI_MODEL_LOAD_FAILED")
    assert result.error is None and result.values == ["cached"]
    assert "x-trace-id" in result.trailing()
    assert events[0].fallback == "applied"
    # A stream that already sent messages cannot be replaced: it ends with the status.
    assert streamed.values == ["one", "two"]
    assert streamed.code is grpc.StatusCode.UNAVAILABLE


def test_no_context_leak_between_calls_on_reused_threads() -> None:
    from concurrent import futures

    from google.protobuf.wrappers_pb2 import StringValue

    seen: list[tuple[Any, int]] = []

    def handler(req: Any, ctx: Any) -> Any:
        current = errtrace.current()
        seen.append((current.trace_id if current else None, threading.get_ident()))
        if req.value == "boom":
            raise RuntimeError(SECRET)
        return StringValue(value="ok")

    pool = futures.ThreadPoolExecutor(max_workers=1)
    try:
        with sync_server(errtrace.grpc_server_interceptors(), _custom_handler(handler),
                         executor=pool) as port, \
                grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            invoke(ch, "Unary", "boom", [("traceparent", TRACEPARENT)])
            invoke(ch, "Unary", "x")
            # Whatever runs next on that same worker thread finds no context bound.
            leftover = pool.submit(errtrace.current).result(10)
    finally:
        pool.shutdown()
    assert seen[0][1] == seen[1][1]  # one worker thread ran both calls
    assert seen[0][0] == TRACE_ID and seen[1][0] not in (None, TRACE_ID)
    assert leftover is None


def test_sync_handler_on_aio_server() -> None:
    from google.protobuf.wrappers_pb2 import StringValue

    def unary(req: Any, ctx: Any) -> Any:
        if req.value == "boom":
            raise RuntimeError(SECRET)
        ctx_ = errtrace.current()
        return StringValue(value=ctx_.trace_id if ctx_ else "none")

    def stream(req: Any, ctx: Any) -> Any:
        ctx_ = errtrace.current()
        yield StringValue(value=ctx_.trace_id if ctx_ else "none")
        raise errtrace.AppError("TIMEOUT")

    ser, de = StringValue.SerializeToString, StringValue.FromString
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=de, response_serializer=ser),
        "ServerStream": grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=de, response_serializer=ser),
    })
    with AioServerThread(errtrace.grpc_aio_server_interceptors(), handler) as port, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        ok = invoke(ch, "Unary", "x", [("traceparent", TRACEPARENT)])
        failed = invoke(ch, "Unary", "boom")
        streamed = invoke(ch, "ServerStream", "x", [("traceparent", TRACEPARENT)])
    assert ok.values == [TRACE_ID]
    assert failed.code is grpc.StatusCode.INTERNAL and SECRET not in failed.call.details()
    assert streamed.values == [TRACE_ID]
    assert streamed.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_unknown_method_stays_unimplemented(channel: grpc.Channel) -> None:
    from google.protobuf.wrappers_pb2 import StringValue

    m = channel.unary_unary("/test.Echo/Nope", request_serializer=StringValue.SerializeToString,
                            response_deserializer=StringValue.FromString)
    with pytest.raises(grpc.RpcError) as info:
        m(StringValue(value="x"), timeout=10)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_options_build_their_own_runtime() -> None:
    from errtrace.core.runtime import Runtime, default_runtime

    [default] = errtrace.grpc_server_interceptors()
    [custom] = errtrace.grpc_server_interceptors(service_name="svc-x")
    assert default.runtime is default_runtime()
    assert custom.runtime.config.service_name == "svc-x"
    runtime = Runtime(errtrace.Config(service_name="svc-y"))
    [given] = errtrace.grpc_aio_server_interceptors(runtime=runtime)
    assert given.runtime is runtime
    with pytest.raises(TypeError):
        errtrace.grpc_server_interceptors(runtime=runtime, debug=True)


def _custom_handler(unary: Any) -> grpc.GenericRpcHandler:
    from google.protobuf.wrappers_pb2 import StringValue

    return grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=StringValue.FromString,
            response_serializer=StringValue.SerializeToString),
    })


def _call_custom(mode: str, unary: Any) -> Any:
    handler = _custom_handler(unary)
    if mode == "sync":
        server: Any = sync_server(errtrace.grpc_server_interceptors(), handler)
    else:
        server = AioServerThread(errtrace.grpc_aio_server_interceptors(), handler)
    with server as port, grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return invoke(ch, "Unary", "x")



# Not "aio-sync": grpc.aio itself never closes a sync handler's generator when the client
# cancels (checked without errtrace), so there is no cleanup to observe.
@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_client_cancelling_a_stream_is_not_an_error(mode: str) -> None:
    """A client that cancels mid-stream: the handler's cleanup runs with the context
    current, no error event is recorded, and the server keeps serving."""
    from google.protobuf.wrappers_pb2 import StringValue

    cleaned = threading.Event()
    seen: dict[str, Any] = {}
    release = threading.Event()

    def note_cleanup() -> None:
        ctx = errtrace.current()
        seen.setdefault("trace_id", ctx.trace_id if ctx else None)
        cleaned.set()

    def sync_stream(req: Any, ctx: Any) -> Iterator[StringValue]:
        try:
            yield StringValue(value="first")
            release.wait(10)
            while True:
                yield StringValue(value="more")
        finally:
            note_cleanup()

    async def aio_stream(req: Any, ctx: Any) -> Any:
        import asyncio

        try:
            yield StringValue(value="first")
            while True:
                await asyncio.sleep(0.01)
                yield StringValue(value="more")
        finally:
            note_cleanup()

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "ServerStream": grpc.unary_stream_rpc_method_handler(
            sync_stream if mode == "sync" else aio_stream,
            request_deserializer=StringValue.FromString,
            response_serializer=StringValue.SerializeToString),
    })
    server: Any = (
        sync_server(errtrace.grpc_server_interceptors(), handler)
        if mode == "sync"
        else AioServerThread(errtrace.grpc_aio_server_interceptors(), handler)
    )
    with capture_events() as events, server as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch:
        call = ch.unary_stream(
            "/test.Echo/ServerStream",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )(StringValue(value="x"), metadata=(("traceparent", TRACEPARENT),), timeout=10)
        assert next(call).value == "first"
        call.cancel()
        release.set()
        assert cleaned.wait(10), "the handler's generator was never closed"
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() is grpc.StatusCode.CANCELLED
        again = ch.unary_stream(
            "/test.Echo/ServerStream",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )(StringValue(value="x"), timeout=10)
        assert next(again).value == "first"  # the server still serves
        again.cancel()
    assert seen["trace_id"] == TRACE_ID
    assert events == []


def test_level_0_error_exits_after_the_status_went_out(mode: str) -> None:
    from errtrace.core.config import Config
    from errtrace.core.runtime import Runtime

    runtime = Runtime(Config(exit_on_fatal=True))
    exits = threading.Event()
    calls: list[str] = []

    def exit_handler() -> None:
        calls.append("exit")
        exits.set()

    runtime.exit_handler = exit_handler
    interceptors = (
        errtrace.grpc_server_interceptors(runtime=runtime)
        if mode == "sync"
        else errtrace.grpc_aio_server_interceptors(runtime=runtime)
    )
    with serve(mode, interceptors) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        internal = invoke(ch, "Unary", "app:INTERNAL")
        assert internal.code is grpc.StatusCode.INTERNAL
        assert not exits.wait(0.3) and calls == []  # level 1: no exit
        fatal = invoke(ch, "Unary", "app:AI_PROCESS_UNSAFE")
        # The caller got its answer; the exit runs once the status was sent.
        assert fatal.error is not None and fatal.code is not grpc.StatusCode.OK
        assert fatal.trailing()["x-error-code"] == "AI_PROCESS_UNSAFE"
        assert exits.wait(5)
    assert calls == ["exit"]


def _eager_stream_handler() -> grpc.GenericRpcHandler:
    """A server-streaming method whose handler checks the request before it returns an
    iterator: its errors are raised by the call itself, not by the first ``next``."""
    from google.protobuf.wrappers_pb2 import StringValue

    def eager(request: StringValue, context: grpc.ServicerContext) -> Iterator[StringValue]:
        if request.value.startswith("app:"):
            raise errtrace.AppError(request.value[4:], "safe message")
        if request.value == "abort":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler said no")
        return iter([StringValue(value="one"), StringValue(value="two")])

    return grpc.method_handlers_generic_handler("test.Echo", {
        "ServerStream": grpc.unary_stream_rpc_method_handler(
            eager, request_deserializer=StringValue.FromString,
            response_serializer=StringValue.SerializeToString,
        ),
    })


def test_stream_handler_failing_before_its_iterator() -> None:
    from google.protobuf.wrappers_pb2 import StringValue

    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", lambda err, ctx: StringValue(value="cached"))
    md = [("traceparent", TRACEPARENT)]
    with sync_server(
        errtrace.grpc_server_interceptors(), _eager_stream_handler()
    ) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as ch, capture_events() as events:
        ok = invoke(ch, "ServerStream", "fine", md)
        failed = invoke(ch, "ServerStream", "app:AI_INFERENCE_TIMEOUT", md)
        aborted = invoke(ch, "ServerStream", "abort", md)
        fallback = invoke(ch, "ServerStream", "app:AI_MODEL_LOAD_FAILED", md)
    assert ok.error is None and ok.values == ["one", "two"]
    assert failed.values == [] and failed.code is grpc.StatusCode.DEADLINE_EXCEEDED
    _status, info, retry = _rich(failed)
    assert info.reason == "AI_INFERENCE_TIMEOUT" and retry is not None
    assert failed.trailing()["x-trace-id"] == TRACE_ID
    # The handler's own abort is not an application error.
    assert aborted.code is grpc.StatusCode.PERMISSION_DENIED
    assert rpc_status.from_call(aborted.call) is None
    assert aborted.trailing()["x-trace-id"] == TRACE_ID
    # Nothing was sent yet: the fallback's message is the whole stream.
    assert fallback.error is None and fallback.values == ["cached"]
    assert [(e.code, e.response_started, e.fallback) for e in events] == [
        ("AI_INFERENCE_TIMEOUT", False, None), ("AI_MODEL_LOAD_FAILED", False, "applied"),
    ]


# --- sync handlers on the aio server --------------------------------------------------------


def test_sync_handler_abort_on_aio_server_ends_the_call() -> None:
    """A sync handler's authorization check that aborts stops the call there, as on a
    plain grpc.aio server: the client gets the abort's status, never the answer."""
    from google.protobuf.wrappers_pb2 import StringValue

    went_on = threading.Event()

    def unary(req: Any, ctx: Any) -> Any:
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "not allowed")
        went_on.set()
        return StringValue(value="private data")

    with serve_methods("aio-sync", {"Unary": unary}, {}) as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch, capture_events() as events:
        result = invoke(ch, "Unary", "x", [("traceparent", TRACEPARENT)])
    assert result.values == []
    assert result.code is grpc.StatusCode.PERMISSION_DENIED
    assert result.call.details() == "not allowed"
    assert not went_on.is_set()
    assert events == []


@pytest.mark.parametrize("kind", ["ClientStream", "BidiStream"])
def test_sync_request_streaming_handler_on_aio_server_reads_every_request(kind: str) -> None:
    """grpc.aio hands a sync handler a plain iterator of the requests; the context is
    current while it reads them."""
    from google.protobuf.wrappers_pb2 import StringValue

    def joined(requests: Iterator[Any]) -> StringValue:
        values = [r.value for r in requests]
        ctx = errtrace.current()
        return StringValue(value=f"{','.join(values)}|{ctx.trace_id if ctx else None}")

    def client_stream(requests: Iterator[Any], ctx: Any) -> Any:
        return joined(requests)

    def bidi(requests: Iterator[Any], ctx: Any) -> Iterator[Any]:
        yield joined(requests)

    methods = {"ClientStream": client_stream, "BidiStream": bidi}
    with serve_methods("aio-sync", methods, {}) as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch:
        requests = [StringValue(value=v) for v in ("a", "b", "c")]
        md = (("traceparent", TRACEPARENT),)
        ser, de = StringValue.SerializeToString, StringValue.FromString
        if kind == "ClientStream":
            answer = ch.stream_unary(f"/test.Echo/{kind}", request_serializer=ser,
                                     response_deserializer=de)(iter(requests), metadata=md,
                                                               timeout=10)
            values = [answer.value]
        else:
            values = [r.value for r in ch.stream_stream(
                f"/test.Echo/{kind}", request_serializer=ser, response_deserializer=de,
            )(iter(requests), metadata=md, timeout=10)]
    assert values == [f"a,b,c|{TRACE_ID}"]


def test_sync_stream_failing_mid_way_on_aio_server_always_gets_its_status() -> None:
    """grpc.aio writes a sync generator's message while its thread runs on: the error
    that follows must still end the call with its status every time (an abort from that
    thread can collide with the write and leave the call hanging)."""
    from google.protobuf.wrappers_pb2 import StringValue

    def stream(req: Any, ctx: Any) -> Iterator[Any]:
        yield StringValue(value="one")
        raise errtrace.AppError("LLM_RATE_LIMITED", "slow down")

    with serve_methods("aio-sync", {"ServerStream": stream}, {}) as port, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        results = [invoke(ch, "ServerStream", "x") for _ in range(30)]
    for result in results:
        assert result.values == ["one"]
        assert result.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert result.call.details() == "slow down"
        assert _rich(result)[1].reason == "LLM_RATE_LIMITED"


# --- what gRPC itself raises ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Unary", "ServerStream"])
def test_handler_abort_keeps_its_trailers_and_gets_the_trace_id(mode: str, kind: str) -> None:
    from google.protobuf.wrappers_pb2 import StringValue

    def sync_unary(req: Any, ctx: Any) -> Any:
        ctx.set_trailing_metadata((("retry-hint", "later"),))
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "handler said no")

    # Streams abort before their first message: a sync generator on grpc.aio that aborts
    # after a yield races grpc's own write of it (half the calls hang, without errtrace too).
    def sync_stream(req: Any, ctx: Any) -> Iterator[Any]:
        sync_unary(req, ctx)
        yield StringValue(value="never")

    async def aio_unary(req: Any, ctx: Any) -> Any:
        await ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "handler said no",
                        (("retry-hint", "later"),))

    async def aio_stream(req: Any, ctx: Any) -> Any:
        await aio_unary(req, ctx)
        yield StringValue(value="never")

    sync_methods = {"Unary": sync_unary, "ServerStream": sync_stream}
    aio_methods = {"Unary": aio_unary, "ServerStream": aio_stream}
    with serve_methods(mode, sync_methods, aio_methods) as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch, capture_events() as events:
        result = invoke(ch, kind, "x", [("traceparent", TRACEPARENT)])
    assert result.code is grpc.StatusCode.PERMISSION_DENIED
    assert result.call.details() == "handler said no"
    trailing = result.trailing()
    assert trailing["retry-hint"] == "later"
    assert trailing["x-trace-id"] == TRACE_ID
    assert rpc_status.from_call(result.call) is None  # not an application error
    assert events == []


# Not "aio-sync": there grpc.aio shows a sync handler the request stream simply ending
# (and, for bidi, keeps a worker thread blocked for a while), without errtrace too.
@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("kind", ["ClientStream", "BidiStream"])
@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_client_leaving_while_the_handler_reads_requests_is_not_an_error(
    mode: str, kind: str, how: str
) -> None:
    """The client cancels, or its deadline passes, while the handler is still reading
    the request stream: nothing to record (as for a dropped response stream)."""
    from google.protobuf.wrappers_pb2 import StringValue

    reading = threading.Event()
    stop = threading.Event()

    def count(requests: Any) -> StringValue:
        n = 0
        for _ in requests:
            n += 1
            reading.set()
        return StringValue(value=str(n))

    def sync_bidi(requests: Any, ctx: Any) -> Iterator[Any]:
        yield count(requests)

    async def acount(requests: Any) -> StringValue:
        n = 0
        async for _ in requests:
            n += 1
            reading.set()
        return StringValue(value=str(n))

    async def aio_client_stream(requests: Any, ctx: Any) -> Any:
        return await acount(requests)

    async def aio_bidi(requests: Any, ctx: Any) -> Any:
        yield await acount(requests)

    def slow_requests() -> Iterator[StringValue]:
        while not stop.is_set():
            yield StringValue(value="x")
            stop.wait(0.05)

    sync_methods = {"ClientStream": lambda reqs, ctx: count(reqs), "BidiStream": sync_bidi}
    aio_methods = {"ClientStream": aio_client_stream, "BidiStream": aio_bidi}
    ser, de = StringValue.SerializeToString, StringValue.FromString
    timeout = 0.5 if how == "deadline" else 10
    # Leaving the server waits for its handler threads: whatever they record is in.
    with capture_events() as events, serve_methods(
        mode, sync_methods, aio_methods
    ) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        path = f"/test.Echo/{kind}"
        if kind == "ClientStream":
            call: Any = ch.stream_unary(path, request_serializer=ser,
                                        response_deserializer=de).future(
                slow_requests(), metadata=(("traceparent", TRACEPARENT),), timeout=timeout)
        else:
            call = ch.stream_stream(path, request_serializer=ser, response_deserializer=de)(
                slow_requests(), metadata=(("traceparent", TRACEPARENT),), timeout=timeout)
        assert reading.wait(5)
        if how == "cancel":
            call.cancel()
        expected = (grpc.StatusCode.CANCELLED if how == "cancel"
                    else grpc.StatusCode.DEADLINE_EXCEEDED)
        assert call.code() is expected
        stop.set()
        again = invoke(ch, "ClientStream", "x")  # the server still serves
    assert again.error is None
    assert events == []


# --- what a status message can hold -------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["x" * 20000, "日本語のエラー" * 2000], ids=["ascii", "multibyte"]
)
def test_long_message_is_cut_and_the_error_still_arrives(mode: str, text: str) -> None:
    """Past gRPC's metadata limit the client would get RESOURCE_EXHAUSTED and lose the
    error; the message is cut instead, the same in grpc-message and the rich status."""

    def sync_unary(req: Any, ctx: Any) -> Any:
        if req.value == "app":
            raise errtrace.AppError("VALIDATION_FAILED", text)
        raise RuntimeError(text)

    async def aio_unary(req: Any, ctx: Any) -> Any:
        return sync_unary(req, ctx)

    md = [("traceparent", TRACEPARENT)]
    with serve_methods(mode, {"Unary": sync_unary}, {"Unary": aio_unary}, debug=True) as port, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        # A message over the limit fails only some of the time: try a few.
        results = [invoke(ch, "Unary", command, md) for command in ("app", "boom") * 3]
    for command, result in zip(("app", "boom") * 3, results, strict=True):
        if command == "app":
            assert result.code is grpc.StatusCode.INVALID_ARGUMENT
            prefix = ""
        else:  # debug: the exception's text is the message
            assert result.code is grpc.StatusCode.INTERNAL
            prefix = "RuntimeError: "
        details = result.call.details()
        assert details.endswith("...") and len(details) < len(prefix + text)
        assert (prefix + text).startswith(details[:-3])
        status, info, _retry = _rich(result)  # from_call checks the two messages are equal
        assert status.message == details
        assert info.reason == ("VALIDATION_FAILED" if command == "app" else "INTERNAL")
        assert result.trailing()["x-trace-id"] == TRACE_ID


def test_text_utf8_cannot_encode_is_replaced_in_the_status(mode: str) -> None:
    """A lone surrogate (a bad message, or a file name decoded with os.fsdecode) is sent
    as "?", the same in grpc-message and the rich status, instead of breaking the call."""
    import os

    def sync_unary(req: Any, ctx: Any) -> Any:
        if req.value == "app":
            raise errtrace.AppError("BAD_REQUEST", "bad \ud800 char")
        raise FileNotFoundError(os.fsdecode(b"caf\xff.txt"))

    async def aio_unary(req: Any, ctx: Any) -> Any:
        return sync_unary(req, ctx)

    with serve_methods(mode, {"Unary": sync_unary}, {"Unary": aio_unary}, debug=True) as port, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        app = invoke(ch, "Unary", "app")
        boom = invoke(ch, "Unary", "boom")
    assert app.code is grpc.StatusCode.INVALID_ARGUMENT
    assert app.call.details() == "bad ? char"
    assert _rich(app)[0].message == "bad ? char"
    assert boom.code is grpc.StatusCode.INTERNAL
    assert boom.call.details() == "FileNotFoundError: caf?.txt"
    assert _rich(boom)[1].reason == "INTERNAL"


# --- a fallback whose result is no response message ------------------------------------------


def _assert_answered_with_the_error(
    result: Any, events: list[Any], caplog: pytest.LogCaptureFixture, expected: str
) -> None:
    """The call got AI_MODEL_LOAD_FAILED's own rich status; the fallback counts as failed."""
    assert result.values == []
    assert result.code is grpc.StatusCode.UNAVAILABLE
    assert result.call.details() == "safe message"  # no serializer text leaks
    trailing = result.trailing()
    assert trailing["x-error-code"] == "AI_MODEL_LOAD_FAILED"
    assert trailing["x-trace-id"] == TRACE_ID
    status, info, _retry = _rich(result)
    assert status.message == "safe message" and info.reason == "AI_MODEL_LOAD_FAILED"
    [event] = events
    assert event.fallback == "failed" and trailing["x-error-event-id"] == event.event_id
    assert errtrace.stats()["hook_failures"] == 1
    [record] = [r for r in caplog.records if "fallback for AI_MODEL_LOAD_FAILED" in r.getMessage()]
    assert record.levelname == "ERROR" and expected in record.getMessage()


@pytest.mark.parametrize("kind", KINDS)
def test_fallback_result_the_serializer_refuses_answers_with_the_error(
    mode: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's fallback returns a dict (an HTTP answer): on gRPC it is no response
    message, so the error's status answers instead of grpc's serialization failure."""
    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", lambda err, ctx: {"answer": "cached"})
    with serve(mode) as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch, capture_events() as events, caplog.at_level(logging.ERROR, logger="errtrace"):
        result = invoke(ch, kind, "app:AI_MODEL_LOAD_FAILED", [("traceparent", TRACEPARENT)])
    _assert_answered_with_the_error(
        result, events, caplog, "returned dict, not a message its response serializer accepts"
    )


@pytest.mark.parametrize("style", ["sync-eager", "aio-writer"])
def test_fallback_result_the_serializer_refuses_before_a_stream_starts(
    style: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The other ways a response stream fails before its first message: a sync handler
    that raises before it returns its iterator, and an aio handler that writes with
    ``context.write``. A fallback returning None is no message either."""
    from google.protobuf.wrappers_pb2 import StringValue

    async def writer(request: StringValue, context: Any) -> None:
        raise errtrace.AppError(request.value[4:], "safe message")

    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", lambda err, ctx: None)
    server = (
        sync_server(errtrace.grpc_server_interceptors(), _eager_stream_handler())
        if style == "sync-eager"
        else serve_methods("aio", {}, {"ServerStream": writer})
    )
    with server as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch, capture_events() as events, caplog.at_level(logging.ERROR, logger="errtrace"):
        result = invoke(
            ch, "ServerStream", "app:AI_MODEL_LOAD_FAILED", [("traceparent", TRACEPARENT)]
        )
    _assert_answered_with_the_error(result, events, caplog, "returned NoneType, not a message")


@pytest.mark.parametrize("kind", ["Unary", "ServerStream"])
def test_fallback_message_of_another_type_than_the_proto_declares(
    mode: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """protobuf's serializer takes a message of any type; when the method's proto is
    known (generated code imported), its response type decides. The right type is sent."""
    from google.protobuf.wrappers_pb2 import Int32Value, StringValue

    def sync_unary(request: StringValue, context: Any) -> StringValue:
        raise errtrace.AppError(request.value, "safe message")

    def sync_stream(request: StringValue, context: Any) -> Iterator[StringValue]:
        raise errtrace.AppError(request.value, "safe message")
        yield StringValue()  # a generator

    async def aio_unary(request: StringValue, context: Any) -> StringValue:
        raise errtrace.AppError(request.value, "safe message")

    async def aio_stream(request: StringValue, context: Any) -> AsyncIterator[StringValue]:
        raise errtrace.AppError(request.value, "safe message")
        yield StringValue()  # an async generator

    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", lambda err, ctx: Int32Value(value=7))
    errtrace.set_fallback("AI_GPU_OUT_OF_MEMORY", lambda err, ctx: StringValue(value="cached"))
    methods = {"Unary": aio_unary, "ServerStream": aio_stream} if mode == "aio" else {
        "Unary": sync_unary, "ServerStream": sync_stream,
    }
    handler = typed_handler(methods)
    server = (
        sync_server(errtrace.grpc_server_interceptors(), handler)
        if mode == "sync"
        else AioServerThread(errtrace.grpc_aio_server_interceptors(), handler)
    )
    md = [("traceparent", TRACEPARENT)]
    with server as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as ch, capture_events() as events, caplog.at_level(logging.ERROR, logger="errtrace"):
        wrong = _invoke_typed(ch, kind, "AI_MODEL_LOAD_FAILED", md)
        right = _invoke_typed(ch, kind, "AI_GPU_OUT_OF_MEMORY", md)
    assert right.error is None and right.values == ["cached"]
    assert events[1].fallback == "applied"
    _assert_answered_with_the_error(
        wrong, events[:1], caplog,
        f"returned Int32Value, not a google.protobuf.StringValue message (/test.Typed/{kind})",
    )


def _invoke_typed(ch: grpc.Channel, kind: str, command: str, md: Any) -> Any:
    """:func:`invoke` for :data:`TYPED_SERVICE` (``Unary`` or ``ServerStream``)."""
    from google.protobuf.wrappers_pb2 import StringValue

    ser, de = StringValue.SerializeToString, StringValue.FromString
    request = StringValue(value=command)
    if kind == "Unary":
        m = ch.unary_unary(typed_path(kind), request_serializer=ser, response_deserializer=de)
        try:
            response, call = m.with_call(request, metadata=md, timeout=10)
        except grpc.RpcError as exc:
            return Result([], exc)
        return Result([response.value], call=call)
    stream = ch.unary_stream(
        typed_path(kind), request_serializer=ser, response_deserializer=de
    )(request, metadata=md, timeout=10)
    values: list[str] = []
    try:
        values.extend(item.value for item in stream)
    except grpc.RpcError as exc:
        return Result(values, exc)
    return Result(values, call=stream)
