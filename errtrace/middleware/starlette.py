"""``errtrace.instrument`` for Starlette and FastAPI applications.

Starlette puts its own ``ServerErrorMiddleware`` outside every user middleware and
turns ``HTTPException`` (and FastAPI ``RequestValidationError``) into plain JSON inside
``ExceptionMiddleware``. To give every response the context, this module:

* adds :class:`~errtrace.middleware.asgi.ErrtraceMiddleware` and, when the app builds its
  middleware stack (on its first request), moves it to the outermost place among the
  user middlewares, whatever the order of ``add_middleware`` calls: CORS preflights,
  trusted-host and authentication rejections carry ``X-Trace-ID`` and see the context;
* puts a second one innermost, right around the routes, sharing the request's context:
  the errors of the routes are answered there, so that their answers pass through the
  app's middlewares (CORS headers, compression) as ``HTTPException`` answers do; an app
  without middlewares of its own gets one layer, which does both;
* installs exception handlers for ``HTTPException`` and ``RequestValidationError`` that
  answer with problem+json, keeping the framework's status and headers (also for a
  websocket handshake, which Starlette answers with the response as a denial);
* keeps an ``Exception``/500 handler of the app's own: it answers unhandled exceptions
  (those errtrace translates to ``INTERNAL``), after errtrace recorded them, and its
  response gets ``X-Trace-ID``; errors with a code of their own get errtrace's answer;
* installs a last-resort handler on ``ServerErrorMiddleware`` for errors raised outside
  errtrace's middleware;
* instruments Starlette and FastAPI apps mounted in the routes (at the same moment,
  with the same runtime), which share the request's context;
* maps Starlette's ``ClientDisconnect`` (the client left mid-upload) and
  ``WebSocketDisconnect`` (a websocket client left while the handler waited for it)
  to ``CANCELLED``.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Host, Mount, Router
from starlette.websockets import WebSocketDisconnect

from errtrace.core.context import current
from errtrace.core.errors import AppError, error_for_http_status, register_exception
from errtrace.core.runtime import Runtime, plain_fallback_response
from errtrace.middleware.asgi import (
    ErrtraceMiddleware,
    Receive,
    Responder,
    Scope,
    Send,
)

log = logging.getLogger("errtrace")

_MAX_FIELD_ERRORS = 100


async def _problem_response(runtime: Runtime, request: Request, err: AppError) -> Response:
    ctx = current()
    if ctx is None:  # reached outside errtrace's middleware (a middleware added later)
        ctx = runtime.start_pairs(request.scope["headers"])
    scope = request.scope
    failure = await runtime.fail_async(
        err, ctx, transport="http", method=scope.get("method"), route=scope.get("path"),
    )
    if failure.has_fallback:
        result = failure.fallback_result
        if isinstance(result, Response):
            return result
        plain = plain_fallback_response(
            result, (runtime.config.trace_id_header, ctx.trace_id), err.code
        )
        if plain is not None:
            return Response(plain[2], status_code=plain[0], headers=dict(plain[1]))
    status, headers, body = runtime.http_error(err, ctx)
    response = Response(body, status_code=status)
    for name, value in headers:  # appended: a name may repeat (Set-Cookie)
        response.headers.append(name, value)
    return response


def _is_default_handler(handler: Any) -> bool:
    return handler is None or getattr(handler, "__module__", "").startswith(
        ("fastapi.", "starlette.")
    )


def instrument_starlette(app: Starlette, runtime: Runtime) -> Starlette:
    """Install errtrace on a Starlette or FastAPI app; returns the same app."""
    if getattr(app.state, "errtrace_runtime", None) is not None:
        return app  # instrumented already: idempotent
    try:
        # Starlette types its middleware factories with a positional-only app parameter.
        app.add_middleware(ErrtraceMiddleware, runtime=runtime)  # type: ignore[arg-type]
    except RuntimeError as exc:
        raise RuntimeError(
            "errtrace.instrument(app) must be called before the application starts"
        ) from exc
    app.state.errtrace_runtime = runtime
    register_exception(ClientDisconnect, "CANCELLED")
    register_exception(WebSocketDisconnect, "CANCELLED")

    async def http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code < 400:  # a redirect or 304 raised as an exception
            return Response(status_code=exc.status_code, headers=exc.headers)
        detail = exc.detail if isinstance(exc.detail, str) else None
        err = error_for_http_status(exc.status_code, detail, exc.headers)
        if detail is None and exc.detail is not None:
            # FastAPI documents structured details; RFC 9457 makes `detail` a string,
            # so the structure goes to the client as `details.detail`.
            err.details["detail"] = exc.detail
        return await _problem_response(runtime, request, err)

    async def unhandled(request: Request, exc: Exception) -> Response:
        return await _problem_response(runtime, request, _translate(exc))

    handlers = app.exception_handlers
    if _is_default_handler(handlers.get(HTTPException)):
        app.add_exception_handler(HTTPException, http_exception)
    if _is_default_handler(handlers.get(Exception)):
        app.add_exception_handler(Exception, unhandled)
    _install_fastapi(app, runtime)
    _hook_build(app, runtime, unhandled)
    return app


def _hook_build(app: Starlette, runtime: Runtime, own_handler: Any) -> None:
    """Finish the installation when the app builds its middleware stack, so that what
    was added after ``instrument()`` (middlewares, handlers, mounts) is taken in."""
    build = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        handlers = app.exception_handlers
        found = [handlers.get(key) for key in (Exception, 500)]
        theirs = next((h for h in found if h is not None and h is not own_handler), None)
        entries = app.user_middleware
        entries[:] = [m for m in entries if not _is_ours(m, runtime)]
        responder = _handler_responder(theirs) if theirs is not None else None
        # Outermost: the context and X-Trace-ID for every answer, the app's middlewares'
        # own included, and the errors those middlewares raise. Innermost: the errors of
        # the routes, answered there so that their answers go out through the app's
        # middlewares (CORS, compression, security headers) like any other answer.
        # With no middleware of the app's own the two places are one, and one layer
        # does both jobs (each layer costs every request about a microsecond or two).
        alone = not entries
        if not alone:
            entries.insert(0, Middleware(
                ErrtraceMiddleware, runtime=runtime, responder=responder,  # type: ignore[arg-type]
                hold_stream_end=False, rewrite=False,
            ))
        entries.append(Middleware(
            ErrtraceMiddleware, runtime=runtime, responder=responder,  # type: ignore[arg-type]
            add_trace_header=alone, hold_stream_end=False,
        ))
        for route in app.routes:
            _instrument_mounted(route, runtime)
        return build()

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _is_ours(entry: Middleware, runtime: Runtime) -> bool:
    factory: Any = entry.cls
    return factory is ErrtraceMiddleware and entry.kwargs.get("runtime") is runtime


def _instrument_mounted(route: BaseRoute, runtime: Runtime) -> None:
    if not isinstance(route, (Mount, Host)):
        return
    sub = route.app
    if isinstance(sub, Starlette):
        if getattr(sub.state, "errtrace_runtime", None) is None:
            if sub.middleware_stack is not None:
                log.warning("errtrace: mounted app %r started already; not instrumented", sub)
                return
            instrument_starlette(sub, runtime)
    elif isinstance(sub, Router):
        for inner in sub.routes:
            _instrument_mounted(inner, runtime)


def _handler_responder(handler: Any) -> Responder:
    """An app's own ``Exception``/500 handler as errtrace's answer to unhandled errors."""

    async def respond(exc: BaseException, scope: Scope, receive: Receive, send: Send) -> bool:
        request = Request(scope, receive)
        try:
            if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                type(handler).__call__
            ):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        except Exception:
            log.exception("errtrace: the app's error handler %r raised; errtrace answers", handler)
            return False
        if response is None:
            return False
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await response(scope, receive, tracked)
        except Exception:
            # A response that fails while it is sent (a FileResponse of a missing file):
            # errtrace answers if nothing went out; else the answer stays cut short.
            log.exception("errtrace: the response of the app's error handler %r failed", handler)
            return started
        return True

    return respond


def _translate(exc: Exception) -> AppError:
    from errtrace.core.errors import to_app_error

    return to_app_error(exc)


def _install_fastapi(app: Starlette, runtime: Runtime) -> None:
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        return

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        err = AppError(
            "VALIDATION_FAILED",
            "The request did not validate; see 'errors'.",
            details={"errors": field_errors(exc.errors())},
        )
        return await _problem_response(runtime, request, err)

    if _is_default_handler(app.exception_handlers.get(RequestValidationError)):
        app.add_exception_handler(RequestValidationError, validation_error)


def field_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors as ``{field, message, type}``; the client's input is not echoed."""
    out: list[dict[str, Any]] = []
    for item in list(errors)[:_MAX_FIELD_ERRORS]:
        loc = [str(part) for part in item.get("loc", ())]
        out.append({
            "field": ".".join(loc),
            "message": str(item.get("msg", ""))[:512],
            "type": str(item.get("type", ""))[:128],
        })
    return out
