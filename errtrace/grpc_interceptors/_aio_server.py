"""The ``grpc.aio`` server interceptor: the sync one's lifecycle, awaited.

A wrapped behavior keeps the kind the aio server dispatches on: a coroutine function
stays one (unary responses, and streaming handlers that ``await context.write``), an
async generator function stays one. A plain function (the aio server runs those in a
thread pool) is wrapped as a coroutine or async generator that runs it in a thread with
the context copied (``asyncio.to_thread``), so its errors are answered the same way.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio

from errtrace.core.context import ErrorContext, bind, reset
from errtrace.grpc_interceptors._server import Behavior, ServerBase

_DONE: Any = object()


def _next(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


class AioServerInterceptor(ServerBase, grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """errtrace for ``grpc.aio.server(interceptors=[...])`` (all four method kinds)."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        """Wrap the handler of this call (``None``, for an unknown method, stays None)."""
        handler = await continuation(handler_call_details)
        return self._wrapped(handler, handler_call_details.method)

    async def _answer(
        self, exc: Exception, ctx: ErrorContext, context: Any, method: str, started: bool
    ) -> Any:
        """Record ``exc`` and abort with its status; or return the fallback's message."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc  # the handler's own abort: its status was sent already
        failure, status = self._fail(exc, ctx, context, method, started)
        if failure.has_fallback:
            self._add_trace_id(context, ctx)
            return failure.fallback_result
        await context.abort(status.code, status.details, status.trailing_metadata)

    @staticmethod
    async def _stepper(
        behavior: Behavior, request: Any, context: Any
    ) -> Callable[[], Awaitable[Any]]:
        """An awaitable ``next()`` over the handler's responses (``_DONE`` at the end)."""
        if inspect.isasyncgenfunction(behavior):
            agen = behavior(request, context)

            async def step() -> Any:
                try:
                    return await agen.__anext__()
                except StopAsyncIteration:
                    return _DONE

            return step
        iterator = iter(await asyncio.to_thread(behavior, request, context))

        async def next_in_thread() -> Any:
            return await asyncio.to_thread(_next, iterator)

        return next_in_thread

    def _unary_response(self, behavior: Behavior, method: str) -> Behavior:
        call: Callable[[Any, Any], Awaitable[Any]]
        if inspect.iscoroutinefunction(behavior):
            call = behavior
        else:
            async def call(request: Any, context: Any) -> Any:
                return await asyncio.to_thread(behavior, request, context)

        async def unary_response(request: Any, context: Any) -> Any:
            ctx = self._start(context)
            token = bind(ctx)
            try:
                response = await call(request, context)
            except Exception as exc:
                return await self._answer(exc, ctx, context, method, started=False)
            finally:
                reset(token)
            self._succeeded(context, ctx)
            return response

        return unary_response

    def _stream_response(self, behavior: Behavior, method: str) -> Behavior:
        if inspect.iscoroutinefunction(behavior):
            # The reader/writer API: the handler writes with ``await context.write``.
            async def writer(request: Any, context: Any) -> None:
                ctx = self._start(context)
                token = bind(ctx)
                try:
                    await behavior(request, context)
                except Exception as exc:
                    result = await self._answer(exc, ctx, context, method, started=False)
                    await context.write(result)
                    return
                finally:
                    reset(token)
                self._succeeded(context, ctx)

            return writer

        async def stream_response(request: Any, context: Any) -> AsyncIterator[Any]:
            ctx = self._start(context)
            step: Callable[[], Awaitable[Any]] | None = None
            failed: Exception | None = None
            token = bind(ctx)
            try:
                step = await self._stepper(behavior, request, context)
            except Exception as exc:
                failed = exc
            finally:
                reset(token)
            if step is None:
                assert failed is not None
                yield await self._answer(failed, ctx, context, method, started=False)
                return
            started = last = False
            # Bound around each step only: the server may drop this generator anywhere.
            while not last:
                token = bind(ctx)
                try:
                    item = await step()
                    if item is _DONE:
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
