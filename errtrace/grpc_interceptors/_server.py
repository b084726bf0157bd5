"""The sync server interceptor, and the helpers the aio one shares with it.

Per call: extract the context from the invocation metadata -> bind -> call the
handler (for a streaming response, bound around every step of its iterator) -> on
error: ``runtime.fail``, answer with the rich status (or the fallback's message) ->
reset. ``x-trace-id`` goes into the trailing metadata of every failed call (and of
successful ones with ``grpc_trace_id_on_success``: a trailer costs time on every call).

gRPC's own exceptions are not application errors and pass through untouched: the
handler's abort (``context.abort``), and the ``grpc.RpcError`` the request iterator raises
once the client cancelled the call or its deadline passed (as when a response stream is
dropped for the same reason, nothing is recorded). A status the handler set with
``context.set_code`` is kept.

A fallback's result is the call's response message: one the method's response serializer
refuses (a dict, say), or a protobuf message of another type than the method's proto
declares (when its generated code is imported), would make grpc fail the call with its
own status and text. Such a result counts as a failed fallback (logged, counted in
``hook_failures``, ``event.fallback == "failed"``) and the error's own status answers.

The sync lifecycle lives in :class:`ServerBase`: the aio server runs it too, for handlers
that are plain functions (see :mod:`._aio_server`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
import grpc.aio
from google.protobuf import descriptor_pool

from errtrace.core.context import ErrorContext, bind, reset
from errtrace.core.policy import NO_RESULT
from errtrace.core.runtime import Failure, Runtime
from errtrace.grpc_interceptors._metadata import merged
from errtrace.grpc_interceptors._status import Status, error_status

Behavior = Callable[..., Any]
Wrap = Callable[[Behavior], Behavior]

_CACHE_SIZE = 1024


class Method:
    """A served method: its path, and what a response message of it must be."""

    def __init__(self, path: str, serializer: Callable[[Any], bytes] | None) -> None:
        self.path = path
        self.serializer = serializer
        """The handler's response serializer (None: responses are bytes already)."""

    @functools.cached_property
    def response_type(self) -> str | None:
        """The full name of the response message the method's proto declares, when its
        generated code was imported (looked up on the first fallback, not per call)."""
        return _response_type(self.path)

    def accepts(self, result: Any) -> bool:
        """Whether grpc can send ``result`` as a response of this method (tried with the
        serializer once: only a fallback's result is checked, so rarely)."""
        if self.serializer is None:
            return isinstance(result, bytes)
        try:
            self.serializer(result)
        except Exception:  # what grpc would fail the call with
            return False
        if self.response_type is None:
            return True
        # protobuf's SerializeToString takes a message of any type: the proto decides.
        # (Only a protobuf message has a type name; what else the serializer took, it
        # can send.)
        name = getattr(getattr(type(result), "DESCRIPTOR", None), "full_name", None)
        return not isinstance(name, str) or name == self.response_type

    def expected(self) -> str:
        """What a response must be, for a log line."""
        if self.response_type is not None:
            return f"a {self.response_type} message"
        if self.serializer is None:
            return "bytes"
        return "a message its response serializer accepts"


def _response_type(path: str) -> str | None:
    """The response message of ``/package.Service/Method`` in protobuf's default pool
    (generated code registers its protos there), or None."""
    service, _, name = path.lstrip("/").partition("/")
    if not service or not name:
        return None
    try:
        method = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except Exception:  # KeyError: no proto of this method was imported
        return None
    return str(method.output_type.full_name)


