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

from .conftest import TRACE_ID, TRACEPARENT

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def traced_app(**options: Any) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = errtrace.instrument(FastAPI(), **options)

    @app.get("/ctx")
    async def ctx() -> dict[str, Any]:
        current = errtrace.current()
        assert current is not None
        return current.as_dict()

    @app.get("/fail")
    async def fail() -> None:
        raise errtrace.AppError("LLM_OVERLOADED")

    return OpenTelemetryMiddleware(app, tracer_provider=provider), exporter


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


async def test_use_otel_false_keeps_errtraces_own_span() -> None:
    app, exporter = traced_app(use_otel=False)
    r = await get(app, "/ctx")
    assert r.json()["trace_id"] == TRACE_ID
    assert r.json()["span_id"] != f"{server_span(exporter).context.span_id:016x}"
