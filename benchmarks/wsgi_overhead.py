"""Per-request cost of errtrace's WSGI/Flask instrumentation against bare Flask and OTel.

Run:  .venv/bin/python benchmarks/wsgi_overhead.py [--quick]

Three variants of one Flask app (``GET /ok`` returns a small JSON, ``GET /boom`` raises
``RuntimeError``), each driven for both routes:

* ``bare``      Flask alone; ``/boom`` gets Flask's own HTML 500.
* ``errtrace``  ``errtrace.instrument(app)``: the WSGI middleware around ``wsgi_app`` plus
                Flask error handlers; ``/boom`` gets a problem+json 500.
* ``otel``      ``opentelemetry.instrumentation.wsgi.OpenTelemetryMiddleware`` around
                ``wsgi_app`` with an SDK ``TracerProvider`` and a
                ``SimpleSpanProcessor(InMemorySpanExporter())``, cleared after every batch
                so memory stays flat; ``/boom`` gets Flask's HTML 500 (span marked error).

Requests are made by calling the WSGI app directly with a copy of an environ prepared
by werkzeug's ``EnvironBuilder`` (realistic headers including a valid ``traceparent``
and ``X-Biz-Code``), iterating and closing the body as a server does: no sockets, so the
middleware cost is not drowned in network noise. Cases are calibrated, warmed up, then
run in interleaved rounds with a rotating order; the median per-request time over the
rounds is reported.

The ``errtrace`` logger and the Flask app's logger are disabled during the run, as in
``asgi_overhead.py``: this measures the request path, not log formatting and I/O (each
variant would otherwise log one stack trace per failed request).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from _harness import (
    Result,
    added_micros,
    calibrate,
    environment,
    interleave,
    log,
    markdown_table,
)
from flask import Flask
from werkzeug.test import EnvironBuilder

import errtrace

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
HEADERS = {
    "Host": "api.example.com",
    "User-Agent": "python-httpx/0.28.1",
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "traceparent": TRACEPARENT,
    "X-Biz-Code": "checkout.v2",
}

VARIANTS = ("bare", "errtrace", "otel")
LABELS = {"bare": "bare Flask", "errtrace": "errtrace", "otel": "OpenTelemetry WSGI"}
ROUTES = {"success": "/ok", "error": "/boom"}


def make_app() -> Flask:
    app = Flask("bench")
    app.logger.disabled = True

    @app.get("/ok")
    def ok() -> Any:
        return {"status": "ok", "items": [1, 2, 3]}

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("boom")

    return app


@dataclass
class Variant:
    name: str
    app: WSGIApp
    teardown: Callable[[], object] | None = None


def build_variants() -> tuple[dict[str, Variant], Any]:
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    bare = make_app()
    instrumented = errtrace.instrument(make_app())

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel = make_app()
    otel.wsgi_app = OpenTelemetryMiddleware(  # type: ignore[method-assign]
        otel.wsgi_app, tracer_provider=provider
    )
    variants = {
        "bare": Variant("bare", bare),
        "errtrace": Variant("errtrace", instrumented),
        "otel": Variant("otel", otel, teardown=exporter.clear),
    }
    return variants, exporter


def make_environ(path: str) -> dict[str, Any]:
    builder = EnvironBuilder(path=path, headers=HEADERS)
    try:
        return builder.get_environ()
    finally:
        builder.close()


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return _write


def _write(data: bytes) -> None:
    return None


def call(app: WSGIApp, environ: dict[str, Any]) -> tuple[list[tuple[str, Any]], bytes]:
    """One request as a server makes it: status/headers, the body, then ``close()``."""
    started: list[tuple[str, Any]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return _write

    body = app(dict(environ), start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return started, data


def make_case(variant: Variant, path: str) -> Callable[[int], float]:
    base = make_environ(path)

    def run(number: int) -> float:
        app, env, start_response = variant.app, base, _start_response
        begin = time.perf_counter()
        for _ in range(number):
            body = app(dict(env), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        elapsed = time.perf_counter() - begin
        if variant.teardown is not None:
            variant.teardown()
        return elapsed

    return run


def check(variants: dict[str, Variant], exporter: Any) -> None:
    """Fail loudly if a variant does not answer as the comparison assumes."""
    for variant in variants.values():
        for route, path in ROUTES.items():
            started, body = call(variant.app, make_environ(path))
            status, raw_headers = started[-1]
            headers = {k.lower(): v for k, v in raw_headers}
            ctype = headers.get("content-type", "")
            where = f"{variant.name} {path}"
            if route == "success":
                assert status.startswith("200") and ctype == "application/json", where
            else:
                assert status.startswith("500"), (where, status)
                expected = "application/problem+json" if variant.name == "errtrace" else "text/html"
                assert ctype.startswith(expected), (where, ctype)
            if variant.name == "errtrace":
                assert headers["x-trace-id"] == TRACE_ID, where
                if route == "error":
                    assert TRACE_ID.encode() in body, where
    spans = exporter.get_finished_spans()
    assert spans and all(f"{s.context.trace_id:032x}" == TRACE_ID for s in spans), spans
    exporter.clear()


def us(seconds: float) -> float:
    return seconds * 1e6


def report(results: dict[str, dict[str, Result]], args: argparse.Namespace) -> bool:
    med = {route: {v: us(results[route][v].median) for v in VARIANTS} for route in ROUTES}
    added = added_micros(results)

    print("## WSGI / Flask instrumentation overhead (per request, in-process)\n")
    print(
        environment(
            ["flask", "werkzeug", "errtrace", "opentelemetry-sdk",
             "opentelemetry-instrumentation-wsgi"]
        )
    )
    print(
        f"\n{args.rounds} interleaved rounds (rotating order) after warm-up; median µs per "
        "request; WSGI app called directly with a prepared environ (no sockets). `errtrace` "
        "and Flask app loggers disabled: the request path is measured, not log I/O.\n"
    )
    rows = []
    for route in ROUTES:
        for v in VARIANTS:
            result = results[route][v]
            rows.append([
                route,
                LABELS[v],
                f"{med[route][v]:.1f}",
                f"{results[route][v].ratio_to(results[route]['bare']):.2f}x",
                "—" if v == "bare" else f"{added[route][v]:+.1f}",
                f"{100 * result.spread:.0f}%",
            ])
    print(
        markdown_table(
            ["route", "variant", "median µs/req", "vs bare", "added µs", "spread"],
            rows,
            ["l", "l", "r", "r", "r", "r"],
        )
    )
    print(
        "\nError route: bare and OTel answer with Flask's HTML 500; errtrace answers with "
        "problem+json (event recorded, hooks run). Added = the median over the rounds of "
        "(variant - bare) in the same round. Spread = (max - min) / median over the rounds.\n"
    )
    ok = True
    for route in ROUTES:
        e, o = added[route]["errtrace"], added[route]["otel"]
        passed = e < o
        ok = ok and passed
        print(
            f"{'PASS' if passed else 'MISS'} {route}: errtrace adds {e:.1f} µs, "
            f"OpenTelemetry WSGI adds {o:.1f} µs"
            + (f" ({e / o:.2f}x)" if o > 0 else "")
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~10 s)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument(
        "--batch-seconds", type=float, default=None, help="target time of one batch"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (5 if args.quick else 9)
    args.batch_seconds = args.batch_seconds or (0.06 if args.quick else 0.4)

    logging.getLogger("errtrace").disabled = True

    began = time.perf_counter()
    variants, exporter = build_variants()
    check(variants, exporter)
    results: dict[str, dict[str, Result]] = {}
    for route, path in ROUTES.items():
        cases = {v: make_case(variants[v], path) for v in VARIANTS}
        for run in cases.values():  # first requests: build caches, code objects
            run(50)
        numbers = {v: calibrate(run, args.batch_seconds) for v, run in cases.items()}
        log(f"{route}: requests per batch {numbers}")
        results[route] = interleave(
            cases, numbers, rounds=args.rounds, warmup=1,
            progress=lambda msg, r=route: log(f"{r}: {msg}"),
        )
    report(results, args)
    log(f"total run time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
