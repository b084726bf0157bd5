"""OpenTelemetry: take trace and span ids from the active span.

When an OpenTelemetry SDK is set up (for example with its ASGI middleware outside
errtrace's), the active span is this hop's span: errtrace uses its ids so that logs,
error bodies and traces agree. Without an SDK the API's span is invalid and errtrace
keeps its own ids.

When errtrace records a failure, the active span is marked with it (see
:func:`mark_error`): errtrace answers the error before it could escape to an
OpenTelemetry middleware, which would otherwise have recorded the exception itself.
"""

from __future__ import annotations

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'OpenTelemetry support needs the otel extra: pip install "errtrace[otel]"'
    ) from exc


def current_span_ids() -> tuple[str, str, str | None, int] | None:
    """(trace id, span id, parent span id, flags) of the active valid span, else None."""
    current = _get_current()
    if not current:  # an empty OpenTelemetry context holds no span (the common case)
        return None
    span = trace.get_current_span(current)
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    parent = getattr(span, "parent", None)
    parent_id = f"{parent.span_id:016x}" if parent is not None and parent.span_id else None
    return f"{sc.trace_id:032x}", f"{sc.span_id:016x}", parent_id, int(sc.trace_flags) & 0x03


_get_current = otel_context.get_current


def mark_error(code: str, event_id: str, exc: BaseException | None) -> None:
    """Mark the active span with a failure errtrace recorded: the attributes
    ``errtrace.code`` and ``errtrace.event_id``, and for ``exc`` (the exception the
    error was translated from, such as one the handler raised and errtrace answered)
    an ``exception`` event, as OpenTelemetry's own middlewares record an exception
    that escapes a request. A span already ended (an error after the response) is left
    alone."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attributes({"errtrace.code": code, "errtrace.event_id": event_id})
    if exc is not None:
        span.record_exception(exc, attributes={"errtrace.code": code})
