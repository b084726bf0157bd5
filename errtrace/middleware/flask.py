"""``errtrace.instrument`` for Flask applications.

Flask catches every exception inside ``app.wsgi_app`` and answers with its own HTML
500 or ``HTTPException`` page, so a WSGI middleware alone would never see them. To give
every response the context, this module:

* wraps ``app.wsgi_app`` in :class:`~errtrace.middleware.wsgi.ErrtraceWSGIMiddleware`
  (the context for the whole request, ``X-Trace-ID`` on every response, errors raised
  while a streamed body is sent);
* with OpenTelemetry installed, takes the ids of a span started inside the middleware
  (by an OpenTelemetry WSGI middleware wrapped inside it, or by a ``before_request``
  function) once Flask's ``before_request`` step is done;
* takes over the two steps of Flask's own exception handling on the app,
  ``handle_user_exception`` and ``handle_exception``. errtrace registers no error
  handler, so no handler the app registers, before or after ``instrument()``, can
  replace it: the app's handlers are looked up when an error happens, in Flask's order
  (blueprints first; a status code, then the exception's class).

What answers an exception raised while a request is handled:

* A handler the app registered for the exception's own class (any class but
  ``Exception``: ``AppError`` or a subclass, ``ValueError``, ``HTTPException`` or one of
  werkzeug's classes, or a status code) is the app's decision: it answers, and errtrace
  records nothing, as on ASGI. It wins over an ``Exception`` handler, a blueprint's
  too, since errtrace answers before those.
* Otherwise errtrace records the error, once. An error with a code of its own (an
  ``AppError``, a mapped exception such as ``TimeoutError``, a werkzeug
  ``HTTPException``) answers with errtrace's problem+json, even when the app has an
  ``Exception`` handler. A werkzeug exception keeps its status and headers (a 405 keeps
  ``Allow``; repeated headers such as two ``WWW-Authenticate`` challenges are all kept).
* An unhandled exception (one errtrace translates to ``INTERNAL``) is answered by the
  app's own handler once errtrace has recorded it: its ``Exception`` handler, called
  with the exception as Flask does; else its handler for ``500`` or
  ``InternalServerError``, called with the exception wrapped in
  ``InternalServerError`` as plain Flask does (``errtrace.current().event_id`` names
  the event in both). Its response gets ``X-Trace-ID``.
* A fallback registered for the code answers before any of these. An app handler that
  raises or returns nothing is logged, and errtrace's problem+json answers instead.

When Flask propagates exceptions (``PROPAGATE_EXCEPTIONS``, by default on with
``TESTING`` or ``DEBUG``), an unhandled exception no handler takes is recorded, then
raised on to the test client, the debugger or the server, as in plain Flask; the WSGI
middleware lets it pass (see ``PROPAGATED_KEY``).

Errors that no handler of the app takes reach ``handle_exception``, as in plain Flask
(so do errors raised by ``after_request`` functions or by an error handler). Flask's
``got_request_exception`` signal, which error reporters listen to, is sent once
errtrace has recorded the error, for exactly the errors plain Flask sends it for: those,
and an ``HTTPException`` trapped by ``TRAP_HTTP_EXCEPTIONS`` that no handler takes.
errtrace's one log record replaces Flask's; as in plain Flask, the response still goes
through the ``after_request`` functions, and teardown functions see the error.

A client that goes away mid-upload (werkzeug's ``ClientDisconnected``) is recorded as
``CANCELLED`` (level 5), as on ASGI. A werkzeug exception whose description is not a
string (``abort(400, description={"name": ["required"]})``) gives it to the client as
``details.description``: RFC 9457 section 3.1.4 makes ``detail`` a string, so
``detail`` is then the class's default description.

A level 0 error stops the process (``exit_on_fatal``) only once the server closed the
response: the WSGI middleware runs it then (see ``AFTER_RESPONSE_KEY``). Nothing of the
request is attached to the response object, which a fallback or an app handler may
share between requests.

Because all this runs inside the middleware, ``errtrace.current()`` in the app's
handlers is the request's context, and the error is recorded here only: the middleware
sees an ordinary response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

try:
    from flask import Flask, Response, got_request_exception, request
    from werkzeug.exceptions import (
        BadRequestKeyError,
        ClientDisconnected,
        HTTPException,
        InternalServerError,
    )
    from werkzeug.routing import RoutingException
    from werkzeug.wrappers import Response as WerkzeugResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f'Flask support needs: pip install "errtrace[flask]" ({exc})') from exc

from errtrace.core.context import current
from errtrace.core.errors import AppError, error_for_http_status, register_exception
from errtrace.core.runtime import Runtime, plain_fallback_response
from errtrace.middleware.wsgi import (
    AFTER_RESPONSE_KEY,
    PROPAGATED_KEY,
    ErrtraceWSGIMiddleware,
    wsgi_getter,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

EXTENSION_KEY = "errtrace"

log = logging.getLogger("errtrace")

_Page = Callable[[Exception], "WerkzeugResponse | None"]


def instrument_flask(app: Flask, runtime: Runtime) -> Flask:
    """Install errtrace on a Flask app; returns the same app (idempotent)."""
    if EXTENSION_KEY in app.extensions:
        return app
    app.wsgi_app = ErrtraceWSGIMiddleware(app.wsgi_app, runtime)  # type: ignore[method-assign]
    app.extensions[EXTENSION_KEY] = runtime
    register_exception(ClientDisconnected, "CANCELLED")
    handling = _Handling(app, runtime)
    # Set on the instance, where Flask looks them up. A subclass's own
    # handle_user_exception is kept: errtrace hands it the errors the app's handlers take.
    app.handle_user_exception = handling.handle_user_exception  # type: ignore[method-assign]
    app.handle_exception = handling.handle_exception  # type: ignore[method-assign]
    if runtime.span_source is not None:
        app.preprocess_request = handling.preprocess_request  # type: ignore[method-assign]
    return app


class _Handling:
    """errtrace's part of one app's exception handling (nothing per request on it)."""

    def __init__(self, app: Flask, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.flask_handle_user_exception = app.handle_user_exception
        self.flask_preprocess_request = app.preprocess_request

    def preprocess_request(self) -> Any:
        """Flask's ``before_request`` step, then the ids of an OpenTelemetry span one
        of those functions started (Flask's OpenTelemetry instrumentation starts its
        span there, inside errtrace's WSGI middleware)."""
        result = self.flask_preprocess_request()
        ctx = current()
        if ctx is not None:
            self.runtime.follow_span(ctx)
        return result

    def handle_user_exception(self, e: Exception) -> Any:
        """Flask's first step, for an exception raised by a view or a before_request
        function: the app's handler for the exception's class, else errtrace."""
        app = self.app
        if isinstance(e, BadRequestKeyError) and (
            app.debug or app.config["TRAP_BAD_REQUEST_ERRORS"]
        ):
            e.show_exception = True  # as Flask does: the missing key shows in debug
        trapped = isinstance(e, HTTPException) and app.trap_http_exception(e)
        if isinstance(e, HTTPException) and not trapped and (
            e.code is None or isinstance(e, RoutingException)
        ):
            return self.flask_handle_user_exception(e)  # a response or redirect: as is
        catch_all = None
        for cls, handler in _handlers(app, type(e)):
            if cls is not Exception:  # the app's handler for this exception
                if catch_all is None:  # Flask's own pick: Flask calls it
                    return self.flask_handle_user_exception(e)
                # Behind a blueprint's Exception handler, which errtrace stands in for.
                return app.ensure_sync(handler)(e)
            if catch_all is None:
                catch_all = handler
        if isinstance(e, HTTPException):
            # Plain Flask sends the signal for a trapped exception no handler takes.
            return self._http_exception_response(e, notify=trapped and catch_all is None)
        if catch_all is None:
            raise e  # as in plain Flask: handle_exception records and answers it

        def exception_page(exc: Exception) -> WerkzeugResponse | None:
            # The app's Exception handler is Flask's own pick: Flask calls it.
            return self._page("Exception", lambda: self.flask_handle_user_exception(exc))

        return self._answer(e, page=exception_page)

    def handle_exception(self, e: Exception) -> Response:
        """Flask's last step, for an exception no handler answered (or raised by an
        after_request function or an error handler): recorded, signalled, answered.

        When Flask propagates exceptions (``PROPAGATE_EXCEPTIONS``, which defaults to
        ``TESTING or DEBUG``), an unhandled one is recorded, signalled and raised on
        instead, as plain Flask raises it: to the test client, the debugger or the
        server. An error with a code of its own is still answered, as Flask still
        answers an ``HTTPException``.
        """
        app = self.app
        propagate = app.config["PROPAGATE_EXCEPTIONS"]
        if propagate is None:
            propagate = app.testing or app.debug
        response = self._answer(
            e, page=self._server_error_page, signal=e, propagate=bool(propagate)
        )
        return app.finalize_request(response, from_error_handler=True)

    def _server_error_page(self, exc: Exception) -> WerkzeugResponse | None:
        # The handler plain Flask's handle_exception picks: for 500, then along
        # InternalServerError's classes (an HTTPException or Exception handler too).
        found = next(iter(_handlers(self.app, InternalServerError)), None)
        if found is None:
            return None
        handler = self.app.ensure_sync(found[1])
        return self._page("500", lambda: handler(InternalServerError(original_exception=exc)))

    def _page(self, kind: str, call: Callable[[], Any]) -> WerkzeugResponse | None:
        """The app's own answer to an unhandled exception; None when it fails."""
        try:
            return self.app.make_response(call())
        except Exception:
            log.exception("errtrace: the app's %s error handler failed; sending problem+json", kind)
            return None

    def _http_exception_response(self, exc: HTTPException, *, notify: bool) -> Any:
        signal = exc if notify else None
        if exc.response is not None:  # abort(response): the app chose the response
            return exc.response
        status = exc.code
        if status is None or status < 400:  # a redirect or 304 raised as an exception
            return exc.get_response(request.environ)
        if isinstance(exc, ClientDisconnected):
            # The client left mid-upload: CANCELLED (mapped at install), as on ASGI.
            return self._answer(exc, signal=signal)
        if isinstance(exc, InternalServerError) and exc.original_exception is not None:
            # Raised with the exception it wraps: record the original, not the wrapper.
            return self._answer(exc.original_exception, signal=signal)
        headers = _exception_headers(exc, request.environ)
        description = exc.description
        structured = description is not None and not isinstance(description, str)
        if structured:
            # RFC 9457 section 3.1.4: "detail" is a string. The class's own text says
            # what happened; the structured description goes to the client as details.
            default = getattr(type(exc), "description", None)
            description = default if isinstance(default, str) else None
        err = error_for_http_status(status, description, headers)
        if structured:
            err.details["description"] = exc.description
        return self._answer(err, signal=signal)

    def _answer(
        self,
        exc: BaseException,
        *,
        page: _Page | None = None,
        signal: Exception | None = None,
        propagate: bool = False,
    ) -> WerkzeugResponse:
        """Record ``exc``, send ``got_request_exception`` for ``signal`` (the exception
        as Flask saw it), and answer: the fallback, else (an unhandled exception) raise
        it on with ``propagate`` or answer with ``page``, else problem+json."""
        runtime = self.runtime
        ctx = current()
        if ctx is None:  # reached outside errtrace's middleware (a test request context)
            ctx = runtime.start(request.environ, wsgi_getter)
        failure = runtime.fail(
            exc, ctx, transport="http", method=request.method, route=request.path,
        )
        if signal is not None:
            self._signal(signal)
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
        if response is None and err.unhandled:
            if propagate:
                # The WSGI middleware lets it pass: it was recorded here.
                request.environ[PROPAGATED_KEY] = exc
                raise exc
            if page is not None:
                assert isinstance(exc, Exception)  # Flask hands on Exceptions only
                response = page(exc)
        if response is None:
            status, headers, body = runtime.http_error(err, ctx)
            response = Response(body, status=status, headers=headers)
        if runtime.needs_after_response(failure):
            # A level 0 error stops the process only once the client has its answer.
            # Not a close callback on the response: a fallback's or the app's handler's
            # response may be one object shared by every request.
            request.environ.setdefault(AFTER_RESPONSE_KEY, []).append(failure)
        return response

    def _signal(self, exc: Exception) -> None:
        app = self.app
        try:
            got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=exc)
        except Exception:  # a receiver's bug must not change the answer
            log.exception("errtrace: a got_request_exception receiver raised; ignored")


