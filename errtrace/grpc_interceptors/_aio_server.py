"""The ``grpc.aio`` server interceptor: the sync one's lifecycle, awaited.

A wrapped behavior keeps the kind the aio server dispatches on. A coroutine function
stays one (unary responses, and streaming handlers that ``await context.write``), an
async generator function stays one. A plain function stays a plain function wrapped
with the sync server's own lifecycle (:class:`~._server.ServerBase`): the aio server
then treats it exactly as it treats an uninstrumented sync handler, running it in its
``migration_thread_pool`` (or the loop's default executor when none was given) with a
sync servicer context and a sync request iterator. One addition: grpc.aio stops reading a
sync response stream that outlives its call (client cancelled, deadline passed, a
message could not be sent) without closing it, so errtrace closes it when the call ends
and the handler's ``finally`` blocks run.

A fallback defined with ``async def`` answers the failures of async handlers: they run
on the loop, so ``runtime.fail_async`` awaits it. A plain-function handler runs in a
worker thread with no loop to await it in; there, as on the sync server,
``runtime.fail`` counts it as failed.

Handlers see the servicer context through a thin wrapper that forwards everything. It
adds ``x-trace-id`` to the trailers of the handler's own ``abort`` (the aio server sends
the status inside ``abort``, so it cannot be added afterwards, as the sync server does),
and notes whether a streaming handler wrote a message. A sync handler's context also
gets what the sync server's has and grpc's sync wrapper lacks: ``trailing_metadata()``,
``code()``, ``details()`` and ``abort_with_status()``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import grpc
import grpc.aio

from errtrace.core.context import ErrorContext, bind, current, reset
from errtrace.core.runtime import Failure
from errtrace.grpc_interceptors._metadata import merged
from errtrace.grpc_interceptors._server import Behavior, Method, ServerBase, check_fallback
from errtrace.grpc_interceptors._status import Status

_EMPTY: tuple[tuple[str, Any], ...] = ()
log = logging.getLogger("errtrace")


def _runs_on_loop(behavior: Behavior) -> bool:
    """Whether the aio server awaits ``behavior`` (rather than run it in a thread):
    the test grpc.aio applies to the handler it is given."""
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def _with_trace_id(trace_key: str, pairs: Iterable[tuple[str, Any]]) -> tuple[Any, ...]:
    """``pairs`` plus ``x-trace-id`` of the bound context (a value already there wins)."""
    ctx = current()
    if ctx is None:
        return tuple(pairs)
    return tuple(merged(pairs, ((trace_key, ctx.trace_id),)))


class _AsyncHandlerContext:
    """The ``grpc.aio.ServicerContext`` an async handler sees (everything forwarded)."""

    __slots__ = ("_context", "_trace_key", "wrote")

    def __init__(self, context: Any, trace_key: str) -> None:
        self._context = context
        self._trace_key = trace_key
        self.wrote = False
        """Whether the handler wrote a message (the response started)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def write(self, message: Any) -> None:
        """Send one response message."""
        self.wrote = True
        await self._context.write(message)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = _EMPTY
    ) -> None:
        """End the call with ``code``; the trailers also carry ``x-trace-id``."""
        # As grpc.aio does: no trailers given means those set on the context.
        pairs = tuple(trailing_metadata) or tuple(self._context.trailing_metadata() or ())
        await self._context.abort(code, details, _with_trace_id(self._trace_key, pairs))

    async def abort_with_status(self, status: grpc.Status) -> None:
        """End the call with ``status`` (code, details and trailing metadata)."""
        await self.abort(status.code, status.details, status.trailing_metadata)


