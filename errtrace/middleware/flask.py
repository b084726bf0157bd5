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

Because the handlers run inside the middleware, ``errtrace.current()`` there is the
request's context, and the error is recorded (and logged) by the handler only: the
middleware sees an ordinary response.
"""

from __future__ import annotations

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
        return _problem_response(runtime, exc)

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


def _problem_response(runtime: Runtime, exc: BaseException) -> WerkzeugResponse:
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
    if response is None:
        status, headers, body = runtime.http_error(err, ctx)
        response = Response(body, status=status, headers=headers)
    # A level 0 error stops the process only once the client has its answer.
    response.call_on_close(lambda: runtime.after_response(failure))
    return response


__all__ = ["EXTENSION_KEY", "instrument_flask"]
