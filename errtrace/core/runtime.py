"""The request lifecycle shared by every middleware and interceptor.

An adapter reads its carrier and calls, in order::

    ctx = runtime.start(carrier, getter)      # extract the four layers
    token = bind(ctx)                         # make it current
    ... call the handler ...
    failure = runtime.fail(exc, ctx, ...)     # on error: translate, record, fallback
    status, headers, body = runtime.http_error(failure.error, ctx)   # or the gRPC form
    reset(token); runtime.after_response(failure)

so that all logic (classification, events, hooks, encoding) lives here, once.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from errtrace.core.codes import CODE_ID_RE, ErrorCode, registry
from errtrace.core.config import Config
from errtrace.core.context import ErrorContext, current
from errtrace.core.encoding import (
    PROBLEM_JSON,
    ErrorWriter,
    caused_by,
    client_details,
    error_headers,
    from_http_response,
    parse_retry_after,
    problem,
    problem_json,
)
from errtrace.core.errors import AppError, to_app_error
from errtrace.core.events import ErrorEvent, EventBuffer, events
from errtrace.core.ids import new_event_id
from errtrace.core.levels import Level
from errtrace.core.llm_hosts import is_third_party, normalize_host
from errtrace.core.policy import NO_RESULT, Policy, failsafe, policy, run_hooks
from errtrace.core.propagation import (
    BAGGAGE,
    TRACEPARENT,
    TRACESTATE,
    Getter,
    Setter,
    collect,
    extract_collected,
    extract_pairs,
    inject,
    new_root_context,
)
from errtrace.core.stats import stats

log = logging.getLogger("errtrace")
C = TypeVar("C")

SpanIds = tuple[str, str, "str | None", int]
SpanSource = Callable[[], "SpanIds | None"]
SpanMarker = Callable[[str, str, "BaseException | None"], None]
"""Marks the active span with a recorded failure: (code, event id, exception raised)."""


@dataclass
class Failure:
    """The outcome of :meth:`Runtime.fail`: the error, its event, and a fallback result."""

    error: AppError
    event: ErrorEvent
    fallback_result: Any = NO_RESULT

    @property
    def has_fallback(self) -> bool:
        """True when a registered fallback produced a result to answer with."""
        return self.fallback_result is not NO_RESULT

    def drop_fallback(self, why: str, *args: object) -> None:
        """The fallback's result cannot answer here: log ``why % args`` (one error
        record), count a hook failure and record the fallback as failed; the error
        answers instead."""
        stats.incr("hook_failures")
        log.error(why, *args)
        self.fallback_result = NO_RESULT
        self.event.fallback = "failed"


def _otel_hooks(config: Config) -> tuple[SpanSource | None, SpanMarker | None]:
    """The OpenTelemetry span source and error marker, when OpenTelemetry is used."""
    if config.use_otel is False:
        return None, None
    if config.use_otel is None:
        import importlib.util

        # The API alone (a dependency of some LLM SDKs) never holds a valid span: without
        # an SDK, looking one up on every request would only cost time.
        if importlib.util.find_spec("opentelemetry") is None or (
            importlib.util.find_spec("opentelemetry.sdk") is None
        ):
            return None, None
    try:
        from errtrace.adapters.otel import current_span_ids, mark_error
    except ImportError:
        if config.use_otel:
            raise ImportError(
                'use_otel=True needs OpenTelemetry: pip install "errtrace[otel]"'
            ) from None
        return None, None
    return current_span_ids, mark_error


class Runtime:
    """Config, policy and event store bound together; one per instrumented app."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        policy_: Policy | None = None,
        events_: EventBuffer | None = None,
    ) -> None:
        self.config = config if config is not None else Config.load()
        self.policy = policy_ if policy_ is not None else policy
        self.events = events_ if events_ is not None else events
        self.events.ensure_capacity(self.config.event_buffer_size)
        self.span_source, self.span_marker = _otel_hooks(self.config)
        if self.config.rules_file is not None:
            from errtrace.core.rewrite import load_rules

            load_rules(self.config.rules_file)
        self._writer = ErrorWriter(self.config)
        self.exit_handler: Callable[[], None] = _terminate_self

    # -- start ----------------------------------------------------------------------------

    def start(self, carrier: C, getter: Getter[C]) -> ErrorContext:
        """This hop's context from an inbound carrier (never raises on bad input)."""
        return self.start_collected(collect(carrier, getter, self.config.propagation))

    def start_collected(self, carrier: Mapping[str, Sequence[str]]) -> ErrorContext:
        """:meth:`start` over ``{lower-case name: [values]}`` gathered by an adapter in
        one pass over its headers (names: ``config.propagation.inbound_names``)."""
        return self._started(extract_collected(carrier, self.config.propagation))

    def start_pairs(self, headers: Iterable[tuple[bytes, bytes]]) -> ErrorContext:
        """:meth:`start` over ``(lower-case name, latin-1 value)`` byte pairs (ASGI's
        ``scope["headers"]``)."""
        return self._started(extract_pairs(headers, self.config.propagation))

    def _started(self, ctx: ErrorContext) -> ErrorContext:
        ctx.runtime = self
        if self.span_source is not None:
            self.follow_span(ctx)
        return ctx

    def follow_span(self, ctx: ErrorContext) -> None:
        """Give ``ctx`` the ids of the OpenTelemetry span active now, if there is one.

        Called when a context starts, and again by an adapter at a point where an
        OpenTelemetry middleware placed inside errtrace's has started its span (the
        ASGI middleware around the routes, Flask once the ``before_request`` functions
        ran), so that logs, error bodies, ``X-Trace-ID`` and traces agree.
        """
        source = self.span_source
        if source is None:
            return
        try:
            span = source()
        except Exception:  # the failsafe, inlined: this runs on every request
            stats.incr("hook_failures")
            log.exception("errtrace: span source %r raised; ignored", source)
            return
        if span is not None:
            # An active OpenTelemetry span is the authority on ids.
            ctx.trace_id, ctx.span_id, parent, ctx.trace_flags = span
            ctx.parent_span_id = parent or ctx.parent_span_id

    # -- errors ---------------------------------------------------------------------------

    def fail(
        self,
        exc: BaseException,
        ctx: ErrorContext | None,
        *,
        transport: str,
        method: str | None = None,
        route: str | None = None,
        response_started: bool = False,
    ) -> Failure:
        """Translate ``exc``, record it, and run the code's fallback if it has one.

        A fallback defined with ``async def`` counts as failed here (its coroutine is
        closed and the error logged); the ASGI middleware and the grpc.aio interceptor
        (for async handlers) call :meth:`fail_async`, which awaits it.
        """
        failure = self._fail(exc, ctx, transport, method, route, response_started)
        result = failure.fallback_result
        if result is not NO_RESULT and inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            failure.drop_fallback(
                "errtrace: the fallback for %s is a coroutine function; only ASGI apps and "
                "async grpc.aio handlers await it (define it with def for this handler)",
                failure.error.code,
            )
        return failure

    async def fail_async(
        self,
        exc: BaseException,
        ctx: ErrorContext | None,
        *,
        transport: str,
        method: str | None = None,
        route: str | None = None,
        response_started: bool = False,
    ) -> Failure:
        """:meth:`fail` for async servers: a fallback defined with ``async def`` is awaited
        (an exception it raises is logged and counted, and the error answers instead)."""
        failure = self._fail(exc, ctx, transport, method, route, response_started)
        result = failure.fallback_result
        if result is not NO_RESULT and inspect.isawaitable(result):
            try:
                result = await result
            except Exception:
                stats.incr("hook_failures")
                log.exception("errtrace: fallback for %s raised; ignored", failure.error.code)
                result = NO_RESULT
            failure.fallback_result = result
            failure.event.fallback = "applied" if result is not NO_RESULT else "failed"
        return failure

    def _fail(
        self,
        exc: BaseException,
        ctx: ErrorContext | None,
        transport: str,
        method: str | None,
        route: str | None,
        response_started: bool,
    ) -> Failure:
        err = to_app_error(exc)
        event = self.record(
            err, ctx, transport=transport, method=method, route=route,
            response_started=response_started,
        )
        result: Any = NO_RESULT
        if not response_started and self.policy.runs_fallback(err.error_code):
            fallback = self.policy.fallback_for(err.code)
            if fallback is not None:
                result = failsafe(fallback, err, ctx, what="fallback")
                event.fallback = "applied" if result is not NO_RESULT else "failed"
        return Failure(err, event, result)

    def record(
        self,
        err: AppError,
        ctx: ErrorContext | None,
        *,
        transport: str,
        method: str | None = None,
        route: str | None = None,
        response_started: bool = False,
        set_context: bool = True,
    ) -> ErrorEvent:
        """Give ``err`` an event id, store the event, log/count/alert per the policy."""
        event_id = new_event_id()
        err.event_id = event_id
        code = err.error_code
        code_id = code.id
        trace_id: str | None
        span_id: str | None
        if ctx is not None:
            if set_context:
                ctx.err_code = code_id
                ctx.event_id = event_id
            trace_id, span_id = ctx.trace_id, ctx.span_id
            parent_span_id, biz_code = ctx.parent_span_id, ctx.biz_code
            outgoing = list(ctx.outgoing_spans) if ctx.outgoing_spans else []
        else:
            trace_id = span_id = parent_span_id = biz_code = None
            outgoing = []
        fails = code.level <= Level.MODERATE
        cause = err.__cause__
        details = err.details
        # Positional: with 25 fields, keyword arguments cost more than the rest of this
        # method (the order is ErrorEvent's; a test checks every field).
        event = ErrorEvent(
            event_id,
            time.time(),
            code_id,
            int(code.level),
            code.title,
            err.message,
            err.http_status if fails else None,
            err.grpc_status if fails else None,
            code.retryable,
            trace_id,
            span_id,
            parent_span_id,
            biz_code,
            self.config.service_name,
            transport,
            method,
            route,
            _qualname(cause) if cause is not None else None,  # exception_type
            client_details(err) if details else {},
            caused_by(err) if err.remote is not None else [],
            outgoing,
            response_started,
            None,  # fallback: set by _fail
            _describe(cause) if cause is not None else None,  # private_exception
            _text(details.get("_provider_text")) if details else None,  # private_provider_text
        )
        actions = self.policy.actions_for(code)
        self.events.add(event)
        if fails and self.span_marker is not None:
            # The exception answered here never reaches an OpenTelemetry middleware:
            # the one the error was translated from goes on the span.
            try:
                self.span_marker(code_id, event_id, cause)
            except Exception:  # the failsafe, inlined
                stats.incr("hook_failures")
                log.exception("errtrace: marking the OpenTelemetry span failed; ignored")
        if "metric" in actions:
            stats.incr("errors." + code_id)
        if "log" in actions and self.config.log_errors:
            self._log(err, event)
        hooks = self.policy.error_hooks
        if hooks:
            run_hooks(list(hooks), event, ctx, what="on_error hook")
        if "alert" in actions and self.policy.alert_hooks:
            run_hooks(list(self.policy.alert_hooks), event, ctx, what="on_alert hook")
        return event

    def _log(self, err: AppError, event: ErrorEvent) -> None:
        cause = err.cause
        unhandled = cause is not None and not isinstance(cause, AppError) and (
            err.code == "INTERNAL" or err.level <= Level.CRITICAL
        )
        if not log.isEnabledFor(logging.ERROR if unhandled else err.level.info.log_level):
            return
        extra = {"err_code": err.code, "event_id": event.event_id}
        if unhandled:
            # The one server-side record of an unhandled exception, with its stack.
            log.error(
                "unhandled %s in %s %s: %s (event %s)",
                event.exception_type, one_line(event.method), one_line(event.route),
                err.code, event.event_id, exc_info=cause, extra=extra,
            )
            return
        log.log(
            err.level.info.log_level,
            "%s (level %d) in %s %s: %s (event %s)",
            err.code, int(err.level), one_line(event.method), one_line(event.route),
            one_line(err.message or err.error_code.title), event.event_id, extra=extra,
        )

    def http_error(
        self, err: AppError, ctx: ErrorContext | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and problem+json body for ``err`` (already recorded)."""
        body = problem_json(problem(err, ctx, err.event_id, self.config))
        headers = error_headers(err, ctx, err.event_id, self.config)
        headers.insert(0, ("Content-Type", PROBLEM_JSON))
        return err.http_status, headers, body

    def http_error_bytes(
        self, err: AppError, ctx: ErrorContext | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """:meth:`http_error` with lower-case latin-1 header pairs (ASGI's form), built
        from cached per-code parts."""
        writer = self._writer
        if writer.config is not self.config:  # the config was replaced after start-up
            writer = self._writer = ErrorWriter(self.config)
        return writer.response(err, ctx, err.event_id)

    def needs_after_response(self, failure: Failure) -> bool:
        """True when :meth:`after_response` has something to do for ``failure`` (a
        level 0 exit), so that adapters only schedule it then. A level 0 error decoded
        from a dependency's answer never stops this process: the process that is unsafe
        is the one that raised it."""
        err = failure.error
        return (
            err.level is Level.FATAL
            and err.remote is None
            and self.config.exit_on_fatal
            and "exit" in self.policy.actions_for(err.error_code)
        )

    def after_response(self, failure: Failure | None) -> None:
        """Run what must wait until the client was answered (a level 0 exit)."""
        if failure is None:
            return
        err = failure.error
        if self.needs_after_response(failure):
            log.critical("errtrace: level 0 error %s: stopping the process", err.code)
            failsafe(self.exit_handler, what="exit handler")

    # -- response rewriting -------------------------------------------------------------

    def rewrite_response(
        self,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes,
    ) -> AppError | None:
        """The structured error for an un-coded error response, or None to keep it.

        Used on routes with ``rewrite_responses``: a 4xx/5xx answer whose body is free
        text or JSON without a code (typically an LLM provider's error passed through)
        becomes the ``LLM_*`` error of its class. ``headers`` are the response's, with
        lower-case names: a mapping, or ``(name, value)`` pairs where a name may repeat.
        The provider's text is kept for the event only (``_provider_text``); its
        ``Retry-After`` and its other headers (rate-limit counters, every cookie) stay on
        the answer, except those that described the replaced body or that errtrace sets.
        """
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
        first: dict[str, str] = {}
        for name, value in pairs:
            first.setdefault(name, value)
        if status < 400 or self.config.error_code_header.lower() in first:
            return None
        if from_http_response(status, first, body) is not None:
            return None  # it already speaks errtrace
        from errtrace.core.rewrite import from_response

        found = from_response(status, body, first.get("content-type"))
        details = dict(found.details)
        if "retry_after" not in details:  # the text's own delay wins, as in the adapters
            retry_after = parse_retry_after(first.get("retry-after"))
            if retry_after is not None:
                details["retry_after"] = retry_after
        details["_provider_text"] = found.text
        details["rule"] = found.rule
        details["upstream_status"] = status
        config = self.config
        replaced = {
            "content-type", "content-length", "content-encoding", "transfer-encoding",
            "retry-after", config.error_code_header.lower(), config.error_level_header.lower(),
            config.event_id_header.lower(), config.trace_id_header.lower(),
        }
        kept: dict[str, str | list[str]] = {}
        for name, value in pairs:
            if name in replaced:
                continue
            held = kept.get(name)
            if held is None:
                kept[name] = value
            elif isinstance(held, list):
                held.append(value)
            else:  # a repeated name: every value is sent again, in order
                kept[name] = [held, value]
        return AppError(found.code, details=details, headers=kept)

    # -- report ---------------------------------------------------------------------------

    def report(self, code: str, message: str | None = None, /, **details: Any) -> ErrorEvent:
        """Record a condition (meant for levels 4-6) without raising or failing anything.

        A code that is not registered is recorded at level 5 (INFO), under its own id
        when that is a valid id, else as ``UNREGISTERED_CODE`` with the given value in
        ``details["given_code"]``.
        """
        known = registry.find(code) if isinstance(code, str) else None
        if known is None:
            stats.incr("report_unknown_code")
            log.warning("errtrace.report: unknown code %r recorded at level 5", str(code)[:100])
            if isinstance(code, str) and CODE_ID_RE.match(code):
                known = ErrorCode(id=code, level=Level.INFO)
            else:
                known = ErrorCode(id="UNREGISTERED_CODE", level=Level.INFO)
                details["given_code"] = str(code)[:100]
        err = AppError(known, message, details=details)
        return self.record(err, current(), transport="report", set_context=False)


def _qualname(exc: BaseException) -> str:
    klass = type(exc)
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ fails must not fail the recording
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text}"[:4096]


def _text(value: Any) -> str | None:
    return value[:8192] if isinstance(value, str) else None


def _terminate_self() -> None:
    # SIGTERM lets the server (uvicorn, gunicorn, grpc) drain and stop in its own way.
    os.kill(os.getpid(), signal.SIGTERM)


_default: Runtime | None = None


def default_runtime() -> Runtime:
    """The process-wide runtime (configured from ``ERRTRACE_*`` on first use)."""
    global _default
    if _default is None:
        _default = Runtime()
    return _default


def set_default_runtime(runtime: Runtime | None) -> None:
    """Replace the process-wide runtime (``None``: rebuild on next use)."""
    global _default
    _default = runtime


def resolve_runtime(
    runtime: Runtime | None = None, config: Config | None = None, options: Mapping[str, Any] = {}
) -> Runtime:
    """The runtime an adapter was asked for: ``runtime=``, ``config=`` or Config options.

    With none of them, the process-wide runtime. Giving more than one is a TypeError,
    so that a setting never silently loses to another.
    """
    if runtime is not None:
        if config is not None or options:
            raise TypeError("pass either runtime=, config= or keyword options, not several")
        return runtime
    if config is not None and options:
        raise TypeError("pass either config= or keyword options, not both")
    if config is None and not options:
        return default_runtime()
    return Runtime(config if config is not None else Config.load(**options))


def runtime_for(ctx: ErrorContext | None) -> Runtime:
    """The runtime that owns ``ctx`` (the app's), else the process-wide one."""
    if ctx is not None and ctx.runtime is not None:
        return ctx.runtime
    return default_runtime()


def one_line(text: str | None) -> str:
    """``text`` for a log line: "-" for none; a control character (a CR or LF from a
    request path or an exception's message, which would start a forged log record) is
    written escaped, as ``\\r``, ``\\n`` or ``\\x1b``."""
    if not text:
        return "-"
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def inject_current(
    carrier: C,
    setter: Setter[C],
    runtime: Runtime | None = None,
    *,
    host: str | None = None,
    remove: Callable[[str], object] | None = None,
) -> str | None:
    """Write the current context into an outgoing call's carrier; returns the call's span
    id, or None when nothing was written (``third_party_propagation="none"``).

    Outside a request (no current context) the call starts a new trace of its own, or
    continues that of the active OpenTelemetry span. Settings come from ``runtime`` if
    given, else from the runtime of the current request. A call to ``host``, when that
    is a third party's API, carries only what ``third_party_propagation`` allows; then
    ``remove(name)``, if given, takes out of the carrier every context header that mode
    does not send, whoever set it (a redirect's copy of an earlier request's headers, an
    inbound header forwarded as it came). Every client adapter (httpx, gRPC) and
    ``errtrace.outgoing_headers()`` use it.
    """
    ctx = current()
    runtime = runtime or runtime_for(ctx)
    config = runtime.config
    settings = config.propagation
    mode = "all" if host is None else propagation_to(config, host)
    if mode != "all" and remove is not None:
        for name in (TRACESTATE, BAGGAGE, settings.biz_header):
            remove(name)
        if mode == "none":
            remove(TRACEPARENT)
    if mode == "none":
        return None
    if ctx is None:  # within an active OpenTelemetry span, the call continues its trace
        ctx = new_root_context(settings)
        runtime.follow_span(ctx)
    return inject(ctx, carrier, setter, settings, trace_only=mode == "traceparent")


def propagation_to(config: Config, host: str) -> str:
    """What an outgoing call to ``host`` carries: ``"all"``, or for a third party's API
    (:func:`~errtrace.core.llm_hosts.is_third_party`, ``config.third_party_hosts``)
    ``config.third_party_propagation``."""
    mode = config.third_party_propagation
    if mode == "all":
        return "all"
    name = normalize_host(host)
    if not name:
        return "all"
    if is_third_party(name) or config.is_third_party_host(name):
        return mode
    return "all"


def plain_fallback_response(
    result: Any, trace_header: tuple[str, str], code: str
) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """An HTTP response for a fallback's plain result (dict/list -> JSON, str, bytes).

    Returns None for any other object: the adapter then treats it as a response of its
    own framework (a Starlette ``Response``, a Flask/WSGI response).
    """
    headers = [trace_header, ("X-Errtrace-Fallback", code)]
    if isinstance(result, (dict, list)):
        body = problem_json(result)  # strict JSON: a NaN becomes null
        return 200, [("Content-Type", "application/json"), *headers], body
    if isinstance(result, str):
        return 200, [("Content-Type", "text/plain; charset=utf-8"), *headers], result.encode()
    if isinstance(result, bytes):
        return 200, [("Content-Type", "application/octet-stream"), *headers], result
    return None
