"""A pure ASGI middleware: the four-layer context and structured errors for any ASGI app.

It wraps ``send`` (it does not subclass Starlette's HTTP middleware base class, which
breaks contextvars), adds ``X-Trace-ID`` on ``http.response.start``, and turns an
exception escaping the app into a problem+json response when nothing was sent yet.

After the response started there is no second answer: the error is recorded, and a
``text/event-stream`` response gets a final ``event: error`` carrying the problem
document, then its end. Any other response is left unfinished (its last body message is
never sent), so that the server closes the connection and the client sees a body cut
short rather than a complete-looking one; uvicorn then logs "ASGI callable returned
without completing response" next to errtrace's own record of the error. A response
already ended (by its last body message, or by the server extensions
``http.response.pathsend`` and ``zerocopysend``) gets nothing more. Lifespan scopes
pass through untouched. A websocket session gets the context (``errtrace.current()``
works in its handler and dependencies) and an exception escaping it is recorded, then
raised on to the server; its messages pass untouched.

With ``hold_stream_end`` (the default for a middleware added by hand), an event
stream's closing message is held until the app returns, so that an error raised after
it (Starlette's HTTP middleware base class, between errtrace and the route, sends the
end of the body before it re-raises) still reaches the client as its ``event: error``;
the stream then ends when the app returns, after any background task of the response.
``errtrace.instrument()`` does not need that: it puts a second middleware right around
the routes, inside the app's own middlewares, and neither holds anything.

A second ``ErrtraceMiddleware`` below the first (that inner one, or a mounted,
instrumented sub-app) keeps the request's context, found in ``scope["errtrace.context"]``,
instead of starting one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from errtrace.core.config import Config
from errtrace.core.context import ErrorContext, bind, reset
from errtrace.core.encoding import encode_headers, sse_error_event
from errtrace.core.errors import to_app_error
from errtrace.core.policy import NO_RESULT
from errtrace.core.runtime import Failure, Runtime, plain_fallback_response, resolve_runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Responder = Callable[[BaseException, Scope, Receive, Send], Awaitable[bool]]
"""Answers an unhandled exception (one errtrace translates to ``INTERNAL``) in place of
errtrace's problem+json; returns False to leave the answer to errtrace."""

SCOPE_KEY = "errtrace.context"
"""The scope entry holding the request's context, for errtrace middlewares below."""

CUT_SHORT_KEY = "errtrace.cut_short"
"""Set in the scope by an errtrace middleware that left a started response unfinished
after an error, so that an errtrace middleware above does not pass its end on."""


