"""gRPC client interceptors, sync and aio: context out, remote errors back as AppError."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import errtrace
from errtrace.core.context import bind, reset
from errtrace.core.encoding import caused_by
from errtrace.core.propagation import new_root_context
from errtrace.testing import capture_events
from tests.conftest import TRACEPARENT
from tests.grpc_helpers import KINDS, STREAMING_RESPONSE, path, serve, sync_server

SER, DE = StringValue.SerializeToString, StringValue.FromString


class SyncClient:
    """Calls through ``grpc.intercept_channel`` with errtrace's sync interceptors."""

    def __init__(self, target: str, **options: Any) -> None:
        self.target = target
        self.options = options

    def call(
        self, kind: str, command: str, metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 10,
    ) -> tuple[list[str], BaseException | None]:
        values: list[str] = []
        request = StringValue(value=command)
        with grpc.insecure_channel(self.target) as plain:
            channel = grpc.intercept_channel(
                plain, *errtrace.grpc_client_interceptors(**self.options)
            )
            kw: Any = {"metadata": tuple(metadata), "timeout": timeout}
            try:
                if kind == "Unary":
                    m = channel.unary_unary(path(kind), request_serializer=SER,
                                            response_deserializer=DE)
                    values.append(m(request, **kw).value)
                elif kind == "ClientStream":
                    m2 = channel.stream_unary(path(kind), request_serializer=SER,
                                              response_deserializer=DE)
                    values.append(m2(iter([request]), **kw).value)
                elif kind == "ServerStream":
                    m3 = channel.unary_stream(path(kind), request_serializer=SER,
                                              response_deserializer=DE)
                    values.extend(item.value for item in m3(request, **kw))
                else:
                    m4 = channel.stream_stream(path(kind), request_serializer=SER,
                                               response_deserializer=DE)
                    values.extend(item.value for item in m4(iter([request]), **kw))
            except Exception as exc:
                return values, exc
        return values, None


class AioClient(SyncClient):
    """Calls through ``grpc.aio.insecure_channel(..., interceptors=...)``."""

    def call(
        self, kind: str, command: str, metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 10,
    ) -> tuple[list[str], BaseException | None]:
        return asyncio.run(self._call(kind, command, metadata, timeout))

    async def _call(
        self, kind: str, command: str, metadata: Sequence[tuple[str, str]], timeout: float
    ) -> tuple[list[str], BaseException | None]:
        values: list[str] = []
        request = StringValue(value=command)

        async def requests() -> Any:
            yield request

        interceptors = errtrace.grpc_aio_client_interceptors(**self.options)
        async with grpc.aio.insecure_channel(self.target, interceptors=interceptors) as ch:
            kw: Any = {"metadata": tuple(metadata), "timeout": timeout}
            try:
                if kind == "Unary":
                    m = ch.unary_unary(path(kind), request_serializer=SER,
                                       response_deserializer=DE)
                    values.append((await m(request, **kw)).value)
                elif kind == "ClientStream":
                    m2 = ch.stream_unary(path(kind), request_serializer=SER,
                                         response_deserializer=DE)
                    values.append((await m2(requests(), **kw)).value)
                elif kind == "ServerStream":
                    m3 = ch.unary_stream(path(kind), request_serializer=SER,
                                         response_deserializer=DE)
                    async for item in m3(request, **kw):
                        values.append(item.value)
                else:
                    m4 = ch.stream_stream(path(kind), request_serializer=SER,
                                          response_deserializer=DE)
                    async for item in m4(requests(), **kw):
                        values.append(item.value)
            except Exception as exc:
                return values, exc
        return values, None


CLIENTS = {"sync": SyncClient, "aio": AioClient}


@pytest.fixture(params=["sync", "aio"])
def client_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server_b() -> Iterator[str]:
    with serve("sync", service_name="svc-b", grpc_trace_id_on_success=True) as port:
        yield f"127.0.0.1:{port}"


def _client(mode: str, target: str, **options: Any) -> SyncClient:
    return CLIENTS[mode](target, **options)


