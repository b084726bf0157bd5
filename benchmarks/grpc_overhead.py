"""Server-side overhead of errtrace's gRPC interceptors against two peers, in one run.

For a sync (``grpc.server``) and an aio (``grpc.aio.server``) server, each of:

* ``bare``             no interceptor
* ``errtrace``         ``errtrace.grpc_server_interceptors()`` / ``grpc_aio_server_interceptors()``
* ``otel``             OpenTelemetry's ``server_interceptor()`` / ``aio_server_interceptor()``
                       (SDK ``TracerProvider`` + ``SimpleSpanProcessor(InMemorySpanExporter)``)
* ``grpc-interceptor`` ``ExceptionToStatusInterceptor`` / ``AsyncExceptionToStatusInterceptor``
* ``wire floor``       no interceptor; ``Fail`` and ``Mapped`` abort with a status built once
                       at start-up (with ``grpc_status``, not errtrace) that has the same
                       trailers as errtrace's answer: ``grpc-status-details-bin`` holding
                       ``ErrorInfo`` and ``RetryInfo``, ``x-error-code``, ``x-error-level``,
                       ``x-error-event-id``, ``x-trace-id``. It is not a peer: it measures
                       what sending and reading that answer costs, without the Python work
                       that builds it per call.

serves three unary methods over ``StringValue`` messages (not raw bytes: grpc-interceptor
takes any iterable response, bytes included, for a stream):

* ``Ok`` returns the request.
* ``Fail`` raises ``ConnectionError``, an exception no peer knows; each answers it its own
  way: errtrace maps it to UNAVAILABLE with rich details, grpc-interceptor re-raises it
  and grpc answers UNKNOWN, OpenTelemetry records it and grpc answers UNKNOWN.
* ``Mapped`` answers UNAVAILABLE the way each variant's users would write it: ``bare``
  and ``otel`` call ``context.abort(UNAVAILABLE, ...)`` in the handler, grpc-interceptor's
  handler raises its ``Unavailable`` exception, errtrace's raises
  ``AppError("UPSTREAM_UNAVAILABLE")``. Every variant then does the work of turning a
  failure into a status; the client checks that each answers UNAVAILABLE.

A plain sync client makes ``--calls`` blocking calls per batch over a real 127.0.0.1
channel. In each of ``--reps`` reps, the variants of one server kind and method run
back to back in a random order. The median µs/call is reported, and, paired with the
``bare`` batch of the same rep, the median ratio to it and the median µs added.

The client runs in a separate Python process, as a real caller would, so that its own
Python work does not compete with the servers' for one GIL (``--same-process`` puts it
back in the servers' process). Each call's latency still includes the client's cost of
reading what the server sent (one more trailer is one more thing to read).

Logging is switched off for everyone (grpc logs every unhandled exception; errtrace logs
every error) so that the numbers measure the interceptors, not the log handler.

Run: ``.venv/bin/python benchmarks/grpc_overhead.py`` (about 30-60 s on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from typing import Any, NamedTuple

import grpc
import grpc.aio
from _harness import paired_median
from google.protobuf.wrappers_pb2 import StringValue

SERVICE = "bench.Svc"
TRACE_ID = "12345678901234567890123456789012"
TRACEPARENT = f"00-{TRACE_ID}-1234567890123456-01"


def _ok(request: StringValue, context: Any) -> StringValue:
    return request


def _fail(request: StringValue, context: Any) -> StringValue:
    raise ConnectionError("database at 10.0.0.7 refused the connection")


async def _aok(request: StringValue, context: Any) -> StringValue:
    return request


async def _afail(request: StringValue, context: Any) -> StringValue:
    raise ConnectionError("database at 10.0.0.7 refused the connection")


MAPPED_TEXT = "the database is unavailable"


def _abort(request: StringValue, context: Any) -> StringValue:
    context.abort(grpc.StatusCode.UNAVAILABLE, MAPPED_TEXT)
    raise AssertionError("abort returns only by raising")


async def _aabort(request: StringValue, context: Any) -> StringValue:
    await context.abort(grpc.StatusCode.UNAVAILABLE, MAPPED_TEXT)
    raise AssertionError("abort returns only by raising")


def _raise_app_error(request: StringValue, context: Any) -> StringValue:
    import errtrace

    raise errtrace.AppError("UPSTREAM_UNAVAILABLE", MAPPED_TEXT)


async def _araise_app_error(request: StringValue, context: Any) -> StringValue:
    import errtrace

    raise errtrace.AppError("UPSTREAM_UNAVAILABLE", MAPPED_TEXT)


def _raise_unavailable(request: StringValue, context: Any) -> StringValue:
    from grpc_interceptor.exceptions import Unavailable

    raise Unavailable(MAPPED_TEXT)


async def _araise_unavailable(request: StringValue, context: Any) -> StringValue:
    from grpc_interceptor.exceptions import Unavailable

    raise Unavailable(MAPPED_TEXT)


class _Prebuilt(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _PrebuiltStatus(_Prebuilt, grpc.Status):
    """A ``grpc.Status`` for ``context.abort_with_status``."""


def _prebuilt_status() -> _PrebuiltStatus:
    """UNAVAILABLE with the trailers errtrace answers it with, built once by hand."""
    from google.protobuf.duration_pb2 import Duration
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    info = error_details_pb2.ErrorInfo(
        reason="UPSTREAM_UNAVAILABLE",
        domain="errtrace.dev",
        metadata={"level": "2", "traceId": FLOOR_IDS["trace"], "spanId": FLOOR_IDS["span"],
                  "eventId": FLOOR_IDS["event"], "service": "bench"},
    )
    retry = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=1))
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=MAPPED_TEXT)
    for detail in (info, retry):
        status.details.add().Pack(detail)
    rich = rpc_status.to_status(status)
    own = (("x-error-code", "UPSTREAM_UNAVAILABLE"), ("x-error-level", "2"),
           ("x-error-event-id", FLOOR_IDS["event"]), ("x-trace-id", FLOOR_IDS["trace"]))
    return _PrebuiltStatus(rich.code, rich.details, (*rich.trailing_metadata, *own))


FLOOR_IDS = {"trace": TRACE_ID, "span": "2010c32fdcd9a2ea", "event": "01M816FG67NC6F5TH4Q80ZGD6W"}
FLOOR_STATUS = _prebuilt_status()


def _abort_prebuilt(request: StringValue, context: Any) -> StringValue:
    context.abort_with_status(FLOOR_STATUS)
    raise AssertionError("abort returns only by raising")


async def _aabort_prebuilt(request: StringValue, context: Any) -> StringValue:
    status = FLOOR_STATUS
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returns only by raising")


# How each variant's handler answers UNAVAILABLE, as its users would write it.
MAPPED = {
    "sync": {"errtrace": _raise_app_error, "grpc-interceptor": _raise_unavailable},
    "aio": {"errtrace": _araise_app_error, "grpc-interceptor": _araise_unavailable},
}
METHODS = ("Ok", "Fail", "Mapped")
FLOOR = "wire floor"


def _handler(mode: str, variant: str) -> grpc.GenericRpcHandler:
    if mode == "sync":
        ok, fail, mapped = _ok, _fail, MAPPED["sync"].get(variant, _abort)
        if variant == FLOOR:
            fail = mapped = _abort_prebuilt
    else:
        ok, fail, mapped = _aok, _afail, MAPPED["aio"].get(variant, _aabort)
        if variant == FLOOR:
            fail = mapped = _aabort_prebuilt
    return grpc.method_handlers_generic_handler(SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=StringValue.FromString,
            response_serializer=StringValue.SerializeToString,
        )
        for name, fn in (("Ok", ok), ("Fail", fail), ("Mapped", mapped))
    })


def _interceptors(mode: str, variant: str) -> list[Any]:
    if variant in ("bare", FLOOR):
        return []
    if variant == "errtrace":
        import errtrace

        options = {"service_name": "bench"}
        if mode == "sync":
            return errtrace.grpc_server_interceptors(**options)
        return errtrace.grpc_aio_server_interceptors(**options)
    if variant == "otel":
        from opentelemetry.instrumentation.grpc import (
            aio_server_interceptor,
            server_interceptor,
        )

        factory = server_interceptor if mode == "sync" else aio_server_interceptor
        return [factory(tracer_provider=_tracer_provider())]
    if variant == "grpc-interceptor":
        from grpc_interceptor import (
            AsyncExceptionToStatusInterceptor,
            ExceptionToStatusInterceptor,
        )

        if mode == "sync":
            return [ExceptionToStatusInterceptor()]
        return [AsyncExceptionToStatusInterceptor()]
    raise ValueError(variant)


_EXPORTER: Any = None


def _tracer_provider() -> Any:
    global _EXPORTER
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if _EXPORTER is None:
        _EXPORTER = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    return provider


class SyncServer:
    def __init__(self, variant: str) -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=_interceptors("sync", variant),
        )
        self.server.add_generic_rpc_handlers((_handler("sync", variant),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None).wait()


class AioServer:
    def __init__(self, variant: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        async def start() -> None:
            self.server = grpc.aio.server(interceptors=_interceptors("aio", variant))
            self.server.add_generic_rpc_handlers((_handler("aio", variant),))
            self.port = self.server.add_insecure_port("127.0.0.1:0")
            await self.server.start()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            ready.set()
            self.loop.run_forever()
            self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _batch(method: Any, calls: int, expect_error: bool) -> float:
    payload = StringValue(value="x" * 32)
    metadata = (("traceparent", TRACEPARENT),)
    start = time.perf_counter()
    for _ in range(calls):
        try:
            method(payload, metadata=metadata, timeout=10)
        except grpc.RpcError:
            if not expect_error:
                raise
    return (time.perf_counter() - start) / calls * 1e6


def _methods(ports: dict[str, int]) -> tuple[list[grpc.Channel], dict[str, Any]]:
    """One channel per server and a stub per method; keys are "mode/variant/method"."""
    channels: list[grpc.Channel] = []
    methods: dict[str, Any] = {}
    for server_key, port in ports.items():
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        for name in METHODS:
            methods[f"{server_key}/{name}"] = channel.unary_unary(
                f"/{SERVICE}/{name}",
                request_serializer=StringValue.SerializeToString,
                response_deserializer=StringValue.FromString,
            )
    return channels, methods


def _check(methods: dict[str, Any]) -> None:
    """Fail loudly if a variant does not answer as the comparison assumes."""
    payload = StringValue(value="check")
    trailers: dict[str, dict[str, int]] = {}
    for key, method in methods.items():
        if key.endswith("/Ok"):
            assert method(payload, timeout=10) == payload, key
            continue
        try:
            method(payload, metadata=(("traceparent", TRACEPARENT),), timeout=10)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            trailers[key] = {k: len(v) for k, v in exc.trailing_metadata() or ()}
        else:
            raise AssertionError(f"{key} did not fail")
        if key.endswith("/Mapped"):
            assert code == grpc.StatusCode.UNAVAILABLE, (key, code)
            assert details == MAPPED_TEXT, (key, details)
        elif "/errtrace/" in key or f"/{FLOOR}/" in key:
            assert code == grpc.StatusCode.UNAVAILABLE, (key, code)
        else:
            assert code == grpc.StatusCode.UNKNOWN, (key, code)
    # The floor must send what errtrace sends: the same trailers, of the same sizes.
    for key, sizes in trailers.items():
        mode, variant, name = key.split("/")
        if variant == FLOOR and name == "Mapped":
            assert sizes == trailers[f"{mode}/errtrace/{name}"], (key, sizes)


def measure(ports: dict[str, int], calls: int, reps: int) -> dict[str, list[float]]:
    """Interleaved batches against every server; µs/call samples per "mode/variant/method"."""
    channels, methods = _methods(ports)
    samples: dict[str, list[float]] = {key: [] for key in methods}
    try:
        _check(methods)
        for key, method in methods.items():  # warm up channels, caches, code paths
            _batch(method, max(50, calls // 4), not key.endswith("/Ok"))
        # The variants of one server kind and method run back to back (in a new random
        # order each rep), so that each rep's figures can be compared with its own bare
        # batch, taken moments before or after.
        groups: dict[str, list[str]] = {}
        for key in methods:
            mode, _, name = key.split("/")
            groups.setdefault(f"{mode}/{name}", []).append(key)
        order = list(groups.values())
        for _ in range(reps):
            random.shuffle(order)
            for group in order:
                random.shuffle(group)
                for key in group:
                    samples[key].append(_batch(methods[key], calls, not key.endswith("/Ok")))
            if _EXPORTER is not None:
                _EXPORTER.clear()
    finally:
        for channel in channels:
            channel.close()
    return samples


def _client_process(ports: dict[str, int], calls: int, reps: int) -> dict[str, list[float]]:
    """Run :func:`measure` in a fresh interpreter and read its samples back."""
    command = [sys.executable, __file__, "--client-of", json.dumps(ports),
               "--calls", str(calls), "--reps", str(reps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"client process failed ({done.returncode}):\n{done.stderr}")
    samples: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per batch")
    parser.add_argument("--reps", type=int, default=15, help="interleaved repetitions")
    parser.add_argument("--modes", default="sync,aio")
    parser.add_argument("--same-process", action="store_true",
                        help="run the client in the servers' process (they share its GIL)")
    parser.add_argument("--client-of", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    logging.disable(logging.CRITICAL)
    if args.client_of:  # the client half, started by the servers' process
        samples = measure(json.loads(args.client_of), args.calls, args.reps)
        print(json.dumps(samples))
        return 0

    variants = ["bare", "errtrace", "otel", "grpc-interceptor", FLOOR]
    modes = args.modes.split(",")
    servers: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        for mode in modes:
            for variant in variants:
                klass = SyncServer if mode == "sync" else AioServer
                servers[f"{mode}/{variant}"] = klass(variant)
        ports = {key: server.port for key, server in servers.items()}
        if args.same_process:
            samples = measure(ports, args.calls, args.reps)
        else:
            samples = _client_process(ports, args.calls, args.reps)
    finally:
        for server in servers.values():
            server.stop()
    elapsed = time.perf_counter() - started

    where = "the servers' process" if args.same_process else "a separate process"
    print(f"grpcio {grpc.__version__}, Python {sys.version.split()[0]}, "
          f"{args.calls} calls x {args.reps} interleaved reps per cell, client in {where}, "
          f"{elapsed:.0f} s\n")
    print("| server | method | variant | median µs/call | x bare | added µs |")
    print("|---|---|---|---:|---:|---:|")
    for mode in modes:
        for name in METHODS:
            bare = samples[f"{mode}/bare/{name}"]
            for variant in variants:
                own = samples[f"{mode}/{variant}/{name}"]
                ratio = paired_median(own, bare, lambda a, b: a / b)
                added = paired_median(own, bare, lambda a, b: a - b)
                print(f"| {mode} | {name} | {variant} | {statistics.median(own):.1f} | "
                      f"{ratio:.3f} | {added:+.1f} |")
    print("\nx bare and added: the median over the reps of the variant's batch against the "
          "bare batch of the same rep.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
