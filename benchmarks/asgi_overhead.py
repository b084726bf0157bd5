"""Per-request cost of errtrace's ASGI middleware against a bare Starlette app and peers.

Run:  .venv/bin/python benchmarks/asgi_overhead.py [--quick]

Five variants of one Starlette app (``GET /ok`` returns a small JSON, ``GET /boom``
raises ``RuntimeError``), each driven for both routes:

* ``bare``         Starlette alone; ``/boom`` gets ``ServerErrorMiddleware``'s plain-text
                   500, after which Starlette re-raises (caught and dropped here).
* ``errtrace``     ``errtrace.instrument(app)``; ``/boom`` gets a problem+json 500 and
                   nothing is re-raised.
* ``correlation``  ``asgi_correlation_id.CorrelationIdMiddleware`` (no inbound
                   ``X-Request-ID``, so it generates one, as for most requests).
* ``otel``         ``OpenTelemetryMiddleware`` with an SDK ``TracerProvider`` and a
                   ``SimpleSpanProcessor(InMemorySpanExporter())``, cleared after every
                   batch so memory stays flat.
* ``trivial``      a pure ASGI middleware setting one contextvar and adding one header.

Requests are made by awaiting the ASGI app directly in one event loop with prepared
scopes (realistic headers including a valid ``traceparent`` and ``X-Biz-Code``): no
sockets, no server, so the middleware cost is not drowned in network noise. Cases are
calibrated, warmed up, then run in interleaved rounds with a rotating order; the
median per-request time over the rounds is reported.

By default the ``errtrace`` logger (and ``starlette``'s) is disabled during the run:
this measures the middleware path, not log formatting and I/O. ``--server-log``
measures the error route as deployed instead: an unhandled error is logged once with
its stack either way, by errtrace itself or, for the other variants, by the ASGI server
that receives Starlette's re-raise (uvicorn logs "Exception in ASGI application" with
the stack); records are formatted and written to ``os.devnull``.

``--floor`` adds, on the error route, errtrace with the exception's translation, the
event's recording and the problem+json encoding replaced by results computed once
before the run: what remains is the middleware and the exception's way up the stack,
the part of the error path no faster recording or encoding can remove.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from _harness import (
    TIMERS,
    Result,
    added_micros,
    async_case,
    calibrate,
    environment,
    interleave,
    log,
    markdown_table,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import errtrace

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
HEADERS: list[tuple[bytes, bytes]] = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"python-httpx/0.28.1"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"traceparent", TRACEPARENT.encode()),
    (b"x-biz-code", b"checkout.v2"),
]

VARIANTS = ("bare", "errtrace", "correlation", "otel", "trivial")
LABELS = {
    "bare": "bare Starlette",
    "errtrace": "errtrace",
    "correlation": "asgi-correlation-id",
    "otel": "OpenTelemetry ASGI",
    "trivial": "trivial middleware",
}
ROUTES = {"success": "/ok", "error": "/boom"}

# Targets: (a) added cost <= asgi-correlation-id's, (b) <= 3x the trivial middleware's,
# (c) error path: problem+json total <= 1.5x Starlette's plain 500 total.
TRIVIAL_FACTOR = 3.0
ERROR_FACTOR = 1.5


# --- the app -------------------------------------------------------------------------


async def ok(request: Request) -> Response:
    return JSONResponse({"status": "ok", "items": [1, 2, 3]})


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


def make_app() -> Starlette:
    return Starlette(routes=[Route("/ok", ok), Route("/boom", boom)])


# --- the trivial comparison middleware -------------------------------------------------

request_tag: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bench_request_tag", default=None
)


class TrivialMiddleware:
    """Sets one contextvar for the request and adds one response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = request_tag.set("bench")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-bench", b"1")]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_tag.reset(token)


# --- variants ------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    app: ASGIApp
    teardown: Callable[[], object] | None = None
    marker: bytes | None = None
    """A response header this variant must add (checked before timing)."""