def _handlers(app: Flask, exc_class: type[Exception]) -> Iterator[tuple[type, Any]]:
    """The app's handlers for ``exc_class`` with the class each was registered for, in
    the order of Flask's ``_find_error_handler`` (the first one is Flask's pick): the
    status code's handlers, then the class handlers, blueprints before the app, each
    along the exception's MRO."""
    code = getattr(exc_class, "code", None) if issubclass(exc_class, HTTPException) else None
    names = (*request.blueprints, None)
    spec = app.error_handler_spec
    for key in (code, None) if code is not None else (None,):
        for name in names:
            handlers = spec.get(name, {}).get(key)
            if not handlers:
                continue
            for cls in exc_class.__mro__:
                handler = handlers.get(cls)
                if handler is not None:
                    yield cls, handler


def _exception_headers(
    exc: HTTPException, environ: WSGIEnvironment
) -> dict[str, str | list[str]]:
    """A werkzeug exception's headers but its Content-Type; a header sent several times
    (two ``WWW-Authenticate`` challenges, ``Set-Cookie``) with every value, in a list."""
    values: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, value in exc.get_headers(environ):
        lower = name.lower()
        if lower == "content-type":
            continue
        names.setdefault(lower, name)
        values.setdefault(lower, []).append(value)
    return {
        names[lower]: found[0] if len(found) == 1 else found
        for lower, found in values.items()
    }


__all__ = ["EXTENSION_KEY", "instrument_flask"]
