"""The ``grpc.aio`` client interceptors (see :mod:`._client` for the behavior).

Unary responses: ``await stub.Method(req)`` raises :class:`~errtrace.AppError` (from the
``grpc.aio.AioRpcError``); the call's ``code()``, ``details()`` and metadata stay
readable, because the interceptor returns the call wrapped rather than awaiting it
(awaiting inside the interceptor would deadlock ``call.write()`` of stream requests).
Streaming responses: iterating (``async for`` or ``read()``) raises it.

grpc.aio lets an interceptor await the call itself and return the response. When one
listed after errtrace's does, the call has failed before errtrace's interceptor gets it:
errtrace wraps the failed call, with the same result as above.

Limitation: when one listed *before* errtrace's does (``return await call``), it passes on
the AppError its ``await`` raised. Awaiting the call still raises the AppError, but so do
the call's ``code()``, ``details()``, ``initial_metadata()``, ``trailing_metadata()`` and
``debug_error_string()``: grpc.aio reads the status from the interceptors' exception only
when that is a ``grpc.aio.AioRpcError``, which an AppError cannot be (its ``code`` and
``details`` are the code id and the details dict, not ``AioRpcError``'s methods). That
interceptor's own ``except grpc.aio.AioRpcError`` clauses do not see the failure either.
The status stays readable on the AppError's ``__cause__`` (the ``AioRpcError``); or list
errtrace's interceptors first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, NoReturn

import grpc
import grpc.aio

from errtrace.grpc_interceptors._client import ClientBase


class _Failed:
    """A call that already failed with ``error``: an interceptor after errtrace's awaited
    it and raised the error. Its status stays readable; awaiting or iterating it raises
    the error, as grpc.aio's own finished call does."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self._error = error

    def __await__(self) -> Generator[Any, None, NoReturn]:
        raise self._error
        yield  # a generator, as __await__ must return

    def __aiter__(self) -> _Failed:
        return self

    async def __anext__(self) -> NoReturn:
        raise self._error

    def cancel(self) -> bool:
        """Nothing to cancel: the call is over."""
        return False

    def cancelled(self) -> bool:
        """Whether the call ended cancelled."""
        return self._error.code() is grpc.StatusCode.CANCELLED

    def done(self) -> bool:
        """Always true."""
        return True

    def time_remaining(self) -> float | None:
        """No deadline is left to run."""
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(self)`` now: the call is done."""
        callback(self)

    async def initial_metadata(self) -> Any:
        """The server's initial metadata."""
        return self._error.initial_metadata()

    async def trailing_metadata(self) -> Any:
        """The server's trailing metadata."""
        return self._error.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        """The status code."""
        return self._error.code()

    async def details(self) -> str | None:
        """The status message."""
        return self._error.details()

    async def debug_error_string(self) -> str | None:
        """gRPC core's debug string."""
        return self._error.debug_error_string()

    async def wait_for_connection(self) -> None:
        """Nothing to wait for: the call is over."""

    async def write(self, request: Any) -> None:
        """Refused, as by grpc.aio: the call is over."""
        raise asyncio.InvalidStateError("RPC already finished.")

    async def done_writing(self) -> None:
        """Nothing to half-close: the call is over."""


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

    async def _call(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        """The call the continuation returns; a :class:`_Failed` one when an interceptor
        after this one awaited it and it failed (grpc.aio lets interceptors do that)."""
        try:
            return await continuation(self._details(details), request)
        except grpc.aio.AioRpcError as exc:
            return _Failed(exc)

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
        call = await self._call(continuation, client_call_details, request)
        return _UnaryUnaryResponse(call, self._translate)


class AioUnaryStreamInterceptor(
    AioClientInterceptor, grpc.aio.UnaryStreamClientInterceptor  # type: ignore[type-arg]
):
    """Unary-stream calls: iterating raises AppError when the call fails."""

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Inject the context; wrap the responses."""
        call = await self._call(continuation, client_call_details, request)
        return self._responses(call)


class AioStreamUnaryInterceptor(
    AioClientInterceptor, grpc.aio.StreamUnaryClientInterceptor  # type: ignore[type-arg]
):
    """Stream-unary calls: awaiting the call raises AppError when it failed."""

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Inject the context; wrap the call."""
        call = await self._call(continuation, client_call_details, request_iterator)
        return _StreamUnaryResponse(call, self._translate)


class AioStreamStreamInterceptor(
    AioClientInterceptor, grpc.aio.StreamStreamClientInterceptor  # type: ignore[type-arg]
):
    """Stream-stream calls: iterating raises AppError when the call fails."""

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Inject the context; wrap the responses."""
        call = await self._call(continuation, client_call_details, request_iterator)
        return self._responses(call)


AIO_KINDS: tuple[type[AioClientInterceptor], ...] = (
    AioUnaryUnaryInterceptor,
    AioUnaryStreamInterceptor,
    AioStreamUnaryInterceptor,
    AioStreamStreamInterceptor,
)
