"""``errtrace.instrument`` for Starlette and FastAPI applications.

Starlette puts its own ``ServerErrorMiddleware`` outside every user middleware and
turns ``HTTPException`` (and FastAPI ``RequestValidationError``) into plain JSON inside
``ExceptionMiddleware``. To give every response the context, this module:

* adds :class:`~errtrace.middleware.asgi.ErrtraceMiddleware` as the outermost user
  middleware (it catches what escapes the routes, ``AppError`` included);
* installs exception handlers for ``HTTPException`` and ``RequestValidationError`` that
  answer with problem+json, keeping the framework's status and headers;
* installs a last-resort handler on ``ServerErrorMiddleware`` for errors raised by
  middlewares added outside errtrace's.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from errtrace.core.context import current
from errtrace.core.errors import AppError, error_for_http_status
from errtrace.core.runtime import Runtime, plain_fallback_response
from errtrace.middleware.asgi import ErrtraceMiddleware, asgi_getter

_MAX_FIELD_ERRORS = 100


def _problem_response(runtime: Runtime, request: Request, err: AppError) -> Response:
    ctx = current()
    if ctx is None:  # reached outside errtrace's middleware (a middleware added later)
        ctx = runtime.start(request.scope["headers"], asgi_getter)
    failure = runtime.fail(
        err, ctx, transport="http", method=request.method, route=request.url.path,
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
    return Response(body, status_code=status, headers=dict(headers))


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

    async def http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code < 400:  # a redirect or 304 raised as an exception
            return Response(status_code=exc.status_code, headers=exc.headers)
        detail = exc.detail if isinstance(exc.detail, str) else None
        err = error_for_http_status(exc.status_code, detail, exc.headers)
        return _problem_response(runtime, request, err)

    async def unhandled(request: Request, exc: Exception) -> Response:
        return _problem_response(runtime, request, _translate(exc))

    handlers = app.exception_handlers
    if _is_default_handler(handlers.get(HTTPException)):
        app.add_exception_handler(HTTPException, http_exception)
    if _is_default_handler(handlers.get(Exception)):
        app.add_exception_handler(Exception, unhandled)
    _install_fastapi(app, runtime)
    return app


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
        return _problem_response(runtime, request, err)

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
