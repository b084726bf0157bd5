"""With an OpenTelemetry span active, errtrace uses its ids: logs, bodies and traces agree."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import errtrace
from errtrace.testing import capture_events

from .conftest import TRACE_ID, TRACEPARENT

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def traced_app(**options: Any) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = with_routes(errtrace.instrument(FastAPI(), **options))
    return OpenTelemetryMiddleware(app, tracer_provider=provider), exporter


def with_routes(app: FastAPI) -> FastAPI:
    """``/ctx`` answers the request's context, ``/fail`` raises a coded error."""

    @app.get("/ctx")
    async def ctx() -> dict[str, Any]:
        current = errtrace.current()
        assert current is not None
        return current.as_dict()

    @app.get("/fail")
    async def fail() -> None:
        raise errtrace.AppError("LLM_OVERLOADED")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("provider client crashed")

    return app


async def get(app: Any, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await c.get(path, headers={"traceparent": TRACEPARENT})


def server_span(exporter: InMemorySpanExporter) -> Any:
    spans = [s for s in exporter.get_finished_spans() if s.parent is not None]
    return next(s for s in spans if s.kind.name == "SERVER")


async def test_ids_come_from_the_active_span() -> None:
    app, exporter = traced_app()
    r = await get(app, "/ctx")
    span = server_span(exporter)
    body = r.json()
    assert body["trace_id"] == f"{span.context.trace_id:032x}" == TRACE_ID
    assert body["span_id"] == f"{span.context.span_id:016x}"
    assert body["parent_span_id"] == "1234567890123456"
    assert r.headers["x-trace-id"] == TRACE_ID


async def test_error_body_names_the_otel_span() -> None:
    app, exporter = traced_app()
    r = await get(app, "/fail")
    assert r.status_code == 503
    assert r.json()["span_id"] == f"{server_span(exporter).context.span_id:016x}"


async def test_an_answered_exception_is_recorded_on_the_server_span() -> None:
    # errtrace answers it before it could escape to OpenTelemetry's middleware, which
    # would have recorded it: errtrace puts it on the span instead, with the event id.
    app, exporter = traced_app()
    r = await get(app, "/boom")
    assert r.status_code == 500
    span = server_span(exporter)
    assert span.attributes["errtrace.code"] == "INTERNAL"
    assert span.attributes["errtrace.event_id"] == r.json()["event_id"]
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["errtrace.code"] == "INTERNAL"


async def test_a_coded_error_marks_the_span_without_an_exception_event() -> None:
    app, exporter = traced_app()
    r = await get(app, "/fail")
    span = server_span(exporter)
    assert span.attributes["errtrace.code"] == "LLM_OVERLOADED"
    assert span.attributes["errtrace.event_id"] == r.json()["event_id"]
    assert not [e for e in span.events if e.name == "exception"]


async def test_use_otel_false_leaves_the_span_unmarked() -> None:
    app, exporter = traced_app(use_otel=False)
    await get(app, "/boom")
    span = server_span(exporter)
    assert "errtrace.code" not in span.attributes
    assert not [e for e in span.events if e.name == "exception"]


async def test_use_otel_false_keeps_errtraces_own_span() -> None:
    app, exporter = traced_app(use_otel=False)
    r = await get(app, "/ctx")
    assert r.json()["trace_id"] == TRACE_ID
    assert r.json()["span_id"] != f"{server_span(exporter).context.span_id:016x}"


def otel_ids(exporter: InMemorySpanExporter) -> tuple[str, str]:
    [span] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


@pytest.mark.parametrize("inbound", [{"traceparent": TRACEPARENT}, {}])
async def test_an_otel_middleware_added_inside_errtrace_still_gives_the_ids(
    inbound: dict[str, str],
) -> None:
    # add_middleware puts OpenTelemetry's middleware inside errtrace's outer layer (that
    # one is always outermost): its span starts after errtrace read the headers.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = with_routes(errtrace.instrument(FastAPI()))
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for path in ("/ctx", "/fail"):
            exporter.clear()
            with capture_events() as events:
                r = await c.get(path, headers=inbound)
            trace_id, span_id = otel_ids(exporter)
            body = r.json()
            assert (body["trace_id"], body["span_id"]) == (trace_id, span_id)
            assert r.headers["x-trace-id"] == trace_id
            if inbound:
                assert trace_id == TRACE_ID
    [event] = events  # the /fail request's
    assert (event.trace_id, event.span_id) == (trace_id, span_id)


@pytest.mark.parametrize("inbound", [{"traceparent": TRACEPARENT}, {}])
def test_flask_takes_the_ids_of_an_otel_middleware_inside_errtrace(
    inbound: dict[str, str],
) -> None:
    from flask import Flask
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGI

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = Flask(__name__)
    app.wsgi_app = OtelWSGI(app.wsgi_app, tracer_provider=provider)  # type: ignore[method-assign]
    errtrace.instrument(app)  # wraps the OpenTelemetry middleware: errtrace is outside

    @app.get("/ctx")
    def ctx() -> dict[str, Any]:
        current = errtrace.current()
        assert current is not None
        return current.as_dict()

    @app.get("/fail")
    def fail() -> None:
        raise errtrace.AppError("LLM_OVERLOADED")

    client = app.test_client()
    for path in ("/ctx", "/fail"):
        exporter.clear()
        r = client.get(path, headers=inbound)
        r.close()  # the span ends, and errtrace's context is reset, when the body closes
        trace_id, span_id = otel_ids(exporter)
        body = r.get_json()
        assert (body["trace_id"], body["span_id"]) == (trace_id, span_id)
        assert r.headers["X-Trace-ID"] == trace_id
        if inbound:
            assert trace_id == TRACE_ID


def test_outgoing_headers_outside_a_request_continue_the_active_span() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("job") as span:
        sc = span.get_span_context()
        headers = errtrace.outgoing_headers()
    _, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert trace_id == f"{sc.trace_id:032x}"
    assert parent_id != f"{sc.span_id:016x}"  # a child span of the job's, for the call
    assert int(flags, 16) & 0x01  # the SDK samples it
    fresh = errtrace.outgoing_headers()["traceparent"].split("-")[1]
    assert fresh != trace_id  # outside the span: a trace of its own


# --- gRPC: OpenTelemetry's server interceptor listed before errtrace's -----------------


@pytest.mark.parametrize("kind", ["Unary", "ServerStream"])
def test_a_sync_grpc_span_gets_the_status_errtrace_answers_with(kind: str) -> None:
    """OpenTelemetry records a sync call's status from ``context.abort``: errtrace's
    answer must reach it, as a handler's own abort does."""
    import grpc
    from google.protobuf.wrappers_pb2 import StringValue
    from opentelemetry.instrumentation.grpc import server_interceptor

    from .grpc_helpers import echo_handler, path, sync_server

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def unary(request: Any, context: Any) -> Any:
        raise errtrace.AppError("AI_MODEL_LOAD_FAILED")

    def stream(request: Any, context: Any) -> Any:
        yield StringValue(value="first")
        raise errtrace.AppError("AI_MODEL_LOAD_FAILED")

    handler = echo_handler({"Unary": unary, "ServerStream": stream})
    interceptors = [server_interceptor(tracer_provider=provider),
                    *errtrace.grpc_server_interceptors(use_otel=True)]
    with sync_server(interceptors, handler) as port, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = (channel.unary_unary if kind == "Unary" else channel.unary_stream)(
            path(kind), request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            result = call(StringValue(value="x"), timeout=10)
            if kind == "ServerStream":
                list(result)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    [span] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert span.attributes["errtrace.code"] == "AI_MODEL_LOAD_FAILED"