@pytest.mark.parametrize("kind", KINDS)
def test_injects_current_context_with_fresh_span_per_call(
    client_mode: str, server_b: str, kind: str
) -> None:
    client = _client(client_mode, server_b)
    ctx = new_root_context()
    ctx.biz_code = "tenant-42"
    token = bind(ctx)
    try:
        first, err1 = client.call(kind, "ctx")
        second, err2 = client.call(kind, "ctx")
    finally:
        reset(token)
    assert err1 is None and err2 is None, (err1, err2)
    seen = [json.loads(first[0]), json.loads(second[0])]
    for remote in seen:
        assert remote["trace_id"] == ctx.trace_id
        assert remote["biz_code"] == "tenant-42"
        assert remote["parent_span_id"] in ctx.outgoing_spans
        assert remote["parent_span_id"] != ctx.span_id
    assert seen[0]["parent_span_id"] != seen[1]["parent_span_id"]  # fresh span per call


def test_outside_a_request_each_call_starts_a_trace(client_mode: str, server_b: str) -> None:
    client = _client(client_mode, server_b)
    a, _ = client.call("Unary", "ctx")
    b, _ = client.call("Unary", "ctx")
    first, second = json.loads(a[0]), json.loads(b[0])
    assert first["trace_id"] != second["trace_id"]
    assert first["parent_span_id"] is not None


def test_caller_metadata_is_merged_and_wins(client_mode: str, server_b: str) -> None:
    client = _client(client_mode, server_b)
    token = bind(new_root_context())
    try:
        values, err = client.call(
            "Unary", "md", [("x-custom", "1"), ("traceparent", TRACEPARENT)]
        )
    finally:
        reset(token)
    assert err is None
    received = json.loads(values[0])
    assert received["x-custom"] == "1"
    assert received["traceparent"] == TRACEPARENT  # set explicitly by the caller
    assert "baggage" not in received  # no biz code: nothing to carry


@pytest.mark.parametrize("kind", KINDS)
def test_remote_error_becomes_app_error(client_mode: str, server_b: str, kind: str) -> None:
    client = _client(client_mode, server_b)
    with capture_events() as events:
        values, err = client.call(kind, "app:LLM_RATE_LIMITED", [("x-biz-code", "t1")])
    assert isinstance(err, errtrace.TransientError)
    assert err.code == "LLM_RATE_LIMITED" and int(err.level) == 2
    # The remote's text stays with this service: on err.remote, not in what it sends on.
    assert err.remote is not None and err.remote.message == "safe message"
    assert err.message is None
    assert err.retry_after == 1.0
    assert isinstance(err.__cause__, grpc.RpcError)
    [event] = events
    assert err.remote is not None
    assert err.remote.event_id == event.event_id
    assert err.remote.service == "svc-b"
    assert err.remote.grpc_status == "RESOURCE_EXHAUSTED"
    assert caused_by(err)[0]["event_id"] == event.event_id
    assert values == []


@pytest.mark.parametrize("kind", sorted(STREAMING_RESPONSE))
def test_error_mid_stream_raises_app_error_after_messages(
    client_mode: str, server_b: str, kind: str
) -> None:
    values, err = _client(client_mode, server_b).call(kind, "mid:AI_INFERENCE_TIMEOUT")
    assert values == ["one", "two"]
    assert isinstance(err, errtrace.AppError) and err.code == "AI_INFERENCE_TIMEOUT"


def test_caused_by_chain_across_two_hops(client_mode: str, server_b: str) -> None:
    """C -> A -> B: B fails; A answers with B's code; C sees both events, nearest first."""
    def call_b(req: Any, ctx: Any) -> Any:
        values, err = SyncClient(server_b).call("Unary", req.value)
        if err is not None:
            raise err
        return StringValue(value=values[0])

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(
            call_b, request_deserializer=DE, response_serializer=SER),
    })
    ctx = new_root_context()
    token = bind(ctx)
    try:
        with capture_events() as events, sync_server(
            errtrace.grpc_server_interceptors(service_name="svc-a"), handler
        ) as port:
            _values, err = _client(client_mode, f"127.0.0.1:{port}").call(
                "Unary", "app:AI_GPU_OUT_OF_MEMORY"
            )
    finally:
        reset(token)
    event_b, event_a = events
    assert (event_b.service, event_a.service) == ("svc-b", "svc-a")
    assert event_a.trace_id == event_b.trace_id == ctx.trace_id
    assert isinstance(err, errtrace.AppError)
    assert err.code == "AI_GPU_OUT_OF_MEMORY" and int(err.level) == 1
    chain = caused_by(err)
    assert [link["event_id"] for link in chain] == [event_a.event_id, event_b.event_id]
    assert [link.get("service") for link in chain] == ["svc-a", "svc-b"]
    assert event_a.caused_by[0]["event_id"] == event_b.event_id