def rebuild(handler: Any, wrap_unary: Wrap, wrap_stream: Wrap) -> Any:
    """A method handler of the same streaming kind, its behavior wrapped.

    ``wrap_unary`` wraps unary-response behaviors, ``wrap_stream`` streaming-response
    ones; the request deserializer and response serializer are kept.
    """
    if handler.request_streaming:
        if handler.response_streaming:
            factory: Callable[..., Any] = grpc.stream_stream_rpc_method_handler
            behavior = wrap_stream(handler.stream_stream)
        else:
            factory = grpc.stream_unary_rpc_method_handler
            behavior = wrap_unary(handler.stream_unary)
    elif handler.response_streaming:
        factory = grpc.unary_stream_rpc_method_handler
        behavior = wrap_stream(handler.unary_stream)
    else:
        factory = grpc.unary_unary_rpc_method_handler
        behavior = wrap_unary(handler.unary_unary)
    return factory(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class HandlerCache:
    """Wrapped handlers by (method, handler): rebuilt once, not on every call."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], tuple[Any, Any]] = {}

    def get(self, method: str, handler: Any) -> Any | None:
        """The wrapped handler built for this very ``handler`` object, if any."""
        hit = self._entries.get((method, id(handler)))
        return hit[1] if hit is not None and hit[0] is handler else None

    def put(self, method: str, handler: Any, wrapped: Any) -> None:
        """Remember ``wrapped`` (keeping ``handler`` alive so that its id stays unique)."""
        if len(self._entries) >= _CACHE_SIZE:
            self._entries.clear()
        self._entries[(method, id(handler))] = (handler, wrapped)


class ServerBase:
    """What the sync and aio server interceptors share: runtime, status and metadata."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._cache = HandlerCache()
        self._trace_key = runtime.config.trace_id_header.lower()
        self._trace_on_success = runtime.config.grpc_trace_id_on_success
        self._inbound = frozenset(runtime.config.propagation.inbound_names)

    def _wrapped(self, handler: Any, method: str) -> Any:
        """``handler`` rebuilt with errtrace around its behavior (cached; None stays None)."""
        if handler is None:
            return None
        wrapped = self._cache.get(method, handler)
        if wrapped is None:
            served = Method(method, handler.response_serializer)
            wrapped = rebuild(
                handler,
                lambda b: self._unary_response(b, served),
                lambda b: self._stream_response(b, served),
            )
            self._cache.put(method, handler, wrapped)
        return wrapped

    def _unary_response(self, behavior: Behavior, method: Method) -> Behavior:
        raise NotImplementedError

    def _stream_response(self, behavior: Behavior, method: Method) -> Behavior:
        raise NotImplementedError

    def _start(self, context: Any) -> ErrorContext:
        # One pass over the metadata for the few keys that carry the context (text
        # values only: "-bin" keys hold bytes).
        inbound = self._inbound
        carrier: dict[str, list[str]] = {}
        for key, value in context.invocation_metadata() or ():
            if key in inbound and isinstance(value, str):
                carrier.setdefault(key, []).append(value)
        return self.runtime.start_collected(carrier)

    def _succeeded(self, context: Any, ctx: ErrorContext) -> None:
        """A call ended well: its trailers get ``x-trace-id`` only when configured."""
        if self._trace_on_success:
            self._add_trace_id(context, ctx)

    def _add_trace_id(self, context: Any, ctx: ErrorContext) -> None:
        pair = (self._trace_key, ctx.trace_id)
        existing = context.trailing_metadata()
        if existing:
            context.set_trailing_metadata(tuple(merged(existing, (pair,))))
        else:
            context.set_trailing_metadata((pair,))

    def _fail(
        self,
        exc: BaseException,
        ctx: ErrorContext,
        context: Any,
        method: Method,
        started: bool,
    ) -> tuple[Failure, Status]:
        """Record ``exc`` and build the status that answers it.

        For plain-function handlers, which run in grpc's thread pool: there is no loop to
        await an ``async def`` fallback in, so ``runtime.fail`` counts it as failed. The
        aio server's async handlers await it with ``runtime.fail_async`` instead, then
        build their status with :meth:`_status_for` too (see :mod:`._aio_server`).
        """
        failure = self.runtime.fail(
            exc, ctx, transport="grpc", method=method.path, response_started=started
        )
        check_fallback(failure, method)
        return failure, self._status_for(failure, ctx, context)

    def _status_for(self, failure: Failure, ctx: ErrorContext, context: Any) -> Status:
        """The status that answers a recorded ``failure``; a level 0 exit is scheduled
        for after the status went out."""
        runtime = self.runtime
        if runtime.needs_after_response(failure):
            _when_done(context, lambda: runtime.after_response(failure))
        return error_status(
            failure.error,
            ctx,
            runtime.config,
            code=_handler_code(context),
            existing=context.trailing_metadata(),
        )

    # -- the sync lifecycle: grpc.server, and plain-function handlers on grpc.aio.server --

    def _sync_unary(self, behavior: Behavior, method: Method) -> Behavior:
        """A unary-response ``behavior`` (a plain function) with errtrace around it."""
        start = self._start

        def unary_response(request: Any, context: Any) -> Any:
            ctx = start(context)
            token = bind(ctx)
            try:
                response = behavior(request, context)
            except Exception as exc:
                if raised_by_grpc(context, exc):
                    self._add_trace_id(context, ctx)
                    raise
                failure, status = self._fail(exc, ctx, context, method, started=False)
                response = failure.fallback_result
                if not failure.has_fallback:
                    # This frame stays alive in the traceback grpc keeps; do not let it
                    # hold the error (whose cause's traceback holds this frame).
                    del failure
                    _abort(context, status)
                self._add_trace_id(context, ctx)
                return response
            finally:
                reset(token)
            self._succeeded(context, ctx)
            return response

        return unary_response

    def _sync_stream(self, behavior: Behavior, method: Method) -> Behavior:
        """A streaming-response ``behavior`` (a plain function returning an iterator)
        with errtrace around the call and every step of its iterator."""

        def stream_response(request: Any, context: Any) -> Iterator[Any]:
            ctx = self._start(context)
            token = bind(ctx)
            try:
                iterator = iter(behavior(request, context))
            except Exception as exc:
                iterator = self._failed_stream(exc, ctx, context, method)
            finally:
                reset(token)
            return self._steps(iterator, ctx, context, method)

        return stream_response

    def _failed_stream(
        self, exc: Exception, ctx: ErrorContext, context: Any, method: Method
    ) -> Iterator[Any]:
        if raised_by_grpc(context, exc):
            self._add_trace_id(context, ctx)
            raise exc
        failure, status = self._fail(exc, ctx, context, method, started=False)
        if not failure.has_fallback:
            _abort(context, status)
        self._add_trace_id(context, ctx)
        return iter((failure.fallback_result,))

    def _end_stream(self, context: Any, status: Status) -> None:
        """End a response stream that failed after it started, with ``status``."""
        _abort(context, status)  # raises

    def _steps(
        self, iterator: Iterator[Any], ctx: ErrorContext, context: Any, method: Method
    ) -> Iterator[Any]:
        # The context is bound around each step, not across yields: the server may stop
        # iterating (client gone) and drop this generator anywhere, on any thread.
        started = last = False
        try:
            while not last:
                token = bind(ctx)
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                except Exception as exc:
                    if raised_by_grpc(context, exc):
                        self._add_trace_id(context, ctx)
                        raise
                    failure, status = self._fail(exc, ctx, context, method, started)
                    # Only before the first message can a fallback stand in (as the one
                    # message of the stream); the runtime gives none after that.
                    if not failure.has_fallback:
                        self._end_stream(context, status)
                        return
                    self._add_trace_id(context, ctx)
                    item, last = failure.fallback_result, True
                finally:
                    reset(token)
                started = True
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                token = bind(ctx)
                try:
                    close()
                finally:
                    reset(token)
        if not last:
            self._succeeded(context, ctx)


def check_fallback(failure: Failure, method: Method) -> None:
    """Drop a fallback result that cannot be a response of ``method``: the fallback
    counts as failed, and the error's status answers."""
    result = failure.fallback_result
    if result is NO_RESULT or method.accepts(result):
        return
    failure.drop_fallback(
        "errtrace: the fallback for %s returned %s, not %s (%s); answering with the error",
        failure.error.code, type(result).__name__, method.expected(), method.path,
    )


def _handler_code(context: Any) -> grpc.StatusCode | None:
    """A non-OK status the handler set itself (kept rather than the code's own)."""
    try:
        code = context.code()
    except Exception:  # an older grpc without ServicerContext.code()
        return None
    if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
        return code
    return None


def _when_done(context: Any, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the RPC has terminated (the status was sent)."""
    # aio contexts (and the aio server's wrapper of a sync handler's context, whose own
    # add_callback grpc never runs for streams) have add_done_callback; sync ones do not.
    add_done = getattr(context, "add_done_callback", None)
    if add_done is not None:
        add_done(lambda _ctx: callback())
        return
    context.add_callback(callback)


def aborted_by_handler(context: Any, exc: BaseException) -> bool:
    """True when ``exc`` is the sync server's own abort (``context.abort`` or
    ``abort_with_status`` ran), which is not an application error.

    That abort raises a bare ``Exception()`` after marking the RPC state; the mark is
    the exact test. A grpc without that (private) state falls back to what the public
    API shows: a bare ``Exception()`` while a non-OK status is set on the context.
    On the aio server, a sync handler's ``context.abort`` raises ``grpc.aio.AbortError``.
    """
    if isinstance(exc, grpc.aio.AbortError):
        return True
    state = getattr(context, "_state", None)
    if state is not None and hasattr(state, "aborted"):
        return bool(state.aborted)
    if type(exc) is not Exception or exc.args:
        return False
    return _handler_code(context) is not None


def client_gone(context: Any, exc: BaseException) -> bool:
    """True when ``exc`` is the ``grpc.RpcError`` that the sync server's request iterator
    raises because the client cancelled the call (or its deadline passed).

    grpc keeps the errors it raised that way in the RPC state and ends such calls
    quietly; that list is the exact test. Without it: a bare ``grpc.RpcError`` (a failed
    outgoing call raises a subclass) while the RPC is no longer active.
    """
    if not isinstance(exc, grpc.RpcError):
        return False
    raised = getattr(getattr(context, "_state", None), "rpc_errors", None)
    if isinstance(raised, list):
        return any(exc is item for item in raised)
    is_active = getattr(context, "is_active", None)
    return type(exc) is grpc.RpcError and is_active is not None and not is_active()


def raised_by_grpc(context: Any, exc: BaseException) -> bool:
    """True when ``exc`` is gRPC's own (:func:`aborted_by_handler`, :func:`client_gone`):
    not an application error, it is re-raised for grpc to end the call as it does."""
    return aborted_by_handler(context, exc) or client_gone(context, exc)


class ServerInterceptor(ServerBase, grpc.ServerInterceptor):  # type: ignore[type-arg]
    """errtrace for ``grpc.server(..., interceptors=[...])`` (all four method kinds)."""

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        """Wrap the handler of this call (``None``, for an unknown method, stays None)."""
        return self._wrapped(continuation(handler_call_details), handler_call_details.method)

    def _unary_response(self, behavior: Behavior, method: Method) -> Behavior:
        return self._sync_unary(behavior, method)

    def _stream_response(self, behavior: Behavior, method: Method) -> Behavior:
        return self._sync_stream(behavior, method)


def _abort(context: Any, status: Status) -> NoReturn:
    """``context.abort_with_status(status)`` made of the two calls grpc makes of it, so
    that a wrapper around the context sees the code: OpenTelemetry's server
    interceptor records a call's status from ``abort`` but not from
    ``abort_with_status``, which it passes on as is."""
    context.set_trailing_metadata(status.trailing_metadata)
    context.abort(status.code, status.details)
    raise AssertionError("grpc's abort() returned")  # pragma: no cover - it raises