class ErrtraceMiddleware:
    """Pure ASGI middleware; ``errtrace.instrument(app)`` installs it for you.

    ``add_trace_header=False`` leaves ``X-Trace-ID`` to an errtrace middleware above;
    ``hold_stream_end`` and ``rewrite`` are described in the module docstring and in
    :class:`~errtrace.Config` (``rewrite_responses``); ``rewrite=False`` leaves response
    rewriting to an errtrace middleware below.
    """

    def __init__(
        self,
        app: ASGIApp,
        runtime: Runtime | None = None,
        *,
        config: Config | None = None,
        responder: Responder | None = None,
        add_trace_header: bool = True,
        hold_stream_end: bool = True,
        rewrite: bool = True,
        **options: Any,
    ) -> None:
        self.app = app
        self.runtime = runtime = resolve_runtime(runtime, config, options)
        self.responder = responder
        self._trace_header = (
            runtime.config.trace_id_header.lower().encode("latin-1") if add_trace_header
            else None
        )
        self._hold = hold_stream_end
        self._rewrite = rewrite

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        runtime = self.runtime
        ctx: ErrorContext | None = scope.get(SCOPE_KEY)
        token = None
        if ctx is None:
            scope[SCOPE_KEY] = ctx = runtime.start_pairs(scope["headers"])
            token = bind(ctx)
        elif runtime.span_source is not None:
            # An OpenTelemetry middleware between the two errtrace layers has started
            # this hop's span by now: its ids become the request's.
            runtime.follow_span(ctx)
        trace_name = self._trace_header
        hold_streams = self._hold and runtime.config.sse_error_event
        start_message: Message | None = None
        hold = held = finished = False

        async def send_wrapper(message: Message) -> None:
            nonlocal start_message, hold, held, finished
            kind = message["type"]
            if kind == "http.response.start":
                start_message = message
                if trace_name is not None:
                    headers = message.get("headers", ())
                    for name, _ in headers:
                        if name == trace_name:
                            break
                    else:  # a copy: the app may reuse its header list
                        # The id is read now: a layer below may have taken a span's.
                        message["headers"] = [*headers, (trace_name, ctx.trace_id.encode())]
                hold = hold_streams and _is_event_stream(message)
            elif kind == "http.response.body" and not message.get("more_body", False):
                if hold or scope.get(CUT_SHORT_KEY):
                    # The end is not passed on: an event stream's waits for the app to
                    # return; or a layer below left the body unfinished after an error
                    # and a middleware in between (Starlette's HTTP middleware base
                    # class) ends it anyway.
                    held = hold
                    if not message.get("body"):
                        return
                    message = {**message, "more_body": True}
                else:
                    finished = True
            elif kind == "http.response.pathsend" or (
                kind == "http.response.zerocopysend" and not message.get("more_body", False)
            ):  # the server extensions that also end a response
                finished = True
            await send(message)

        failure: Failure | None = None
        app_send: Send = send_wrapper
        config = runtime.config
        if self._rewrite and config.rewrite_responses and config.rewrites(scope.get("path", "")):
            app_send = _RewritingSend(runtime, ctx, scope, receive, send_wrapper)
        try:
            await self.app(scope, receive, app_send)
            if held:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception as exc:
            started = start_message is not None
            failure = await runtime.fail_async(
                exc, ctx, transport="http", method=scope.get("method"),
                route=scope.get("path"), response_started=started,
            )
            try:
                if start_message is None:
                    await answer(
                        runtime, failure, ctx, scope, receive, send_wrapper,
                        responder=self.responder, exc=exc,
                    )
                elif not finished and config.sse_error_event and _is_event_stream(start_message):
                    await self._end_stream(failure, ctx, send)
                elif not finished:
                    # It stays unfinished: the server closes the connection, and the
                    # client sees the body was cut short. Layers above must not end it.
                    scope[CUT_SHORT_KEY] = True
            except OSError:
                pass  # the client is gone; the error is recorded already
        finally:
            if token is not None:
                reset(token)
        if failure is not None:
            runtime.after_response(failure)
            # The error's cause holds a traceback holding this frame, which holds
            # `failure`: drop it so the request's objects are freed without the GC.
            failure = None

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket session gets the request's context (from its handshake headers),
        and an exception escaping it is recorded, then raised on to the server, which
        closes the session as it would without errtrace. Its messages pass untouched."""
        runtime = self.runtime
        if scope.get(SCOPE_KEY) is not None:  # the layer that started it records
            if runtime.span_source is not None:
                runtime.follow_span(scope[SCOPE_KEY])
            await self.app(scope, receive, send)
            return
        scope[SCOPE_KEY] = ctx = runtime.start_pairs(scope["headers"])
        token = bind(ctx)
        accepted = False

        async def send_wrapper(message: Message) -> None:
            nonlocal accepted
            if not accepted and message["type"] in _WEBSOCKET_STARTS:
                accepted = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            runtime.record(
                to_app_error(exc), ctx, transport="websocket", method="WEBSOCKET",
                route=scope.get("path"), response_started=accepted,
            )
            raise
        finally:
            reset(token)

    async def _end_stream(self, failure: Failure, ctx: ErrorContext, send: Send) -> None:
        body = sse_error_event(failure.error, ctx, self.runtime.config)
        await send({"type": "http.response.body", "body": body, "more_body": False})


_WEBSOCKET_STARTS = frozenset({"websocket.accept", "websocket.http.response.start"})
"""What answers a websocket handshake: accepted, or denied with a response."""


def _is_event_stream(start: Message) -> bool:
    return any(
        name == b"content-type" and value[:17] == b"text/event-stream"
        for name, value in start.get("headers", ())
    )


async def answer(
    runtime: Runtime,
    failure: Failure,
    ctx: ErrorContext,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    responder: Responder | None = None,
    exc: BaseException | None = None,
) -> None:
    """Send the answer to a request that failed before its response started: the
    fallback's result if there is one, else the app's own responder for unhandled
    exceptions, else errtrace's problem+json."""
    result = failure.fallback_result
    if result is not NO_RESULT:
        plain = plain_fallback_response(
            result, (runtime.config.trace_id_header, ctx.trace_id), failure.error.code
        )
        if plain is not None:
            await _send_response(send, *plain)
            return
        if callable(result):  # a framework response object is an ASGI app
            await result(scope, receive, send)
            return
    err = failure.error
    if responder is not None and exc is not None and err.unhandled:
        answered = await responder(exc, scope, receive, send)
        if answered:
            return
    await _send_encoded(send, *runtime.http_error_bytes(err, ctx))