def _plain_server(handler_fn: Any) -> Any:
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(
            handler_fn, request_deserializer=DE, response_serializer=SER),
    })
    return sync_server([], handler)


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_UNAVAILABLE", True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "TIMEOUT", True),
        (grpc.StatusCode.CANCELLED, "CANCELLED", False),
        (grpc.StatusCode.UNIMPLEMENTED, "UPSTREAM_ERROR", True),
        (grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_ERROR", True),
    ],
)
def test_failure_without_details_maps_by_status(
    client_mode: str, status: grpc.StatusCode, code: str, retryable: bool
) -> None:
    def fail(req: Any, ctx: Any) -> Any:
        ctx.abort(status, "remote text with internals")

    with _plain_server(fail) as port:
        _values, err = _client(client_mode, f"127.0.0.1:{port}").call("Unary", "x")
    assert isinstance(err, errtrace.AppError)
    assert err.code == code and err.retryable is retryable
    assert err.details["grpc_status"] == status.name
    assert err.message is None  # the peer's text stays private
    assert "internals" not in str(err)
    assert isinstance(err.__cause__, grpc.RpcError)


def test_unreachable_server_is_upstream_unavailable(client_mode: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _values, err = _client(client_mode, f"127.0.0.1:{port}").call("Unary", "x", timeout=5)
    assert isinstance(err, errtrace.AppError) and err.code == "UPSTREAM_UNAVAILABLE"


def test_deadline_is_timeout(client_mode: str) -> None:
    def slow(req: Any, ctx: Any) -> Any:
        time.sleep(0.5)
        return StringValue(value="late")

    with _plain_server(slow) as port:
        _values, err = _client(client_mode, f"127.0.0.1:{port}").call(
            "Unary", "x", timeout=0.05
        )
    assert isinstance(err, errtrace.AppError) and err.code == "TIMEOUT"
    assert err.details["grpc_status"] == "DEADLINE_EXCEEDED"


def test_sync_future_and_call_object_stay_usable(server_b: str) -> None:
    with grpc.insecure_channel(server_b) as plain:
        channel = grpc.intercept_channel(plain, *errtrace.grpc_client_interceptors())
        m = channel.unary_unary(path("Unary"), request_serializer=SER, response_deserializer=DE)
        response, call = m.with_call(StringValue(value="ok"), timeout=10)
        assert response.value == "ok" and call.code() is grpc.StatusCode.OK
        assert "x-trace-id" in dict(call.trailing_metadata())
        future = m.future(StringValue(value="app:NOT_FOUND"), timeout=10)
        with pytest.raises(errtrace.AppError) as info:
            future.result()
        assert info.value.code == "NOT_FOUND"
        assert future.exception() is info.value
        assert future.code() is grpc.StatusCode.NOT_FOUND


def test_sync_future_callbacks_and_state(server_b: str) -> None:
    import threading

    seen: list[BaseException | None] = []
    called = threading.Event()

    def on_done(done: Any) -> None:
        seen.append(done.exception())
        called.set()

    with grpc.insecure_channel(server_b) as plain:
        channel = grpc.intercept_channel(plain, *errtrace.grpc_client_interceptors())
        m = channel.unary_unary(path("Unary"), request_serializer=SER, response_deserializer=DE)
        future = m.future(StringValue(value="app:NOT_FOUND"), timeout=10)
        future.add_done_callback(on_done)
        assert called.wait(10)
        # The callback is handed the wrapper: what it reads is the AppError.
        [err] = seen
        assert isinstance(err, errtrace.AppError) and err.code == "NOT_FOUND"
        assert future.done() and not future.running() and not future.cancelled()
        assert not future.is_active() and future.cancel() is False
        assert future.details() == "safe message"
        assert future.traceback() is not None
        assert future.initial_metadata() is not None
        remaining = future.time_remaining()
        assert remaining is None or remaining <= 10
        ok = m.future(StringValue(value="ok"), timeout=10)
        assert ok.result().value == "ok" and ok.exception() is None


def test_aio_call_object_stays_usable(server_b: str) -> None:
    async def main() -> None:
        interceptors = errtrace.grpc_aio_client_interceptors()
        async with grpc.aio.insecure_channel(server_b, interceptors=interceptors) as ch:
            m = ch.unary_unary(path("Unary"), request_serializer=SER, response_deserializer=DE)
            call = m(StringValue(value="ok"), timeout=10)
            assert (await call).value == "ok"
            assert await call.code() is grpc.StatusCode.OK
            assert "x-trace-id" in dict(await call.trailing_metadata())
            failing = m(StringValue(value="app:NOT_FOUND"), timeout=10)
            with pytest.raises(errtrace.AppError):
                await failing
            assert await failing.code() is grpc.StatusCode.NOT_FOUND

            # stream request with the writer API (call.write / done_writing)
            su = ch.stream_unary(path("ClientStream"), request_serializer=SER,
                                 response_deserializer=DE)
            writer = su(timeout=10)
            await writer.write(StringValue(value="app:CONFLICT"))
            await writer.done_writing()
            with pytest.raises(errtrace.AppError) as info:
                await writer
            assert info.value.code == "CONFLICT"

    asyncio.run(main())


# --- aio: user interceptors that await the call themselves ---------------------------------


class _AwaitingUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    """A user interceptor that awaits the call and returns the response (grpc.aio allows)."""

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        return await call


class _AwaitingStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    """The same for stream-unary calls."""

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        call = await continuation(client_call_details, request_iterator)
        return await call


class _ReadingUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    """A user interceptor that reads the whole response stream before handing it on."""

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        responses = [response async for response in call]

        async def replay() -> Any:
            for response in responses:
                yield response

        return replay()


def _awaiting() -> list[Any]:
    return [_AwaitingUnaryUnary(), _AwaitingStreamUnary(), _ReadingUnaryStream()]


def _unary_call(channel: Any, kind: str, command: str) -> Any:
    request = StringValue(value=command)
    if kind == "Unary":
        m = channel.unary_unary(path(kind), request_serializer=SER, response_deserializer=DE)
        return m(request, timeout=10)
    m2 = channel.stream_unary(path(kind), request_serializer=SER, response_deserializer=DE)
    return m2(iter([request]), timeout=10)


@pytest.mark.parametrize("kind", ["Unary", "ClientStream"])
def test_aio_interceptor_after_errtrace_that_awaits_the_call(server_b: str, kind: str) -> None:
    """errtrace first, then an interceptor that returns ``await call``: the caller still
    gets the AppError, and the call's status stays readable."""

    async def main() -> None:
        interceptors = [*errtrace.grpc_aio_client_interceptors(), *_awaiting()]
        async with grpc.aio.insecure_channel(server_b, interceptors=interceptors) as ch:
            call = _unary_call(ch, kind, "app:LLM_RATE_LIMITED")
            with pytest.raises(errtrace.TransientError) as info:
                await asyncio.wait_for(call, 10)
            err = info.value
            assert err.code == "LLM_RATE_LIMITED" and err.retry_after == 1.0
            assert err.remote is not None and err.remote.service == "svc-b"
            assert isinstance(err.__cause__, grpc.aio.AioRpcError)
            assert await call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await call.details() == "safe message"
            trailing = dict(await call.trailing_metadata())
            assert trailing["x-error-code"] == "LLM_RATE_LIMITED"
            status = await rpc_status.aio.from_call(call)
            assert status is not None and status.message == "safe message"
            info_detail = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info_detail)
            assert info_detail.reason == "LLM_RATE_LIMITED"
            assert call.done() and not call.cancelled()
            with pytest.raises(errtrace.AppError):  # a second await raises it again
                await asyncio.wait_for(call, 10)
            if kind == "Unary":  # (grpc.aio accepts a response only from unary-unary ones)
                ok = await asyncio.wait_for(_unary_call(ch, kind, "ok"), 10)
                assert ok.value == "ok"

    asyncio.run(main())


