"""A tiny gRPC test service without protoc: ``StringValue`` in, ``StringValue`` out.

Service ``test.Echo`` has one method per kind: ``Unary``, ``ServerStream``,
``ClientStream`` and ``BidiStream``. The (first) request's value is a command:

``ok``              answer ``ok`` (streams: ``ok`` twice)
``ctx``             answer the current errtrace context as JSON (streams: twice)
``md``              answer the received (text) invocation metadata as JSON
``app:CODE``        raise ``AppError(CODE, "safe message")``
``boom``            raise ``RuntimeError`` with a secret text
``abort``           the handler's own ``context.abort(PERMISSION_DENIED, ...)``
``setcode``         ``context.set_code(NOT_FOUND)`` and return normally
``mid:CODE``        streams: send two messages, then raise ``AppError(CODE)``

``serve(mode, interceptors)`` runs a server on 127.0.0.1, port 0, so one sync test body
checks every mode: ``sync`` (``grpc.server``), ``aio`` (``grpc.aio.server`` on a loop in
a thread, async handlers) and ``aio-sync`` (the same aio server running the sync
handlers, as grpc.aio allows). ``serve_methods`` does the same for handlers a test
writes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
from google.protobuf.wrappers_pb2 import StringValue

import errtrace

SERVICE = "test.Echo"
KINDS = ("Unary", "ServerStream", "ClientStream", "BidiStream")
SECRET = "db password is hunter2"
STREAMING_RESPONSE = {"ServerStream", "BidiStream"}
STREAMING_REQUEST = {"ClientStream", "BidiStream"}


def path(kind: str) -> str:
    """The method path of ``kind``."""
    return f"/{SERVICE}/{kind}"


def _ctx_json() -> str:
    ctx = errtrace.current()
    return json.dumps(ctx.as_dict() if ctx is not None else None)


def _answer(command: str, context: Any) -> str:
    if command == "ctx":
        return _ctx_json()
    if command == "md":  # the invocation metadata the server received
        pairs = context.invocation_metadata() or ()
        return json.dumps({k: v for k, v in pairs if isinstance(v, str)})
    return command


def _raise_for(command: str) -> None:
    if command.startswith("app:"):
        raise errtrace.AppError(command[4:], "safe message")
    if command == "boom":
        raise RuntimeError(SECRET)


# --- sync handlers ----------------------------------------------------------------------


def _sync_unary(command: str, context: grpc.ServicerContext) -> StringValue:
    _raise_for(command)
    if command == "abort":
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler said no")
    if command == "setcode":
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("nothing here")
        return StringValue(value="")
    return StringValue(value=_answer(command, context))


def _sync_stream(command: str, context: grpc.ServicerContext) -> Iterator[StringValue]:
    if command.startswith("mid:"):
        yield StringValue(value="one")
        yield StringValue(value="two")
        raise errtrace.AppError(command[4:], "safe message")
    _raise_for(command)
    if command == "abort":
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler said no")
    yield StringValue(value=_answer(command, context))
    yield StringValue(value=_answer(command, context))


def _first(requests: Iterable[StringValue]) -> str:
    values = [r.value for r in requests]
    return values[0] if values else "ok"


def sync_handler() -> grpc.GenericRpcHandler:
    """The sync implementation of ``test.Echo``."""
    ser, de = StringValue.SerializeToString, StringValue.FromString
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: _sync_unary(req.value, ctx),
            request_deserializer=de, response_serializer=ser),
        "ServerStream": grpc.unary_stream_rpc_method_handler(
            lambda req, ctx: _sync_stream(req.value, ctx),
            request_deserializer=de, response_serializer=ser),
        "ClientStream": grpc.stream_unary_rpc_method_handler(
            lambda reqs, ctx: _sync_unary(_first(reqs), ctx),
            request_deserializer=de, response_serializer=ser),
        "BidiStream": grpc.stream_stream_rpc_method_handler(
            lambda reqs, ctx: _sync_stream(_first(reqs), ctx),
            request_deserializer=de, response_serializer=ser),
    })


# --- aio handlers -----------------------------------------------------------------------


async def _aio_unary(command: str, context: grpc.aio.ServicerContext[Any, Any]) -> StringValue:
    await asyncio.sleep(0)  # a task switch while the context is bound
    _raise_for(command)
    if command == "abort":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler said no")
    if command == "setcode":
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("nothing here")
        return StringValue(value="")
    return StringValue(value=_answer(command, context))


async def _aio_stream(
    command: str, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[StringValue]:
    if command.startswith("mid:"):
        yield StringValue(value="one")
        yield StringValue(value="two")
        raise errtrace.AppError(command[4:], "safe message")
    _raise_for(command)
    if command == "abort":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler said no")
    yield StringValue(value=_answer(command, context))
    await asyncio.sleep(0)
    yield StringValue(value=_answer(command, context))


async def _afirst(requests: AsyncIterator[StringValue]) -> str:
    values = [r.value async for r in requests]
    return values[0] if values else "ok"


def aio_handler() -> grpc.GenericRpcHandler:
    """The asyncio implementation of ``test.Echo``."""
    ser, de = StringValue.SerializeToString, StringValue.FromString

    async def unary(req: StringValue, ctx: Any) -> StringValue:
        return await _aio_unary(req.value, ctx)

    async def server_stream(req: StringValue, ctx: Any) -> AsyncIterator[StringValue]:
        async for item in _aio_stream(req.value, ctx):
            yield item

    async def client_stream(reqs: AsyncIterator[StringValue], ctx: Any) -> StringValue:
        return await _aio_unary(await _afirst(reqs), ctx)

    async def bidi(reqs: AsyncIterator[StringValue], ctx: Any) -> AsyncIterator[StringValue]:
        async for item in _aio_stream(await _afirst(reqs), ctx):
            yield item

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=de, response_serializer=ser),
        "ServerStream": grpc.unary_stream_rpc_method_handler(
            server_stream, request_deserializer=de, response_serializer=ser),
        "ClientStream": grpc.stream_unary_rpc_method_handler(
            client_stream, request_deserializer=de, response_serializer=ser),
        "BidiStream": grpc.stream_stream_rpc_method_handler(
            bidi, request_deserializer=de, response_serializer=ser),
    })


# --- servers ----------------------------------------------------------------------------


@contextlib.contextmanager
def sync_server(
    interceptors: Sequence[Any],
    handler: grpc.GenericRpcHandler | None = None,
    executor: futures.ThreadPoolExecutor | None = None,
) -> Iterator[int]:
    """A started ``grpc.server``; yields its port."""
    pool = executor or futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(pool, interceptors=list(interceptors))
    server.add_generic_rpc_handlers((handler or sync_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait()
        if executor is None:
            pool.shutdown()


class AioServerThread:
    """A ``grpc.aio.server`` running on its own event loop in a thread."""

    def __init__(
        self, interceptors: Sequence[Any], handler: grpc.GenericRpcHandler | None = None
    ) -> None:
        self.interceptors = list(interceptors)
        self.handler = handler or aio_handler()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._server: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _start(self) -> None:
        self._server = grpc.aio.server(interceptors=self.interceptors)
        self._server.add_generic_rpc_handlers((self.handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def __enter__(self) -> int:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("aio server did not start")
        return self.port

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


MODES = ("sync", "aio", "aio-sync")
"""Server modes: grpc.server, grpc.aio.server with async handlers, and with sync ones."""


@contextlib.contextmanager
def serve(
    mode: str, interceptors: Sequence[Any] | None = None, **options: Any
) -> Iterator[int]:
    """A server of ``mode`` (one of :data:`MODES`) with errtrace's interceptors; yields
    its port."""
    if interceptors is None:
        interceptors = (
            errtrace.grpc_server_interceptors(**options)
            if mode == "sync"
            else errtrace.grpc_aio_server_interceptors(**options)
        )
    if mode == "sync":
        with sync_server(interceptors) as port:
            yield port
    else:
        handler = aio_handler() if mode == "aio" else sync_handler()
        with AioServerThread(interceptors, handler) as port:
            yield port


_FACTORIES: dict[str, Callable[..., Any]] = {
    "Unary": grpc.unary_unary_rpc_method_handler,
    "ServerStream": grpc.unary_stream_rpc_method_handler,
    "ClientStream": grpc.stream_unary_rpc_method_handler,
    "BidiStream": grpc.stream_stream_rpc_method_handler,
}


def echo_handler(methods: Mapping[str, Callable[..., Any]]) -> grpc.GenericRpcHandler:
    """``test.Echo`` with the given behaviors, by kind (``Unary``, ``ServerStream``...)."""
    ser, de = StringValue.SerializeToString, StringValue.FromString
    return grpc.method_handlers_generic_handler(SERVICE, {
        kind: _FACTORIES[kind](behavior, request_deserializer=de, response_serializer=ser)
        for kind, behavior in methods.items()
    })


@contextlib.contextmanager
def serve_methods(
    mode: str,
    sync_methods: Mapping[str, Callable[..., Any]],
    aio_methods: Mapping[str, Callable[..., Any]],
    **options: Any,
) -> Iterator[int]:
    """A server of ``mode`` with errtrace's interceptors (``options`` for them) serving
    ``sync_methods`` (modes ``sync`` and ``aio-sync``) or ``aio_methods`` (``aio``)."""
    if mode == "sync":
        with sync_server(
            errtrace.grpc_server_interceptors(**options), echo_handler(sync_methods)
        ) as port:
            yield port
        return
    methods = aio_methods if mode == "aio" else sync_methods
    with AioServerThread(
        errtrace.grpc_aio_server_interceptors(**options), echo_handler(methods)
    ) as port:
        yield port


# --- a plain client ---------------------------------------------------------------------


class Result:
    """What a call returned: response values, and the ``grpc.RpcError`` (a Call) if any."""

    def __init__(self, values: list[str], error: Any = None, call: Any = None) -> None:
        self.values = values
        self.error = error
        self.call = call if call is not None else error

    @property
    def code(self) -> grpc.StatusCode:
        """The status code of the call."""
        return self.call.code()  # type: ignore[no-any-return]

    def trailing(self) -> dict[str, Any]:
        """Trailing metadata as a dict."""
        return dict(self.call.trailing_metadata() or ())


def invoke(
    channel: grpc.Channel,
    kind: str,
    command: str,
    metadata: Sequence[tuple[str, Any]] = (),
) -> Result:
    """Call ``kind`` with ``command`` over a (plain or intercepted) sync channel."""
    ser, de = StringValue.SerializeToString, StringValue.FromString
    request = StringValue(value=command)
    md = tuple(metadata)
    if kind == "Unary":
        m = channel.unary_unary(path(kind), request_serializer=ser, response_deserializer=de)
        try:
            response, call = m.with_call(request, metadata=md, timeout=10)
        except grpc.RpcError as exc:
            return Result([], exc)
        return Result([response.value], call=call)
    if kind == "ClientStream":
        m = channel.stream_unary(path(kind), request_serializer=ser, response_deserializer=de)
        try:
            response, call = m.with_call(iter([request]), metadata=md, timeout=10)
        except grpc.RpcError as exc:
            return Result([], exc)
        return Result([response.value], call=call)
    if kind == "ServerStream":
        stream = channel.unary_stream(
            path(kind), request_serializer=ser, response_deserializer=de
        )(request, metadata=md, timeout=10)
    else:
        stream = channel.stream_stream(
            path(kind), request_serializer=ser, response_deserializer=de
        )(iter([request]), metadata=md, timeout=10)
    values: list[str] = []
    try:
        for item in stream:
            values.append(item.value)
    except grpc.RpcError as exc:
        return Result(values, exc)
    return Result(values, call=stream)


# --- a service whose proto is known -----------------------------------------------------

TYPED_SERVICE = "test.Typed"
"""A service declared in protobuf's default descriptor pool, as generated code declares
its own: ``Unary`` and ``ServerStream``, ``StringValue`` in and out."""


def typed_path(kind: str) -> str:
    """The method path of ``kind`` on :data:`TYPED_SERVICE`."""
    return f"/{TYPED_SERVICE}/{kind}"


def declare_typed_service() -> None:
    """Add :data:`TYPED_SERVICE` to protobuf's default pool (once per process)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(TYPED_SERVICE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto(
        name="tests/test_typed.proto", package="test", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    service = proto.service.add(name="Typed")
    for kind, streaming in (("Unary", False), ("ServerStream", True)):
        service.method.add(
            name=kind, input_type=".google.protobuf.StringValue",
            output_type=".google.protobuf.StringValue", server_streaming=streaming,
        )
    pool.AddSerializedFile(proto.SerializeToString())


def typed_handler(methods: Mapping[str, Callable[..., Any]]) -> grpc.GenericRpcHandler:
    """:data:`TYPED_SERVICE` with the given behaviors, by kind (declared first)."""
    declare_typed_service()
    ser, de = StringValue.SerializeToString, StringValue.FromString
    return grpc.method_handlers_generic_handler(TYPED_SERVICE, {
        kind: _FACTORIES[kind](behavior, request_deserializer=de, response_serializer=ser)
        for kind, behavior in methods.items()
    })
