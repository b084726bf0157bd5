"""The sync client interceptors: context out in the metadata, remote errors back in.

Every call carries the current context (outside a request: a new trace) with a fresh
child span id, merged with the metadata the caller passed (the caller's own keys win).

A failed call raises :class:`~errtrace.AppError` (with the remote code, level, event id
and ``caused_by`` chain) instead of ``grpc.RpcError``; the ``RpcError`` is its
``__cause__``, so ``err.__cause__.code()`` and ``.trailing_metadata()`` stay reachable.
Unary responses raise it where the result is read (``stub.Method(req)``,
``.with_call``, ``future.result()``); streaming responses while iterating.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc

from errtrace.core.context import current
from errtrace.core.errors import AppError
from errtrace.core.runtime import Runtime, inject_current, runtime_for
from errtrace.grpc_interceptors._metadata import merged, metadata_setter
from errtrace.grpc_interceptors._status import error_from_call


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _CallDetails(_Details, grpc.ClientCallDetails):
    """``grpc.ClientCallDetails`` with errtrace's metadata added."""


class ClientBase:
    """Injection and error decoding shared by the sync and aio client interceptors."""

    def __init__(self, runtime: Runtime | None) -> None:
        self._runtime = runtime

    def _outgoing(self, metadata: Any) -> list[tuple[str, Any]]:
        """The caller's metadata plus the context of a call made now."""
        added: list[tuple[str, Any]] = []
        inject_current(added, metadata_setter, self._runtime)
        return merged(metadata, added)

    def _translate(self, exc: BaseException) -> BaseException:
        """The AppError a failed call stands for; ``exc`` itself when it is no status."""
        if isinstance(exc, grpc.RpcError) and not isinstance(exc, AppError):
            runtime = self._runtime or runtime_for(current())
            err = error_from_call(exc, runtime.config)
            if err is not None:
                return err
        return exc


class _Call(grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """The call/future/iterator the channel returned, raising AppError on failure."""

    def __init__(self, call: Any, translate: Callable[[BaseException], BaseException]) -> None:
        self._call = call
        self._translate = translate
        self._error: BaseException | None = None

    def _converted(self, exc: BaseException) -> BaseException:
        if self._error is None:
            self._error = self._translate(exc)
        return self._error

    # Future
    def result(self, timeout: float | None = None) -> Any:
        """The response; raises :class:`~errtrace.AppError` when the call failed."""
        try:
            return self._call.result(timeout)
        except grpc.RpcError as exc:
            err = self._converted(exc)
            if err is exc:
                raise
            raise err from exc

    def exception(  # type: ignore[override]  # grpc-stubs omit the timeout
        self, timeout: float | None = None
    ) -> BaseException | None:
        """The AppError of a failed call (None when it succeeded)."""
        exc = self._call.exception(timeout)
        return None if exc is None else self._converted(exc)

    def traceback(self, timeout: float | None = None) -> Any:
        """The traceback of the channel's exception."""
        return self._call.traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(self)`` when the call finishes."""
        self._call.add_done_callback(lambda _call: fn(self))

    def cancel(self) -> bool:
        """Cancel the call."""
        return bool(self._call.cancel())

    def cancelled(self) -> bool:
        """Whether the call was cancelled."""
        return bool(self._call.cancelled())

    def running(self) -> bool:
        """Whether the call is in progress."""
        return bool(self._call.running())

    def done(self) -> bool:
        """Whether the call finished."""
        return bool(self._call.done())

    # Call / RpcContext
    def is_active(self) -> bool:
        """Whether the RPC is active."""
        return bool(self._call.is_active())

    def time_remaining(self) -> float | None:  # type: ignore[override]  # None: no deadline
        """Seconds left before the deadline."""
        return self._call.time_remaining()  # type: ignore[no-any-return]

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` when the RPC terminates."""
        return bool(self._call.add_callback(callback))

    def initial_metadata(self) -> Any:
        """The server's initial metadata."""
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        """The server's trailing metadata."""
        return self._call.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        """The status code."""
        return self._call.code()  # type: ignore[no-any-return]

    def details(self) -> str:
        """The status message."""
        return self._call.details()  # type: ignore[no-any-return]

    # streaming responses
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            err = self._converted(exc)
            if err is exc:
                raise
            raise err from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class ClientInterceptor(
    ClientBase,
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """errtrace for ``grpc.intercept_channel(channel, interceptor)``, all four kinds."""

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            self._outgoing(details.metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def _intercept(self, continuation: Callable[..., Any], details: Any, request: Any) -> _Call:
        return _Call(continuation(self._details(details), request), self._translate)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Inject the context; the result raises AppError when the call failed."""
        return self._intercept(continuation, client_call_details, request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Inject the context; iterating raises AppError when the call fails."""
        return self._intercept(continuation, client_call_details, request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Inject the context; the result raises AppError when the call failed."""
        return self._intercept(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Inject the context; iterating raises AppError when the call fails."""
        return self._intercept(continuation, client_call_details, request_iterator)
