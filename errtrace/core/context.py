"""The four-layer :class:`ErrorContext` and the contextvar that holds it.

The context of a request is created by a middleware or interceptor, bound with
:func:`bind` and always released with :func:`reset` in a ``finally`` block (on WSGI only
after the response body is closed), so that nothing leaks between requests on reused
threads. Starlette's threadpool and ``asyncio`` tasks copy the contextvars, so
``errtrace.current()`` works in sync endpoints, dependencies and background tasks too.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from errtrace.core.runtime import Runtime

FLAG_SAMPLED = 0x01
FLAG_RANDOM = 0x02  # W3C Trace Context Level 2


@dataclass(eq=False, slots=True)
class ErrorContext:
    """The error context of one hop: trace, span, business code and error code.

    ``err_code`` and ``event_id`` are set once this hop has recorded an error.
    ``tracestate`` is the validated inbound header value, forwarded unchanged.
    ``baggage`` holds the validated inbound W3C baggage members, in order.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    trace_flags: int = FLAG_SAMPLED | FLAG_RANDOM
    tracestate: str | None = None
    biz_code: str | None = None
    err_code: str | None = None
    event_id: str | None = None
    baggage: Sequence[tuple[str, str, str]] = ()
    """Baggage members as (key, decoded value, raw properties)."""
    remote: bool = False
    """True when the trace was continued from a valid inbound ``traceparent``."""
    runtime: Runtime | None = field(default=None, repr=False)
    outgoing_spans: Sequence[str] = field(default=(), repr=False)
    """Span ids handed to outgoing calls from this hop (at most 32 kept): an empty tuple
    until the first call, then a list."""

    @property
    def sampled(self) -> bool:
        """The W3C ``sampled`` flag."""
        return bool(self.trace_flags & FLAG_SAMPLED)

    @property
    def traceparent(self) -> str:
        """This hop's own ``traceparent`` value (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.trace_flags & 0x03:02x}"

    def as_dict(self) -> dict[str, str | None]:
        """The four layers (plus parent span and event id) as plain strings."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "biz_code": self.biz_code,
            "err_code": self.err_code,
            "event_id": self.event_id,
        }


_current: contextvars.ContextVar[ErrorContext | None] = contextvars.ContextVar(
    "errtrace_context", default=None
)


def current() -> ErrorContext | None:
    """The error context of the request being handled, or None outside one."""
    return _current.get()


# bind(ctx) makes ``ctx`` current and returns a token; reset(token) undoes it. They are
# the ContextVar's own methods, so that the call on every request is a C call.
bind: Callable[[ErrorContext | None], contextvars.Token[ErrorContext | None]] = _current.set
reset: Callable[[contextvars.Token[ErrorContext | None]], None] = _current.reset