def test_aio_interceptor_after_errtrace_that_reads_the_stream(server_b: str) -> None:
    """errtrace first, then an interceptor that reads the whole response stream: the
    stream's failure reaches the caller as the AppError, with the status readable."""

    async def main() -> None:
        interceptors = [*errtrace.grpc_aio_client_interceptors(), *_awaiting()]
        async with grpc.aio.insecure_channel(server_b, interceptors=interceptors) as ch:
            m = ch.unary_stream(path("ServerStream"), request_serializer=SER,
                                response_deserializer=DE)
            call = m(StringValue(value="mid:AI_INFERENCE_TIMEOUT"), timeout=10)
            with pytest.raises(errtrace.AppError) as info:
                await asyncio.wait_for(_drain(call), 10)
            assert info.value.code == "AI_INFERENCE_TIMEOUT"
            assert await call.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            trailing = dict(await call.trailing_metadata())
            assert trailing["x-error-code"] == "AI_INFERENCE_TIMEOUT"

    asyncio.run(main())


async def _drain(call: Any) -> list[str]:
    return [item.value async for item in call]


def test_aio_interceptor_before_errtrace_that_awaits_the_call(server_b: str) -> None:
    """The documented limitation: behind an interceptor listed before errtrace's that
    returns ``await call``, awaiting raises the AppError and so does ``code()``; the
    status is on the AppError's ``__cause__``."""

    async def main() -> None:
        interceptors = [*_awaiting(), *errtrace.grpc_aio_client_interceptors()]
        async with grpc.aio.insecure_channel(server_b, interceptors=interceptors) as ch:
            call = _unary_call(ch, "Unary", "app:LLM_RATE_LIMITED")
            with pytest.raises(errtrace.TransientError) as info:
                await asyncio.wait_for(call, 10)
            cause = info.value.__cause__
            assert isinstance(cause, grpc.aio.AioRpcError)
            assert cause.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert cause.details() == "safe message"
            assert dict(cause.trailing_metadata())["x-error-code"] == "LLM_RATE_LIMITED"
            with pytest.raises(errtrace.TransientError):
                await call.code()
            assert call.done()

    asyncio.run(main())