class _SyncHandlerContext:
    """The context a sync handler sees on the aio server: grpc's sync wrapper, forwarded,
    plus what errtrace's shared sync lifecycle reads (and the sync server's context has).
    """

    __slots__ = ("_code", "_context", "_details", "_done", "_trace_key", "_trailing")

    def __init__(self, context: Any, trace_key: str) -> None:
        self._context = context
        self._trace_key = trace_key
        self._trailing: tuple[tuple[str, Any], ...] = _EMPTY
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._done: list[Callable[[Any], None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def set_trailing_metadata(self, metadata: Any) -> None:
        """Set the trailing metadata."""
        self._trailing = tuple(metadata)
        self._context.set_trailing_metadata(self._trailing)

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        """The trailing metadata set so far."""
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        """Set the status code."""
        self._code = code
        self._context.set_code(code)

    def code(self) -> grpc.StatusCode | None:
        """The status code set so far (None: none was set)."""
        return self._code

    def set_details(self, details: str) -> None:
        """Set the status message."""
        self._details = details
        self._context.set_details(details)

    def details(self) -> str | None:
        """The status message set so far."""
        return self._details

    def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = _EMPTY
    ) -> None:
        """End the call with ``code`` (raises); the trailers also carry ``x-trace-id``."""
        pairs = tuple(trailing_metadata) or self._trailing
        self._context.abort(code, details, _with_trace_id(self._trace_key, pairs))

    def abort_with_status(self, status: grpc.Status) -> None:
        """End the call with ``status`` (code, details and trailing metadata; raises)."""
        self.abort(status.code, status.details, status.trailing_metadata)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(context)`` once the handler has finished.

        grpc's own ``add_callback`` runs for unary responses only, before the status is
        sent; errtrace's after-response work (a level 0 exit) goes here instead. It runs
        after an abort, which sends the status before it returns; after a stream that
        failed mid-way, just before grpc sends the status set for it (the default exit,
        SIGTERM, lets the server finish its calls).
        """
        self._done.append(callback)

    def run_done_callbacks(self) -> None:
        """Run what :meth:`add_done_callback` collected (once)."""
        done, self._done = self._done, []
        for callback in done:
            callback(self)


class _SyncStream:
    """The response iterator grpc.aio gets for a sync streaming handler: one step of the
    handler's stream per ``next()``, in grpc's worker thread, and closed when the call ends.

    grpc.aio stops iterating a sync stream when the call ends before it (the client
    cancelled, the deadline passed, a message could not be sent) and never closes it:
    the handler's ``finally`` blocks would not run. :meth:`call_ended` runs when the
    call's task is done and has the stream closed. The lock keeps the two apart: a
    generator cannot be closed while it runs, so the close waits for the running step.
    """

    __slots__ = ("_context", "_ended", "_lock", "_open", "_over", "_stream")

    def __init__(
        self, open_stream: Callable[[], Iterator[Any]], context: _SyncHandlerContext
    ) -> None:
        self._open = open_stream
        self._stream: Iterator[Any] | None = None
        self._context = context
        self._lock = threading.Lock()
        self._ended = False
        """The stream ran out, failed or was closed: no more steps."""
        self._over = False
        """The call ended (set on the loop)."""

    def __iter__(self) -> _SyncStream:
        return self

    def __next__(self) -> Any:
        with self._lock:
            if self._ended:
                raise StopIteration
            try:
                if self._stream is None:  # the handler starts in the worker thread
                    self._stream = self._open()
                item = next(self._stream)
            except BaseException:  # StopIteration too: the stream is over
                self._end()
                raise
            if self._over:  # the call ended during this step: nobody reads the item
                self._end_after_call()
                raise StopIteration
            return item

    def close(self) -> None:
        """Close the handler's stream (its ``finally`` blocks run), unless it ended."""
        with self._lock:
            self._end()

    def call_ended(self, _task: object) -> None:
        """Have the stream closed, unless it ended first: the call's task is done."""
        self._over = True
        if self._ended:
            return
        # Not on the loop: the close may wait for a step, and runs the handler's cleanup.
        # Not in grpc's pool either: its thread for this stream may be blocked for good.
        try:
            threading.Thread(target=self._close_after_call, daemon=True).start()
        except RuntimeError:  # interpreter shutdown: no new threads
            self._close_after_call()

    def _close_after_call(self) -> None:
        with self._lock:
            self._end_after_call()

    def _end_after_call(self) -> None:
        try:
            self._end()
        except Exception:  # the call is over: nobody is left to get the error
            log.exception("errtrace: closing a response stream after its call ended failed")

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
        finally:
            self._context.run_done_callbacks()


class AioServerInterceptor(ServerBase, grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """errtrace for ``grpc.aio.server(interceptors=[...])`` (all four method kinds)."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        """Wrap the handler of this call (``None``, for an unknown method, stays None)."""
        handler = await continuation(handler_call_details)
        return self._wrapped(handler, handler_call_details.method)

    async def _answer(
        self, exc: Exception, ctx: ErrorContext, context: Any, method: Method, started: bool
    ) -> Any:
        """Record ``exc`` and abort with its status; or return the fallback's message."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc  # the handler's own abort: its status was sent already
        failure, status = await self._fail_async(exc, ctx, context, method, started)
        if failure.has_fallback:
            self._add_trace_id(context, ctx)
            return failure.fallback_result
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def _fail_async(
        self, exc: BaseException, ctx: ErrorContext, context: Any, method: Method, started: bool
    ) -> tuple[Failure, Status]:
        """:meth:`~._server.ServerBase._fail` for handlers that run on the loop: a fallback
        defined with ``async def`` is awaited (one that raises is logged and counted, and
        the error's status answers)."""
        failure = await self.runtime.fail_async(
            exc, ctx, transport="grpc", method=method.path, response_started=started
        )
        check_fallback(failure, method)
        return failure, self._status_for(failure, ctx, context)

    # -- plain functions: the sync lifecycle, run by grpc in its thread pool ---------------

    def _sync_unary_on_aio(self, behavior: Behavior, method: Method) -> Behavior:
        wrapped = self._sync_unary(behavior, method)
        trace_key = self._trace_key

        def unary_response(request: Any, context: Any) -> Any:
            handler_context = _SyncHandlerContext(context, trace_key)
            try:
                return wrapped(request, handler_context)
            finally:
                handler_context.run_done_callbacks()

        return unary_response

    def _sync_stream_on_aio(self, behavior: Behavior, method: Method) -> Behavior:
        wrapped = self._sync_stream(behavior, method)
        trace_key = self._trace_key

        def stream_response(request: Any, context: Any) -> Iterator[Any]:
            handler_context = _SyncHandlerContext(context, trace_key)
            stream = _SyncStream(lambda: wrapped(request, handler_context), handler_context)
            # grpc.aio calls this on the loop, in the call's task, and iterates the stream
            # in a worker thread.
            try:
                task = asyncio.current_task()
            except RuntimeError:  # not on a loop: nothing tells when the call ends
                task = None
            if task is not None:
                task.add_done_callback(stream.call_ended)
            return stream

        return stream_response

    def _end_stream(self, context: Any, status: Status) -> None:
        # grpc.aio writes a sync generator's messages on the loop while the worker
        # thread already runs the next step: an abort from the thread could collide
        # with that write (and the call hang). The status is set instead; grpc sends it
        # once the generator has ended and the last message went out.
        context.set_code(status.code)
        context.set_details(status.details)
        context.set_trailing_metadata(status.trailing_metadata)

    # -- coroutine functions and async generators --------------------------------------------

    def _unary_response(self, behavior: Behavior, method: Method) -> Behavior:
        if not _runs_on_loop(behavior):
            return self._sync_unary_on_aio(behavior, method)
        trace_key = self._trace_key

        async def unary_response(request: Any, context: Any) -> Any:
            ctx = self._start(context)
            token = bind(ctx)
            try:
                response = await behavior(request, _AsyncHandlerContext(context, trace_key))
            except Exception as exc:
                return await self._answer(exc, ctx, context, method, started=False)
            finally:
                reset(token)
            self._succeeded(context, ctx)
            return response

        return unary_response

    def _stream_response(self, behavior: Behavior, method: Method) -> Behavior:
        if not _runs_on_loop(behavior):
            return self._sync_stream_on_aio(behavior, method)
        if inspect.iscoroutinefunction(behavior):
            return self._writer(behavior, method)
        trace_key = self._trace_key

        async def stream_response(request: Any, context: Any) -> AsyncIterator[Any]:
            ctx = self._start(context)
            agen = behavior(request, _AsyncHandlerContext(context, trace_key))
            started = last = False
            # Bound around each step only: the server may drop this generator anywhere.
            while not last:
                token = bind(ctx)
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    item = await self._answer(exc, ctx, context, method, started)
                    last = True
                finally:
                    reset(token)
                started = True
                yield item
            if not last:
                self._succeeded(context, ctx)

        return stream_response

    def _writer(self, behavior: Behavior, method: Method) -> Behavior:
        """The reader/writer API: the handler writes with ``await context.write``."""
        trace_key = self._trace_key

        async def writer(request: Any, context: Any) -> None:
            ctx = self._start(context)
            handler_context = _AsyncHandlerContext(context, trace_key)
            token = bind(ctx)
            try:
                await behavior(request, handler_context)
            except Exception as exc:
                # After a write, as after a yield: no fallback, the status ends the stream.
                result = await self._answer(exc, ctx, context, method, handler_context.wrote)
                await context.write(result)
                return
            finally:
                reset(token)
            self._succeeded(context, ctx)

        return writer
