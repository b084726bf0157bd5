"""The errtrace demo: three services on 127.0.0.1, one error context across every hop.

    gateway (FastAPI) --HTTP/httpx--> orchestrator (Flask) --gRPC--> model (grpc.aio)

It sends a scripted mix of good and failing requests and prints, for each, what the
client got back (status, code, level, trace id, event id) and what every hop did (its
span and parent span, and the error it recorded). Nothing to configure: run
``make demo`` (or ``python examples/demo.py [--model sync]``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no C-core INFO lines at shutdown

from errtrace.core.events import events
from examples.chain.runner import Chain
from examples.chain.trail import Collector

SCRIPT: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("a good request, continuing the caller's trace",
     {"prompt": "hello"},
     {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "x-biz-code": "tenant-42"}),
    ("the provider rate-limits the model service (3 hops down)",
     {"prompt": "rate"}, {"x-biz-code": "tenant-42"}),
    ("the provider answers in free text: classified at the model",
     {"prompt": "long"}, {"baggage": "biz.code=payments,region=eu"}),
    ("an unhandled exception at the bottom: nothing leaks",
     {"prompt": "crash"}, {"x-biz-code": "tenant-7"}),
    ("invalid input, stopped at the gateway",
     {"prompt": ""}, {}),
    ("an invalid traceparent and biz code: new trace, biz code dropped",
     {"prompt": "hi"},
     {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "x-biz-code": "not a valid code!"}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description="errtrace: three services, one context")
    parser.add_argument("--model", choices=("aio", "sync"), default="aio",
                        help="run the gRPC model service on grpc.aio (default) or sync grpc")
    args = parser.parse_args()

    collector = Collector()
    chain_log = logging.getLogger("chain")
    chain_log.addHandler(collector)
    chain_log.setLevel(logging.INFO)
    chain_log.propagate = False
    for name in ("errtrace", "werkzeug", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the demo prints its own view

    print("errtrace demo: gateway (FastAPI) -> orchestrator (Flask, httpx) -> model (gRPC "
          f"{args.model}), all on 127.0.0.1\n")
    with Chain(args.model) as chain, httpx.Client(base_url=chain.gateway_url, timeout=10) as c:
        for number, (title, body, headers) in enumerate(SCRIPT, 1):
            response = c.post("/chat", json=body, headers=headers)
            show(number, title, body, headers, response, collector)
    print("all services stopped.")
    return 0


def show(
    number: int, title: str, body: dict[str, Any], headers: dict[str, str],
    response: httpx.Response, collector: Collector,
) -> None:
    trace_id = response.headers.get("x-trace-id", "-")
    sent = ", ".join(f"{k}: {v}" for k, v in headers.items()) or "no context headers"
    print(f"{number}. {title}")
    print(f"   POST /chat {body}   [{sent}]")
    if response.status_code < 400:
        print(f"   client got {response.status_code}  {response.json()}")
    else:
        problem = response.json()
        print(f"   client got {response.status_code} {response.headers['content-type']}: "
              f"code={problem['code']} level={problem['level']} event={problem['event_id']}")
        print(f"     detail: {problem['detail']}")
        for link in problem.get("caused_by", []):
            print(f"     caused by {link.get('service')}: {link['code']} "
                  f"(event {link.get('event_id')})")
    print(f"   trace {trace_id}")
    recorded = {e.service: e for e in events.recent() if e.trace_id == trace_id}
    first: dict[str, logging.LogRecord] = {}
    calls: dict[str, set[str]] = {}  # the span ids each hop handed to its outgoing calls
    for record in collector.for_trace(trace_id):
        service = record.service  # type: ignore[attr-defined]
        first.setdefault(service, record)
        calls.setdefault(service, set()).update(record.outgoing_spans)  # type: ignore[attr-defined]
    for service, event in recorded.items():
        calls.setdefault(service, set()).update(event.outgoing_spans)
    seen = list(first)
    for number_in_chain, service in enumerate(seen):
        record = first[service]
        parent = record.parent_span_id  # type: ignore[attr-defined]
        caller = seen[number_in_chain - 1] if number_in_chain else "client"
        if parent is None:
            link = "no parent: the trace starts here"
        elif parent in calls.get(caller, ()):
            link = f"parent {parent}: the span {caller} made for this call"
        else:
            link = f"parent {parent}: the {caller}'s span"
        event = recorded.get(service)
        if event is None:
            outcome = "ok"
        elif event.transport == "grpc":
            outcome = f"{event.code} -> gRPC {event.grpc_status}"
        else:
            outcome = f"{event.code} -> HTTP {event.http_status}"
        print(f"     {service:<13} span {record.span_id}  biz "  # type: ignore[attr-defined]
              f"{record.biz_code or '-':<9}  {outcome}")  # type: ignore[attr-defined]
        print(f"     {'':<13} {link}")
    if not seen and trace_id in {e.trace_id for e in events.recent()}:
        event = next(e for e in events.recent() if e.trace_id == trace_id)
        print(f"     {event.service:<13} span {event.span_id} stopped it: {event.code}")
    print()


if __name__ == "__main__":
    sys.exit(main())