# --- a code only the remote service registers, passed on by this one ------------------------


def test_remote_only_code_keeps_retry_info_and_domain_at_the_next_hop() -> None:
    """B raises a retryable code only B defines; A calls B and lets the error propagate.
    A's caller must still be told to retry in 5 s, with B's (reason, domain) pair."""
    busy = errtrace.ErrorCode(
        id="INVENTORY_BUSY", level=2, grpc_status="UNAVAILABLE", retryable=True,
        domain="inventory.example.com",
    )

    def b_unary(req: Any, ctx: Any) -> Any:
        raise errtrace.AppError(busy, "busy", details={"retry_after": 5})

    decoded: list[errtrace.AppError] = []
    b_handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(
            b_unary, request_deserializer=DE, response_serializer=SER),
    })
    with sync_server(errtrace.grpc_server_interceptors(service_name="svc-b"), b_handler) as b:

        def a_unary(req: Any, ctx: Any) -> Any:
            values, err = SyncClient(f"127.0.0.1:{b}").call("Unary", req.value)
            if isinstance(err, errtrace.AppError):
                decoded.append(err)
                raise err
            return StringValue(value=values[0])

        a_handler = grpc.method_handlers_generic_handler("test.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(
                a_unary, request_deserializer=DE, response_serializer=SER),
        })
        with sync_server(
            errtrace.grpc_server_interceptors(service_name="svc-a"), a_handler
        ) as a, grpc.insecure_channel(f"127.0.0.1:{a}") as plain:
            m = plain.unary_unary(path("Unary"), request_serializer=SER,
                                  response_deserializer=DE)
            with pytest.raises(grpc.RpcError) as info:
                m(StringValue(value="x"), timeout=10)
    [err] = decoded
    assert isinstance(err, errtrace.TransientError) and err.retryable
    assert err.retry_after == 5.0
    status = rpc_status.from_call(info.value)
    assert status is not None
    error_info = error_details_pb2.ErrorInfo()
    retry = error_details_pb2.RetryInfo()
    found = {detail.type_url.rsplit(".", 1)[-1]: detail for detail in status.details}
    assert found["ErrorInfo"].Unpack(error_info)
    assert (error_info.reason, error_info.domain) == ("INVENTORY_BUSY", "inventory.example.com")
    assert "RetryInfo" in found and found["RetryInfo"].Unpack(retry)
    assert retry.retry_delay.seconds == 5