def build_variants() -> tuple[dict[str, Variant], Any]:
    from asgi_correlation_id import CorrelationIdMiddleware
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    bare = make_app()

    instrumented = errtrace.instrument(make_app())

    correlation = make_app()
    correlation.add_middleware(CorrelationIdMiddleware)

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel = make_app()
    otel.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)

    trivial = make_app()
    trivial.add_middleware(TrivialMiddleware)

    variants = {
        "bare": Variant("bare", bare),
        "errtrace": Variant("errtrace", instrumented, marker=b"x-trace-id"),
        "correlation": Variant("correlation", correlation, marker=b"x-request-id"),
        "otel": Variant("otel", otel, teardown=exporter.clear),
        "trivial": Variant("trivial", trivial, marker=b"x-bench"),
    }
    return variants, exporter


def build_floor() -> Variant:
    """errtrace whose runtime answers every error with one failure and one response
    computed before the run (see ``--floor``)."""
    app = errtrace.instrument(make_app(), config=errtrace.Config(service_name="floor"))
    runtime = app.state.errtrace_runtime
    ctx = runtime.start_pairs(HEADERS)
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        failure = runtime.fail(exc, ctx, transport="http", method="GET", route="/boom")
    status, pairs, body = runtime.http_error_bytes(failure.error, ctx)

    async def recorded(*args: object, **kwargs: object) -> object:
        return failure

    runtime.fail_async = recorded
    # a copy each time: the middleware appends content-length to the list
    runtime.http_error_bytes = lambda err, ctx: (status, list(pairs), body)
    return Variant("floor", app, marker=b"x-trace-id")


def make_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("10.0.0.1", 8000),
        "client": ("10.0.0.7", 51234),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": HEADERS,
    }


REQUEST_MESSAGE: Message = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return REQUEST_MESSAGE


async def discard(message: Message) -> None:
    return None


def make_batch(
    app: ASGIApp,
    path: str,
    timer: Callable[[], float] = time.perf_counter,
    server_log: logging.Logger | None = None,
) -> Callable[[int], Awaitable[float]]:
    """``batch(n)``: n requests to ``app``, timed. Starlette's re-raise is dropped, or,
    with ``server_log``, logged with its stack as an ASGI server does."""
    base = make_scope(path)

    async def batch(number: int) -> float:
        app_, base_, receive_, send_ = app, base, receive, discard
        start = timer()
        for _ in range(number):
            try:
                await app_(dict(base_), receive_, send_)
            except RuntimeError as exc:
                # ServerErrorMiddleware re-raises after its 500 (baselines only).
                if server_log is not None:
                    server_log.error("Exception in ASGI application\n", exc_info=exc)
        return timer() - start

    return batch


# --- checks before timing --------------------------------------------------------------


async def probe(app: ASGIApp, path: str) -> tuple[list[Message], BaseException | None]:
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    raised: BaseException | None = None
    try:
        await app(make_scope(path), receive, capture)
    except RuntimeError as exc:
        raised = exc
    return sent, raised


def check(loop: asyncio.AbstractEventLoop, variants: dict[str, Variant], exporter: Any) -> None:
    """Fail loudly if a variant does not answer as the comparison assumes."""
    for variant in variants.values():
        for route, path in ROUTES.items():
            sent, raised = loop.run_until_complete(probe(variant.app, path))
            start = next(m for m in sent if m["type"] == "http.response.start")
            headers = {k.lower(): v for k, v in start.get("headers", ())}
            body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
            ctype = headers.get(b"content-type", b"").decode()
            where = f"{variant.name} {path}"
            if route == "success":
                assert start["status"] == 200 and raised is None, where
                assert ctype == "application/json", (where, ctype)
            elif variant.name in ("errtrace", "floor"):
                assert start["status"] == 500 and raised is None, where
                assert ctype == "application/problem+json", (where, ctype)
                assert TRACE_ID.encode() in body, (where, body)
            else:
                assert start["status"] == 500 and raised is not None, where
                assert ctype.startswith("text/plain"), (where, ctype)
            # A 500 sent by ServerErrorMiddleware (outside every user middleware) does not
            # pass through the peers' send wrappers; errtrace answers inside its own.
            if variant.marker is not None and (
                route == "success" or variant.name in ("errtrace", "floor")
            ):
                assert variant.marker in headers, (where, sorted(headers))
            if variant.name in ("errtrace", "floor"):
                assert headers[b"x-trace-id"] == TRACE_ID.encode(), where
    spans = exporter.get_finished_spans()
    assert spans and all(f"{s.context.trace_id:032x}" == TRACE_ID for s in spans), spans
    exporter.clear()


