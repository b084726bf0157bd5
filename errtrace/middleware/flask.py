"""``errtrace.instrument`` for Flask applications.

Flask catches every exception inside ``app.wsgi_app`` and answers with its own HTML
500 or ``HTTPException`` page, so a WSGI middleware alone would never see them. To give
every response the context, this module:

* wraps ``app.wsgi_app`` in :class:`~errtrace.middleware.wsgi.ErrtraceWSGIMiddleware`
  (the context for the whole request, ``X-Trace-ID`` on every response, errors raised
  while a streamed body is sent);
* registers error handlers for ``HTTPException`` and ``Exception`` (unless the app
  registered its own first) that record the error once and answer with problem+json,
  keeping the framework's status and headers (a 405 keeps ``Allow``).

The app's own 500 page still wins for unhandled exceptions: when the app has a handler
for ``500`` or ``InternalServerError`` (or a blueprint one, looked up as Flask does;
registered before or after ``instrument()``), an exception nothing maps to a code (one
errtrace would answer as ``INTERNAL``) is recorded once and then handed to that
handler, wrapped in ``InternalServerError`` as plain Flask does
(``errtrace.current().event_id`` names the event there). An ``AppError`` carries
its own code and status and keeps errtrace's problem+json, unless the app registered a
handler for ``AppError`` (or a subclass) itself, which Flask then calls directly. A
fallback registered for the code answers before the 500 page; a 500 handler that
raises is logged and errtrace's problem+json answers instead.

Because the handlers run inside the middleware, ``errtrace.current()`` there is the
request's context, and the error is recorded (and logged) by the handler only: the
middleware sees an ordinary response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

try:
    from flask import Flask, Response, request
    from werkzeug.exceptions import HTTPException, InternalServerError
    from werkzeug.wrappers import Response as WerkzeugResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f'Flask support needs: pip install "errtrace[flask]" ({exc})') from exc

from errtrace.core.context import current
from errtrace.core.errors import AppError, error_for_http_status
from errtrace.core.runtime import Runtime, plain_fallback_response
from errtrace.middleware.wsgi import ErrtraceWSGIMiddleware, wsgi_getter

EXTENSION_KEY = "errtrace"

log = logging.getLogger("errtrace")

_ServerErrorPage = Callable[[Exception], "WerkzeugResponse | None"]


def instrument_flask(app: Flask, runtime: Runtime) -> Flask:
    """Install errtrace on a Flask app; returns the same app (idempotent)."""
    if EXTENSION_KEY in app.extensions:
        return app
    app.wsgi_app = ErrtraceWSGIMiddleware(app.wsgi_app, runtime)  # type: ignore[method-assign]
    app.extensions[EXTENSION_KEY] = runtime

    def http_exception(exc: HTTPException) -> Any:
        return _http_exception_response(runtime, exc)

    def unhandled(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):  # TRAP_HTTP_EXCEPTIONS routes them here
            return _http_exception_response(runtime, exc)
        return _problem_response(runtime, exc, server_error_page)

    def server_error_page(exc: Exception) -> WerkzeugResponse | None:
        # Looked up per request, so that a handler registered after instrument() counts.
        handler = _server_error_handler(app, ours=(http_exception, unhandled))
        if handler is None:
            return None
        try:
            rv = app.ensure_sync(handler)(InternalServerError(original_exception=exc))
            return app.make_response(rv)
        except Exception:
            log.exception("errtrace: the app's 500 error handler failed; sending problem+json")
            return None

    # Handlers registered without a status code live under spec[None][None]; a handler
    # the app registered there first is the app's decision and is kept.
    registered = app.error_handler_spec.get(None, {}).get(None, {})
    if HTTPException not in registered:
        app.register_error_handler(HTTPException, http_exception)
    if Exception not in registered:
        app.register_error_handler(Exception, unhandled)
    return app


def _http_exception_response(runtime: Runtime, exc: HTTPException) -> Any:
    if exc.response is not None:  # abort(response): the app chose the response
        return exc.response
    status = exc.code
    if status is None or status < 400:  # a redirect or 304 raised as an exception
        return exc.get_response(request.environ)
    if isinstance(exc, InternalServerError) and exc.original_exception is not None:
        # Flask's own handle_exception wraps what escaped the view (e.g. an after_request
        # function): record the original, not the wrapper.
        return _problem_response(runtime, exc.original_exception)
    headers = {
        name: value
        for name, value in exc.get_headers(request.environ)
        if name.lower() != "content-type"
    }
    err = error_for_http_status(status, exc.description, headers)
    return _problem_response(runtime, err)


def _server_error_handler(app: Flask, ours: tuple[object, ...]) -> Callable[..., Any] | None:
    """The handler Flask's ``handle_exception`` would pick for a 500, unless it is ours.

    Flask's order: a code-specific handler (blueprints first, then the app), then a
    class handler along ``InternalServerError``'s MRO, blueprints first again.
    """
    names = (*request.blueprints, None)
    for code in (500, None):
        for name in names:
            handlers = app.error_handler_spec.get(name, {}).get(code)
            if not handlers:
                continue
            for cls in InternalServerError.__mro__:
                handler = handlers.get(cls)
                if handler is not None:
                    return None if handler in ours else handler
    return None


def _problem_response(
    runtime: Runtime, exc: BaseException, server_error_page: _ServerErrorPage | None = None
) -> WerkzeugResponse:
    ctx = current()
    if ctx is None:  # reached outside errtrace's middleware (a test request context)
        ctx = runtime.start(request.environ, wsgi_getter)
    failure = runtime.fail(
        exc, ctx, transport="http", method=request.method, route=request.path,
    )
    err: AppError = failure.error
    response: WerkzeugResponse | None = None
    if failure.has_fallback:
        result = failure.fallback_result
        if isinstance(result, WerkzeugResponse):
            response = result
        else:
            plain = plain_fallback_response(
                result, (runtime.config.trace_id_header, ctx.trace_id), err.code
            )
            if plain is not None:
                response = Response(plain[2], status=plain[0], headers=plain[1])
    if response is None and server_error_page is not None and err.unhandled:
        assert isinstance(exc, Exception)  # errtrace's handler receives Exceptions only
        response = server_error_page(exc)
    if response is None:
        status, headers, body = runtime.http_error(err, ctx)
        response = Response(body, status=status, headers=headers)
    # A level 0 error stops the process only once the client has its answer.
    response.call_on_close(lambda: runtime.after_response(failure))
    return response


__all__ = ["EXTENSION_KEY", "instrument_flask"]
