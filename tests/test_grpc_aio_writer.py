"""grpc.aio's reader/writer style: a streaming handler that writes with ``context.write``."""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf.wrappers_pb2 import StringValue
from grpc_status import rpc_status

import errtrace
from errtrace.core.events import events
from errtrace.testing import capture_events

from .conftest import TRACE_ID, TRACEPARENT
from .grpc_helpers import AioServerThread


def writer_handler() -> grpc.GenericRpcHandler:
    async def stream(request: StringValue, context: Any) -> None:
        ctx = errtrace.current()
        assert ctx is not None
        await context.write(StringValue(value=json.dumps(ctx.as_dict())))
        if request.value == "fail":
            raise errtrace.AppError("AI_INFERENCE_TIMEOUT")
        await context.write(StringValue(value="done"))

    return grpc.method_handlers_generic_handler("test.Writer", {
        "Stream": grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=StringValue.FromString,
            response_serializer=StringValue.SerializeToString,
        ),
    })


def call(port: int, command: str) -> tuple[list[str], Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    method = channel.unary_stream(
        "/test.Writer/Stream",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )
    got: list[str] = []
    responses = method(
        StringValue(value=command),
        metadata=(("traceparent", TRACEPARENT), ("x-biz-code", "tenant-3")),
        timeout=10,
    )
    try:
        for item in responses:
            got.append(item.value)
    except grpc.RpcError as exc:
        return got, exc
    finally:
        channel.close()
    return got, None


def test_writer_handler_sees_the_context_and_its_error_gets_rich_details() -> None:
    with AioServerThread(errtrace.grpc_aio_server_interceptors(), writer_handler()) as port:
        good, no_error = call(port, "ok")
        partial, error = call(port, "fail")
    assert no_error is None
    first = json.loads(good[0])
    assert (first["trace_id"], first["biz_code"], good[1]) == (TRACE_ID, "tenant-3", "done")
    assert len(partial) == 1 and error is not None
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    status = rpc_status.from_call(error)
    assert status is not None and status.details[0].type_url.endswith("google.rpc.ErrorInfo")
    recorded = [e for e in events.recent() if e.code == "AI_INFERENCE_TIMEOUT"]
    assert recorded and recorded[-1].trace_id == TRACE_ID


def fallback_writer_handler() -> grpc.GenericRpcHandler:
    """Writes ``request.value`` times, then fails with a code that has a fallback."""

    async def stream(request: StringValue, context: Any) -> None:
        for _ in range(int(request.value)):
            await context.write(StringValue(value="written"))
        raise errtrace.AppError("AI_MODEL_LOAD_FAILED")

    return grpc.method_handlers_generic_handler("test.Writer", {
        "Stream": grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=StringValue.FromString,
            response_serializer=StringValue.SerializeToString,
        ),
    })


def test_writer_error_after_a_write_ends_with_its_status_not_a_fallback() -> None:
    """As for a generator: once a message went out, a fallback message appended after it
    (and an OK status) would hide the error; the stream ends with the rich status."""
    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", lambda err, ctx: StringValue(value="cached"))
    with capture_events() as recorded, AioServerThread(
        errtrace.grpc_aio_server_interceptors(), fallback_writer_handler()
    ) as port:
        written, error = call(port, "2")
        replaced, no_error = call(port, "0")
    assert written == ["written", "written"]
    assert error is not None and error.code() is grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(error)
    assert status is not None and status.details[0].type_url.endswith("google.rpc.ErrorInfo")
    assert dict(error.trailing_metadata())["x-trace-id"] == TRACE_ID
    # Nothing written yet: the fallback's message is the whole stream.
    assert no_error is None and replaced == ["cached"]
    assert [(e.response_started, e.fallback) for e in recorded] == [
        (True, None), (False, "applied"),
    ]
