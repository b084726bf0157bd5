"""A pure ASGI middleware: the four-layer context and structured errors for any ASGI app.

It wraps ``send`` (never Starlette's ``BaseHTTPMiddleware``, which breaks contextvars),
adds ``X-Trace-ID`` on ``http.response.start``, and turns an exception escaping the app
into a problem+json response when nothing was sent yet. After the response started it
records the error and ends the body cleanly; a ``text/event-stream`` response first gets
a final ``event: error`` carrying the problem document. Lifespan and websocket scopes
pass through untouched.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from errtrace.core.config import Config
from errtrace.core.context import ErrorContext, bind, reset
from errtrace.core.encoding import problem
from errtrace.core.policy import NO_RESULT
from errtrace.core.runtime import Failure, Runtime, default_runtime, plain_fallback_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGIHeaderGetter:
    """Getter over ASGI ``scope["headers"]`` (lower-case byte names, latin-1 values)."""

    def get(self, carrier: Sequence[tuple[bytes, bytes]], key: str) -> list[str] | None:
        """All values of header ``key``."""
        name = key.encode("latin-1")
        found = [v.decode("latin-1") for k, v in carrier if k == name]
        return found or None


asgi_getter = ASGIHeaderGetter()


def encode_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs from text pairs."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class ErrtraceMiddleware:
    """Pure ASGI middleware; ``errtrace.instrument(app)`` installs it for you."""

    def __init__(
        self,
        app: ASGIApp,
        runtime: Runtime | None = None,
        *,
        config: Config | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        if runtime is None:
            runtime = (
                Runtime(config if config is not None else Config.load(**options))
                if config is not None or options
                else default_runtime()
            )
        self.runtime = runtime
        self._trace_header = runtime.config.trace_id_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = self.runtime
        ctx = runtime.start(scope["headers"], asgi_getter)
        token = bind(ctx)
        trace_name = self._trace_header
        trace_header = (trace_name, ctx.trace_id.encode("latin-1"))
        started = finished = event_stream = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started, finished, event_stream
            kind = message["type"]
            if kind == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                has_trace = False
                for name, value in headers:
                    if name == b"content-type":
                        event_stream = value.startswith(b"text/event-stream")
                    elif name == trace_name:
                        has_trace = True
                if not has_trace:
                    headers.append(trace_header)
                message["headers"] = headers
            elif kind == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        failure: Failure | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            failure = runtime.fail(
                exc, ctx, transport="http", method=scope.get("method"),
                route=scope.get("path"), response_started=started,
            )
            try:
                if not started:
                    await self._respond(failure, ctx, scope, receive, send_wrapper)
                elif not finished:
                    await self._end_stream(failure, ctx, send, event_stream)
            except OSError:
                pass  # the client is gone; the error is recorded already
        finally:
            reset(token)
        runtime.after_response(failure)

    async def _respond(
        self, failure: Failure, ctx: ErrorContext, scope: Scope, receive: Receive, send: Send
    ) -> None:
        result = failure.fallback_result
        if result is not NO_RESULT:
            plain = plain_fallback_response(
                result, (self.runtime.config.trace_id_header, ctx.trace_id), failure.error.code
            )
            if plain is not None:
                await _send_response(send, *plain)
                return
            if callable(result):  # a framework response object is an ASGI app
                await result(scope, receive, send)
                return
        status, headers, body = self.runtime.http_error(failure.error, ctx)
        await _send_response(send, status, headers, body)

    async def _end_stream(
        self, failure: Failure, ctx: ErrorContext, send: Send, event_stream: bool
    ) -> None:
        body = b""
        if event_stream and self.runtime.config.sse_error_event:
            doc = problem(failure.error, ctx, failure.error.event_id, self.runtime.config)
            body = b"event: error\ndata: " + json.dumps(doc, default=str).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_response(
    send: Send, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    pairs = encode_headers(headers)
    pairs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": body, "more_body": False})
