"""A pure WSGI middleware: the four-layer context and structured errors for any WSGI app.

It wraps ``start_response`` to add ``X-Trace-ID`` to every response, and turns an
exception escaping the app into a problem+json response while no body byte has been
handed to the server (PEP 3333 lets ``start_response`` be called again with
``exc_info`` until then). After the body started it records the error; a
``text/event-stream`` response then gets a final ``event: error`` carrying the problem
document and ends, as on ASGI, and any other body is cut short: :class:`ResponseCutShort`
is raised to the server, which closes the connection, so the client sees an incomplete
body rather than a complete-looking one. The answer to a ``HEAD`` request keeps the headers
of that error response (``Content-Length`` included) and sends no body.

The context stays bound while the server iterates the body, so streaming generators see
``errtrace.current()``; it is reset exactly once, when the body is exhausted or closed,
whichever comes first. WSGI servers reuse threads, so nothing may outlive the request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

from errtrace.core.config import Config
from errtrace.core.context import ErrorContext, bind, reset
from errtrace.core.encoding import sse_error_event
from errtrace.core.policy import NO_RESULT
from errtrace.core.propagation import TRACEPARENT
from errtrace.core.runtime import Failure, Runtime, plain_fallback_response, resolve_runtime

if TYPE_CHECKING:
    from contextvars import Token

    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("errtrace")

Write = Callable[[bytes], object]


class WSGIEnvironGetter:
    """Getter over a WSGI ``environ``: header ``x-biz-code`` is ``HTTP_X_BIZ_CODE``.

    WSGI servers join repeated request headers with ``", "``. For ``traceparent`` that
    join is split again, so two headers count as two values (ambiguous: W3C Trace
    Context then starts a new trace); every other header is passed as the joined value,
    which is what ``tracestate`` and ``baggage`` expect (they are comma lists).
    """

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        """All values of header ``key`` (lower-case) in ``carrier``."""
        name = self._names.get(key)
        if name is None:
            name = "HTTP_" + key.upper().replace("-", "_")
            self._names[key] = name
        value = carrier.get(name)
        if not isinstance(value, str):
            return None
        if key == TRACEPARENT and "," in value:
            return value.split(",")
        return [value]


wsgi_getter = WSGIEnvironGetter()


class ErrtraceWSGIMiddleware:
    """Pure WSGI middleware; ``errtrace.instrument(app)`` installs it for you."""

    def __init__(
        self,
        app: WSGIApplication,
        runtime: Runtime | None = None,
        *,
        config: Config | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.runtime = runtime = resolve_runtime(runtime, config, options)
        self._trace_name = runtime.config.trace_id_header
        self._trace_lower = self._trace_name.lower()

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        runtime = self.runtime
        ctx = runtime.start(environ, wsgi_getter)
        exchange = _Exchange(self, environ, start_response, ctx, bind(ctx))
        app = self.app
        if runtime.config.rewrite_responses and runtime.config.rewrites(
            environ.get("PATH_INFO", "")
        ):
            app = _Rewriting(app, runtime, ctx)
        try:
            inner = app(environ, exchange.start_response)
        except Exception as exc:
            if environ.get(PROPAGATED_KEY) is exc:  # recorded; raised on by the framework
                exchange.finish()
                raise
            try:
                inner = exchange.fail(exc)
            except BaseException:
                exchange.finish()  # never leave the context bound on a reused thread
                raise
        except BaseException:
            exchange.finish()
            raise
        return _ResponseBody(exchange, inner)


AFTER_RESPONSE_KEY = "errtrace.after_response"
"""The environ entry where a framework adapter inside the middleware (Flask's) lists the
failures it answered whose after-response actions (a level 0 exit) must wait until the
server closed the response body; the middleware runs them then."""


PROPAGATED_KEY = "errtrace.propagated"
"""The environ entry where a framework adapter inside the middleware (Flask's) puts an
exception it recorded and raises on, because the framework is set to propagate
exceptions (Flask's ``PROPAGATE_EXCEPTIONS``): the middleware lets that one pass."""


class ResponseCutShort(Exception):
    """Raised to the WSGI server when a response fails after its body started (and it is
    not an event stream, which gets its ``event: error`` and ends). The server then
    closes the connection, so the client sees the body incomplete instead of a
    complete-looking one. errtrace has recorded and logged the error itself; this
    exception only carries its code and event id."""

    def __init__(self, code: str, event_id: str) -> None:
        super().__init__(
            f"errtrace: {code} after the response body started (event {event_id}); "
            "the response is cut short"
        )
        self.code = code
        self.event_id = event_id


class _Exchange:
    """The state of one request (never kept on the middleware, which serves many threads)."""

    __slots__ = (
        "body_started", "ctx", "done", "environ", "event_stream", "exc_info", "failure",
        "mw", "replacement", "server_start", "server_write", "status_called", "token",
    )

    def __init__(
        self,
        mw: ErrtraceWSGIMiddleware,
        environ: WSGIEnvironment,
        server_start: StartResponse,
        ctx: ErrorContext,
        token: Token[ErrorContext | None],
    ) -> None:
        self.mw = mw
        self.environ = environ
        self.server_start = server_start
        self.ctx = ctx
        self.token = token
        self.status_called = False
        self.body_started = False
        self.event_stream = False
        self.done = False
        self.failure: Failure | None = None
        self.exc_info: OptExcInfo | None = None
        self.replacement: Iterable[bytes] | None = None
        self.server_write: Write | None = None

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: OptExcInfo | None = None,
    ) -> Write:
        """The ``start_response`` the app sees: adds the trace header, notes the type."""
        trace_lower = self.mw._trace_lower
        has_trace = event_stream = False
        for name, value in headers:
            lower = name.lower()
            if lower == "content-type":
                event_stream = value.startswith("text/event-stream")
            elif lower == trace_lower:
                has_trace = True
        if not has_trace:
            headers = [*headers, (self.mw._trace_name, self.ctx.trace_id)]
        # Noted once the server took them: a replacement it refuses (the headers went
        # out) leaves the response the app started, an event stream included.
        self.server_write = self.server_start(status, headers, exc_info)
        self.event_stream = event_stream
        self.status_called = True
        return self.write

    def write(self, data: bytes) -> object:
        """PEP 3333's legacy ``write()``: once used, the headers are on their way."""
        self.body_started = True
        assert self.server_write is not None
        return self.server_write(data)

    def fail(self, exc: Exception) -> Iterable[bytes]:
        """Record ``exc``; the body to send instead of (or after) what the app sent."""
        mw = self.mw
        environ = self.environ
        self.failure = failure = mw.runtime.fail(
            exc, self.ctx, transport="http", method=environ.get("REQUEST_METHOD"),
            route=environ.get("PATH_INFO"), response_started=self.body_started,
        )
        if not self.body_started:
            self.exc_info = cast("OptExcInfo", (type(exc), exc, exc.__traceback__))
            try:
                return self._respond(failure)
            except Exception:
                # The server refused a second start_response (it sent the headers, or,
                # like werkzeug's test client, re-raises any exc_info): end the body.
                pass
            finally:
                self.exc_info = None
        if self.event_stream and mw.runtime.config.sse_error_event:
            return [sse_error_event(failure.error, self.ctx, mw.runtime.config)]
        raise ResponseCutShort(failure.error.code, failure.event.event_id) from None

    def fail_after_close(self, exc: Exception) -> None:
        """Record ``exc``, raised while the body was closed: nothing can be sent."""
        environ = self.environ
        runtime = self.mw.runtime
        # After the body was exhausted the context is no longer bound: bound again for
        # the time of the recording, so that its log record carries the trace id.
        token = bind(self.ctx) if self.done else None
        try:
            failure = runtime.fail(
                exc, self.ctx, transport="http", method=environ.get("REQUEST_METHOD"),
                route=environ.get("PATH_INFO"), response_started=True,
            )
        finally:
            if token is not None:
                reset(token)
        # Closing is the request's last step, so its after-response actions run now
        # (those of an earlier error of the request run when it ends, as before).
        runtime.after_response(failure)

    def _respond(self, failure: Failure) -> Iterable[bytes]:
        runtime = self.mw.runtime
        result = failure.fallback_result
        if result is not NO_RESULT:
            plain = plain_fallback_response(
                result, (self.mw._trace_name, self.ctx.trace_id), failure.error.code
            )
            if plain is not None:
                return self._send(*plain)
            if callable(result):  # a framework response object (werkzeug) is a WSGI app
                try:
                    body: Iterable[bytes] = result(self.environ, self._restart)
                except Exception:
                    log.exception("errtrace: the fallback's response failed; sending the error")
                else:
                    self.replacement = body
                    return body
        return self._send(*runtime.http_error(failure.error, self.ctx))

    def _restart(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: OptExcInfo | None = None,
    ) -> Write:
        # A second start_response must carry exc_info (PEP 3333), else servers refuse it.
        return self.start_response(
            status, headers, self.exc_info if self.status_called else exc_info
        )

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> list[bytes]:
        self._restart(
            _status_line(status), [*headers, ("Content-Length", str(len(body)))]
        )
        return _content(self.environ, body)

    def finish(self) -> None:
        """Reset the context and run after-response actions, exactly once."""
        if self.done:
            return
        self.done = True
        # ValueError: the server closed the body from another context (another thread);
        # the binding then ends with the context it was made in.
        with contextlib.suppress(ValueError):
            reset(self.token)
        self.mw.runtime.after_response(self.failure)
        # The error's traceback holds the frames that hold this exchange: let go of it
        # so the request's objects are freed without waiting for the cycle collector.
        self.failure = None


class _ResponseBody:
    """The body handed to the server: the app's iterable, watched for errors and its end.

    A class rather than a generator so that ``close()`` works even when the server never
    started iterating (closing an unstarted generator runs none of its code).
    """

    __slots__ = ("_exchange", "_inner", "_iter")

    def __init__(self, exchange: _Exchange, inner: Iterable[bytes]) -> None:
        self._exchange = exchange
        self._inner = inner
        self._iter: Iterator[bytes] | None = None

    def __iter__(self) -> _ResponseBody:
        return self

    def __next__(self) -> bytes:
        exchange = self._exchange
        if exchange.done:
            raise StopIteration
        try:
            if self._iter is None:
                self._iter = iter(self._inner)
            chunk = next(self._iter)
        except StopIteration:
            exchange.finish()
            raise
        except Exception as exc:
            if exchange.failure is not None:
                # The error body itself failed (a fallback's own response): stop here.
                log.exception("errtrace: the error response body failed; ending it")
                exchange.finish()
                raise StopIteration from None
            self._iter = iter(exchange.fail(exc))
            return self.__next__()
        except BaseException:
            exchange.finish()
            raise
        if chunk:  # an empty chunk hands the server no byte: the answer can still change
            exchange.body_started = True
        return chunk

    def close(self) -> None:
        """Close the app's iterable (always, per PEP 3333) and the error body that
        replaced it, each once, then end the request.

        An exception a ``close()`` raises comes after the answer (or after the server
        gave up on it): it is recorded as an error of this request and not raised to
        the server, as an error after an ASGI response ended is.
        """
        exchange = self._exchange
        inner, replacement = self._inner, exchange.replacement
        # When the app raised before returning, the replacement *is* the inner body:
        # closing it again would run its close callbacks twice.
        bodies = (inner,) if replacement is inner else (inner, replacement)
        try:
            for body in bodies:
                try:
                    _close(body)
                except Exception as exc:
                    exchange.fail_after_close(exc)
        finally:
            exchange.finish()
            runtime = exchange.mw.runtime
            for failure in exchange.environ.pop(AFTER_RESPONSE_KEY, ()):
                runtime.after_response(failure)


_STATUS_LINES: dict[int, str] = {}


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = f"{status} {phrase}"
    return line


class _Rewriting:
    """Holds an error response until its body is complete, so that an un-coded error
    (free text, or JSON without a code) can be replaced by a structured one, raised to
    the middleware as if the app had raised it; see ``Runtime.rewrite_response``.
    Success responses and bodies over ``rewrite_max_body_bytes`` pass through as they
    are."""

    def __init__(self, app: WSGIApplication, runtime: Runtime, ctx: ErrorContext) -> None:
        self.app, self.runtime, self.ctx = app, runtime, ctx

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        started: list[tuple[str, list[tuple[str, str]]]] = []
        chunks: list[bytes] = []

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Write:
            started[:] = [(status, headers)]
            return chunks.append  # legacy write() goes to the buffer too

        inner = self.app(environ, capture)
        it = iter(inner)
        limit = self.runtime.config.rewrite_max_body_bytes
        exhausted = False
        size = 0
        try:
            while not started or (_code(started[0][0]) >= 400 and size <= limit):
                try:
                    chunk = next(it)
                except StopIteration:
                    exhausted = True
                    break
                chunks.append(chunk)
                size += len(chunk)
        except BaseException:
            _close(inner)
            raise
        if not started:
            _close(inner)
            raise RuntimeError("the WSGI application returned without calling start_response")
        status, headers = started[0]
        if exhausted and _code(status) >= 400:
            lowered = [(name.lower(), value) for name, value in headers]
            err = self.runtime.rewrite_response(_code(status), lowered, b"".join(chunks))
            if err is not None:
                _close(inner)
                # Answered like an error the app raised: recorded, fallback, problem+json.
                raise err
        start_response(status, headers)
        return _Replay(chunks, it, inner)


class _Replay:
    """The buffered chunks, then the rest of the app's body; ``close()`` reaches the app."""

    __slots__ = ("_buffered", "_inner", "_rest")

    def __init__(self, buffered: list[bytes], rest: Iterator[bytes], inner: Iterable[bytes]):
        self._buffered, self._rest, self._inner = buffered, rest, inner

    def __iter__(self) -> Iterator[bytes]:
        yield from self._buffered
        yield from self._rest

    def close(self) -> None:
        _close(self._inner)


def _content(environ: WSGIEnvironment, body: bytes) -> list[bytes]:
    # RFC 9110 section 9.3.2: the answer to HEAD has the headers a GET would get (its
    # Content-Length included) and no content; a server may pass on what it is given.
    if environ.get("REQUEST_METHOD") == "HEAD":
        return []
    return [body]


def _code(status: str) -> int:
    try:
        return int(status[:3])
    except ValueError:
        return 500


def _close(body: object) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()
