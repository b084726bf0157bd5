"""The ``grpc.aio`` client interceptors (see :mod:`._client` for the behavior).

Unary responses: ``await stub.Method(req)`` raises :class:`~errtrace.AppError` (from the
``grpc.aio.AioRpcError``); the call's ``code()``, ``details()`` and metadata stay
readable, because the interceptor returns the call wrapped rather than awaiting it
(awaiting inside the interceptor would deadlock ``call.write()`` of stream requests).
Streaming responses: iterating (``async for`` or ``read()``) raises it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import grpc
import grpc.aio

from errtrace.grpc_interceptors._client import ClientBase


class _UnaryResponse:
    """Delegates to the call; awaiting it raises AppError when the call failed."""

    def __init__(self, call: Any, translate: Callable[[BaseException], BaseException]) -> None:
        self._call = call
        self._translate = translate

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            response = yield from self._call.__await__()
        except grpc.aio.AioRpcError as exc:
            err = self._translate(exc)
            if err is exc:
                raise
            raise err from exc
        return response

    # the rest of grpc.aio.Call, delegated
    def cancel(self) -> bool:
        """Cancel the call."""
        return bool(self._call.cancel())

    def cancelled(self) -> bool:
        """Whether the call was cancelled."""
        return bool(self._call.cancelled())

    def done(self) -> bool:
        """Whether the call finished."""
        return bool(self._call.done())

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline."""
        return self._call.time_remaining()  # type: ignore[no-any-return]

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(call)`` when the call finishes."""
        self._call.add_done_callback(callback)

    async def initial_metadata(self) -> Any:
        """The server's initial metadata."""
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        """The server's trailing metadata."""
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        """The status code."""
        return await self._call.code()  # type: ignore[no-any-return]

    async def details(self) -> str:
        """The status message."""
        return await self._call.details()  # type: ignore[no-any-return]

    async def debug_error_string(self) -> str | None:
        """gRPC core's debug string."""
        return await self._call.debug_error_string()  # type: ignore[no-any-return]

    async def wait_for_connection(self) -> None:
        """Wait until the channel is connected."""
        await self._call.wait_for_connection()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _UnaryUnaryResponse(_UnaryResponse, grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    """A ``grpc.aio.UnaryUnaryCall`` that raises AppError."""


class _StreamUnaryResponse(_UnaryResponse, grpc.aio.StreamUnaryCall):  # type: ignore[type-arg]
    """A ``grpc.aio.StreamUnaryCall`` that raises AppError."""

    async def write(self, request: Any) -> None:
        """Send one request message."""
        await self._call.write(request)

    async def done_writing(self) -> None:
        """Half-close the request stream."""
        await self._call.done_writing()


class AioClientInterceptor(ClientBase):
    """What the four aio client interceptors share.

    ``grpc.aio`` files an interceptor under the first kind it is an instance of, so
    each kind needs its own object: :func:`aio_client_interceptors` returns four.
    """

    def _details(self, details: Any) -> Any:
        metadata = grpc.aio.Metadata(*self._outgoing(details.metadata))
        return details._replace(metadata=metadata)

    async def _responses(self, call: Any) -> AsyncIterator[Any]:
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            err = self._translate(exc)
            if err is exc:
                raise
            raise err from exc


class AioUnaryUnaryInterceptor(
    AioClientInterceptor, grpc.aio.UnaryUnaryClientInterceptor  # type: ignore[type-arg]
):
    """Unary-unary calls: awaiting the call raises AppError when it failed."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Inject the context; wrap the call."""
        call = await continuation(self._details(client_call_details), request)
        return _UnaryUnaryResponse(call, self._translate)


class AioUnaryStreamInterceptor(
    AioClientInterceptor, grpc.aio.UnaryStreamClientInterceptor  # type: ignore[type-arg]
):
    """Unary-stream calls: iterating raises AppError when the call fails."""

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Inject the context; wrap the responses."""
        call = await continuation(self._details(client_call_details), request)
        return self._responses(call)


class AioStreamUnaryInterceptor(
    AioClientInterceptor, grpc.aio.StreamUnaryClientInterceptor  # type: ignore[type-arg]
):
    """Stream-unary calls: awaiting the call raises AppError when it failed."""

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Inject the context; wrap the call."""
        call = await continuation(self._details(client_call_details), request_iterator)
        return _StreamUnaryResponse(call, self._translate)


class AioStreamStreamInterceptor(
    AioClientInterceptor, grpc.aio.StreamStreamClientInterceptor  # type: ignore[type-arg]
):
    """Stream-stream calls: iterating raises AppError when the call fails."""

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Inject the context; wrap the responses."""
        call = await continuation(self._details(client_call_details), request_iterator)
        return self._responses(call)


AIO_KINDS: tuple[type[AioClientInterceptor], ...] = (
    AioUnaryUnaryInterceptor,
    AioUnaryStreamInterceptor,
    AioStreamUnaryInterceptor,
    AioStreamStreamInterceptor,
)