# --- report ----------------------------------------------------------------------------


def us(seconds: float) -> float:
    return seconds * 1e6


def fmt_ratio(num: float, den: float) -> str:
    if den <= 0:
        return "n/a (denominator <= 0)"
    return f"{num / den:.2f}x"


def verdict(ok_: bool) -> str:
    return "PASS" if ok_ else "MISS"


def report(results: dict[str, dict[str, Result]], args: argparse.Namespace) -> None:
    med = {route: {v: us(results[route][v].median) for v in VARIANTS} for route in ROUTES}
    added = added_micros(results)

    print("## ASGI middleware overhead (per request, in-process)\n")
    print(
        environment(
            [
                "starlette",
                "errtrace",
                "asgi-correlation-id",
                "opentelemetry-sdk",
                "opentelemetry-instrumentation-asgi",
            ]
        )
    )
    print(
        f"\n{args.rounds} interleaved rounds (rotating order) after warm-up; median µs per "
        f"request ({args.timer} time); ASGI app awaited directly (no sockets). "
        + (
            "Unhandled errors logged with their stack as deployed (errtrace's record, or "
            "the ASGI server's for Starlette's re-raise), to os.devnull.\n"
            if args.server_log
            else "`errtrace` and `starlette` loggers disabled: the middleware path is "
            "measured, not log I/O.\n"
        )
    )
    rows = []
    for v in VARIANTS:
        s, e = results["success"][v], results["error"][v]
        rows.append(
            [
                LABELS[v],
                f"{med['success'][v]:.1f}",
                "—" if v == "bare" else f"{added['success'][v]:+.1f}",
                f"{med['error'][v]:.1f}",
                "—" if v == "bare" else f"{added['error'][v]:+.1f}",
                f"{100 * s.spread:.0f}% / {100 * e.spread:.0f}%",
            ]
        )
    print(
        markdown_table(
            ["variant", "success µs", "added µs", "error (500) µs", "added µs", "spread ok/err"],
            rows,
            ["l", "r", "r", "r", "r", "r"],
        )
    )
    print(
        "\nError route: bare/correlation/OTel/trivial answer with Starlette's plain-text 500"
        + (" (then re-raise, logged as a server does)" if args.server_log
           else " (then re-raise, dropped here)")
        + "; errtrace answers with problem+json and does not "
        "re-raise. Added = the median over the rounds of (variant - bare) in the same round. "
        "Spread = (max - min) / median over the rounds.\n"
    )

    ea = added["success"]["errtrace"]
    ratio_rows = [
        [
            "errtrace / asgi-correlation-id",
            fmt_ratio(ea, added["success"]["correlation"]),
            fmt_ratio(added["error"]["errtrace"], added["error"]["correlation"]),
        ],
        [
            "errtrace / trivial middleware",
            fmt_ratio(ea, added["success"]["trivial"]),
            fmt_ratio(added["error"]["errtrace"], added["error"]["trivial"]),
        ],
        [
            "errtrace / OpenTelemetry ASGI",
            fmt_ratio(ea, added["success"]["otel"]),
            fmt_ratio(added["error"]["errtrace"], added["error"]["otel"]),
        ],
    ]
    print(
        markdown_table(
            ["added-cost ratio", "success route", "error route"], ratio_rows, ["l", "r", "r"]
        )
    )
    err_total = results["error"]["errtrace"].ratio_to(results["error"]["bare"])
    print(
        f"\nError path total: errtrace problem+json {med['error']['errtrace']:.1f} µs / "
        f"Starlette plain 500 {med['error']['bare']:.1f} µs; per round, the median ratio "
        f"is {err_total:.2f}x\n"
    )

    floor = results["error"].get("floor")
    if floor is not None:
        bare_error = results["error"]["bare"]
        allowed = ERROR_FACTOR * med["error"]["bare"]
        work = 1e6 * results["error"]["errtrace"].added_over(floor)
        print(
            f"Floor: errtrace with the error's translation, recording and encoding "
            f"precomputed answers in {us(floor.median):.1f} µs "
            f"({floor.ratio_to(bare_error):.2f}x the plain 500, median of the per-round "
            f"ratios). The {ERROR_FACTOR:g}x budget ({allowed:.1f} µs) leaves "
            f"{allowed - us(floor.median):.1f} µs for that work; it costs {work:.1f} µs "
            f"here (errtrace minus the floor, paired by round).\n"
        )

    a = ea <= added["success"]["correlation"]
    b = ea <= TRIVIAL_FACTOR * added["success"]["trivial"]
    c = err_total <= ERROR_FACTOR
    print(
        f"{verdict(a)} (a) success path: errtrace added {ea:.1f} µs <= "
        f"asgi-correlation-id added {added['success']['correlation']:.1f} µs"
    )
    print(
        f"{verdict(b)} (b) success path: errtrace added {ea:.1f} µs <= {TRIVIAL_FACTOR:g} x "
        f"trivial middleware added {added['success']['trivial']:.1f} µs "
        f"(= {TRIVIAL_FACTOR * added['success']['trivial']:.1f} µs)"
    )
    mode = " (with the server's error log, as deployed)" if args.server_log else ""
    print(
        f"{verdict(c)} (c) error path{mode}: errtrace problem+json total {err_total:.2f}x "
        f"<= {ERROR_FACTOR:g}x Starlette's plain 500"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~10 s)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument(
        "--timer",
        choices=sorted(TIMERS),
        default="wall",
        help="wall clock (default) or this process's CPU time (steadier on a busy machine)",
    )
    parser.add_argument(
        "--batch-seconds", type=float, default=None, help="target time of one batch"
    )
    parser.add_argument(
        "--server-log",
        action="store_true",
        help="log each unhandled error with its stack, as deployed: errtrace's own log "
        "record, and for the others the record an ASGI server (uvicorn) writes for the "
        "exception Starlette re-raises; records are formatted and written to os.devnull",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time, on the error route, errtrace with the error's translation, "
        "recording and encoding replaced by precomputed results (the floor)",
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (5 if args.quick else 7)
    args.batch_seconds = args.batch_seconds or (0.06 if args.quick else 0.25)

    server_log: logging.Logger | None = None
    if args.server_log:
        sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 (process-long)
        sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        server_log = logging.getLogger("bench.asgi_server")
        for name in ("errtrace", server_log.name):
            logger = logging.getLogger(name)
            logger.addHandler(sink)
            logger.setLevel(logging.INFO)
            logger.propagate = False
    else:
        logging.getLogger("errtrace").disabled = True
    logging.getLogger("starlette").disabled = True

    began = time.perf_counter()
    loop = asyncio.new_event_loop()
    try:
        variants, exporter = build_variants()
        if args.floor:
            variants["floor"] = build_floor()
        check(loop, variants, exporter)
        results: dict[str, dict[str, Result]] = {}
        for route, path in ROUTES.items():
            cases = {
                v: async_case(
                    loop,
                    make_batch(variants[v].app, path, TIMERS[args.timer], server_log),
                    teardown=variants[v].teardown,
                )
                for v in VARIANTS + (("floor",) if args.floor and route == "error" else ())
            }
            for run in cases.values():  # first requests: build middleware stacks, caches
                run(50)
            numbers = {v: calibrate(run, args.batch_seconds) for v, run in cases.items()}
            log(f"{route}: requests per batch {numbers}")
            results[route] = interleave(
                cases,
                numbers,
                rounds=args.rounds,
                warmup=1,
                progress=lambda msg, r=route: log(f"{r}: {msg}"),
            )
    finally:
        loop.close()
    report(results, args)
    log(f"total run time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