class _RewritingSend:
    """A ``send`` that holds an error response until its body is complete, so that an
    un-coded (free-text or code-less JSON) error can be replaced by a structured one,
    or by the fallback registered for its code. Bodies over ``rewrite_max_body_bytes``
    are passed through as they are."""

    def __init__(
        self, runtime: Runtime, ctx: ErrorContext, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.runtime, self.ctx, self.scope, self.receive = runtime, ctx, scope, receive
        self.send = send
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.passing = False

    async def __call__(self, message: Message) -> None:
        if self.passing:
            await self.send(message)
            return
        kind = message["type"]
        if kind == "http.response.start":
            if message["status"] < 400:
                self.passing = True
                await self.send(message)
            else:
                self.start = message
            return
        if kind != "http.response.body":
            if self.start is not None:  # a server extension's body (pathsend): kept as is
                self.passing = True
                await self.send(self.start)
                if self.chunks:
                    await self.send({"type": "http.response.body",
                                     "body": b"".join(self.chunks), "more_body": True})
            await self.send(message)
            return
        if self.start is None:
            await self.send(message)
            return
        body = bytes(message.get("body", b""))
        self.chunks.append(body)
        self.size += len(body)
        if self.size > self.runtime.config.rewrite_max_body_bytes:
            await self._flush(more_body=bool(message.get("more_body", False)))
            return
        if not message.get("more_body", False):
            await self._finish()

    async def _flush(self, *, more_body: bool) -> None:
        assert self.start is not None
        self.passing = True
        await self.send(self.start)
        await self.send(
            {"type": "http.response.body", "body": b"".join(self.chunks), "more_body": more_body}
        )

    async def _finish(self) -> None:
        assert self.start is not None
        headers = [
            (k.decode("latin-1").lower(), v.decode("latin-1"))
            for k, v in self.start.get("headers", ())
        ]
        body = b"".join(self.chunks)
        err = self.runtime.rewrite_response(self.start["status"], headers, body)
        if err is None:
            await self._flush(more_body=False)
            return
        self.passing = True
        failure = await self.runtime.fail_async(
            err, self.ctx, transport="http", method=self.scope.get("method"),
            route=self.scope.get("path"),
        )
        await answer(self.runtime, failure, self.ctx, self.scope, self.receive, self.send)


async def _send_response(
    send: Send, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    await _send_encoded(send, status, encode_headers(headers), body)


async def _send_encoded(
    send: Send, status: int, pairs: list[tuple[bytes, bytes]], body: bytes
) -> None:
    pairs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": body, "more_body": False})
