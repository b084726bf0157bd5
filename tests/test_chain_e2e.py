"""The proof: real servers on 127.0.0.1, three hops, one error context.

client -> gateway (FastAPI, uvicorn) -> orchestrator (Flask, werkzeug, via errtrace's
httpx client) -> model (gRPC aio or sync, via errtrace's client interceptors).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from errtrace.core.events import ErrorEvent, events
from examples.chain.runner import Chain
from examples.chain.trail import Collector

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
HEADERS = {"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01", "x-biz-code": "tenant-42"}
SERVICES = ("gateway", "orchestrator", "model")


@pytest.fixture(params=["aio", "sync"], scope="module")
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    with Chain(request.param) as running:
        yield running


@pytest.fixture
def trail() -> Iterator[Collector]:
    collector = Collector()
    log = logging.getLogger("chain")
    log.addHandler(collector)
    log.setLevel(logging.INFO)
    try:
        yield collector
    finally:
        log.removeHandler(collector)


def post(chain: Chain, prompt: str) -> httpx.Response:
    return httpx.post(
        chain.gateway_url + "/chat", json={"prompt": prompt}, headers=HEADERS, timeout=10
    )


def hops(trail: Collector) -> dict[str, list[logging.LogRecord]]:
    out: dict[str, list[logging.LogRecord]] = {s: [] for s in SERVICES}
    for record in trail.records:
        out[record.service].append(record)  # type: ignore[attr-defined]
    return out


def events_by_service(trace_id: str) -> dict[str, ErrorEvent]:
    return {e.service: e for e in events.recent() if e.trace_id == trace_id}


def assert_one_context(trail: Collector, outgoing: dict[str, list[str]]) -> None:
    """Every hop logged the same trace and biz code, with its own span whose parent is a
    span its caller handed to that very call."""
    by_hop = hops(trail)
    first = {s: by_hop[s][0] for s in SERVICES}
    for record in trail.records:
        assert record.trace_id == TRACE  # type: ignore[attr-defined]
        assert record.biz_code == "tenant-42"  # type: ignore[attr-defined]
    spans = {s: first[s].span_id for s in SERVICES}  # type: ignore[attr-defined]
    assert len(set(spans.values())) == 3
    assert first["gateway"].parent_span_id == CALLER_SPAN  # type: ignore[attr-defined]
    assert first["orchestrator"].parent_span_id in outgoing["gateway"]  # type: ignore[attr-defined]
    assert first["model"].parent_span_id in outgoing["orchestrator"]  # type: ignore[attr-defined]


def test_good_request_crosses_three_hops(chain: Chain, trail: Collector) -> None:
    r = post(chain, "hello")
    assert r.status_code == 200 and r.json()["answer"] == "echo: hello"
    assert r.headers["x-trace-id"] == TRACE
    by_hop = hops(trail)
    outgoing = {s: by_hop[s][-1].outgoing_spans for s in ("gateway", "orchestrator")}  # type: ignore[attr-defined]
    assert_one_context(trail, outgoing)


def check_failure(r: httpx.Response, trail: Collector, code: str, status: int) -> dict[str, Any]:
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-error-code"] == code and r.headers["x-trace-id"] == TRACE
    body = r.json()
    assert body["code"] == code and body["trace_id"] == TRACE and body["biz_code"] == "tenant-42"
    recorded = events_by_service(TRACE)
    assert set(recorded) == set(SERVICES)
    # Each hop recorded the same code; the client's body links the two hops below it.
    assert {e.code for e in recorded.values()} == {code}
    assert body["event_id"] == recorded["gateway"].event_id
    assert [(link["service"], link["event_id"]) for link in body["caused_by"]] == [
        ("orchestrator", recorded["orchestrator"].event_id),
        ("model", recorded["model"].event_id),
    ]
    assert recorded["orchestrator"].caused_by[0]["event_id"] == recorded["model"].event_id
    outgoing = {s: recorded[s].outgoing_spans for s in ("gateway", "orchestrator")}
    assert_one_context(trail, outgoing)
    for service in SERVICES:
        assert recorded[service].span_id == hops(trail)[service][0].span_id  # type: ignore[attr-defined]
    return body


def test_rate_limit_three_hops_down_reaches_the_client_as_429(
    chain: Chain, trail: Collector
) -> None:
    events.clear()
    body = check_failure(post(chain, "rate"), trail, "LLM_RATE_LIMITED", 429)
    assert body["retryable"] is True and body["level"] == 2
    assert body["retry_after"] == 2.0


def test_unhandled_exception_at_the_bottom_is_internal_and_leaks_nothing(
    chain: Chain, trail: Collector
) -> None:
    events.clear()
    r = post(chain, "crash")
    body = check_failure(r, trail, "INTERNAL", 500)
    for secret in ("CUDA", "illegal memory", "/secret/path", "RuntimeError"):
        assert secret not in r.text
    assert body["level"] == 1
    # ... but the model's own event keeps it, server side.
    model_event = events_by_service(TRACE)["model"]
    assert model_event.private_exception is not None and "CUDA" in model_event.private_exception


def test_free_text_provider_error_is_classified_and_carried_up(
    chain: Chain, trail: Collector
) -> None:
    events.clear()
    body = check_failure(post(chain, "long"), trail, "LLM_CONTEXT_LENGTH_EXCEEDED", 400)
    assert body["level"] == 3 and body["retryable"] is False
