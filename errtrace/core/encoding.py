"""Errors on the wire: RFC 9457 problem+json, a neutral dict, and decoding both back.

The problem document carries the RFC 9457 members ``type`` (a stable URI per code),
``title``, ``status``, ``detail`` and ``instance`` (the event id), and the extension
members ``code``, ``level``, ``trace_id``, ``span_id``, ``biz_code``, ``event_id``,
``hint``, ``retryable`` and, where present, ``retry_after``, ``errors`` (field errors),
``details`` and ``caused_by`` (the events of downstream hops, nearest first).

The neutral dict is the same information under transport-neutral names; the gRPC
interceptors turn it into ``google.rpc.Status`` with ``ErrorInfo`` and ``RetryInfo``.
Exception text and stack traces appear only when debug is on.
"""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any, NamedTuple

from errtrace.core.codes import CODE_ID_RE, ErrorCode
from errtrace.core.config import Config
from errtrace.core.context import ErrorContext
from errtrace.core.errors import MAX_RETRY_AFTER, AppError, RemoteError
from errtrace.core.status import parse_retry_after as parse_retry_after  # re-exported
from errtrace.core.status import small_int

PROBLEM_JSON = "application/problem+json"
MAX_CHAIN = 16
_UNHANDLED_DETAIL = "An unexpected error occurred. Quote the event id when reporting it."


def client_details(err: AppError) -> dict[str, Any]:
    """The details a client may see: keys starting with ``_`` are private."""
    return {
        k: v for k, v in err.details.items() if not (isinstance(k, str) and k.startswith("_"))
    }


def caused_by(err: AppError) -> list[dict[str, Any]]:
    """The chain of downstream events behind ``err``, nearest hop first, bounded."""
    remote = err.remote
    if remote is None:
        return []
    chain = [remote.link(), *(dict(link) for link in remote.upstream)]
    return chain[:MAX_CHAIN]


def _exception_text(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose __str__ fails
        return f"{type(exc).__name__}: <unprintable>"


def detail_text(err: AppError, debug: bool) -> str:
    """The human-readable detail: the raiser's message, never an exception's text."""
    if err.message:
        return err.message
    if debug and err.remote is not None and err.remote.message:
        return err.remote.message
    cause = err.cause
    if debug and cause is not None:
        return _exception_text(cause)
    if err.code == "INTERNAL":
        return _UNHANDLED_DETAIL
    return err.error_code.hint or err.error_code.title


def problem(
    err: AppError, ctx: ErrorContext | None, event_id: str | None, config: Config
) -> dict[str, Any]:
    """The RFC 9457 problem document for ``err``."""
    code = err.error_code
    body: dict[str, Any] = {
        "type": config.problem_type_base + code.id,
        "title": code.title,
        "status": err.http_status,
        "detail": detail_text(err, config.debug),
    }
    if event_id:
        body["instance"] = event_id
    body["code"] = code.id
    body["level"] = int(code.level)
    body["trace_id"] = ctx.trace_id if ctx else None
    body["span_id"] = ctx.span_id if ctx else None
    body["biz_code"] = ctx.biz_code if ctx else None
    body["event_id"] = event_id
    body["service"] = config.service_name
    body["hint"] = code.hint
    body["retryable"] = code.retryable
    if err.retry_after is not None:
        body["retry_after"] = err.retry_after
    details = client_details(err)
    errors = details.pop("errors", None)
    details.pop("retry_after", None)
    if errors is not None:
        body["errors"] = errors
    if details:
        body["details"] = details
    chain = caused_by(err)
    if chain:
        body["caused_by"] = chain
    if config.debug and err.cause is not None:
        body["debug"] = {
            "exception": _exception_text(err.cause),
            "traceback": traceback.format_exception(err.cause)[-20:],
        }
    return body


def sse_error_event(
    err: AppError, ctx: ErrorContext | None, config: Config
) -> bytes:
    """The final ``event: error`` of a ``text/event-stream`` that failed mid-stream.

    Its ``data`` is the problem document on one line, so an EventSource client gets
    the same structured error as a non-streaming one.
    """
    doc = problem(err, ctx, err.event_id, config)
    return b"event: error\ndata: " + json.dumps(doc, default=str).encode() + b"\n\n"


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def problem_json(body: Mapping[str, Any]) -> bytes:
    """Serialize a problem document (non-JSON values become strings)."""
    return _ENCODER.encode(body).encode()


def error_headers(
    err: AppError, ctx: ErrorContext | None, event_id: str | None, config: Config
) -> list[tuple[str, str]]:
    """The response headers of an error: code, level, event id, trace id, Retry-After."""
    headers = [
        (config.error_code_header, err.code),
        (config.error_level_header, str(int(err.level))),
    ]
    if event_id:
        headers.append((config.event_id_header, event_id))
    if ctx is not None:
        headers.append((config.trace_id_header, ctx.trace_id))
    own = {name.lower() for name in err.headers}
    retry = retry_after_header(err) if "retry-after" not in own else None
    if retry is not None:
        headers.append(("Retry-After", retry))
    for name, value in err.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            if isinstance(value, str):
                headers.append((name, value))
            else:  # one header line per value (Set-Cookie)
                headers.extend((name, item) for item in value)
    return headers


class ErrorWriter:
    """The HTTP error response of one :class:`~errtrace.Config`, built fast.

    The constant parts of each code's problem document and headers are serialized once
    and cached; a plain error (no public details, no remote chain, no ``retry_after``,
    no headers of its own, debug off) only has its message, ids and business code
    written per response. Anything else goes through :func:`problem` and
    :func:`error_headers`. Both ways give the same bytes (the tests compare them).
    """

    _MAX_CACHED = 1024

    def __init__(self, config: Config) -> None:
        self.config = config
        self._parts: dict[tuple[str, int], _Parts] = {}
        self._names = tuple(
            name.lower().encode("latin-1")
            for name in (config.event_id_header, config.trace_id_header)
        )

    def response(
        self, err: AppError, ctx: ErrorContext | None, event_id: str | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, lower-case latin-1 header pairs (no Content-Length) and body."""
        config = self.config
        status = err.http_status
        if (
            config.debug
            or err.remote is not None
            or err.headers
            or (err.details and client_details(err))
        ):
            body = problem_json(problem(err, ctx, event_id, config))
            headers = encode_headers(error_headers(err, ctx, event_id, config))
            headers.insert(0, (b"content-type", _PROBLEM_JSON_BYTES))
            return status, headers, body
        code = err.error_code
        parts = self._parts.get((code.id, status))
        if parts is None or parts.code is not code:
            parts = self._build(err, status)
        detail = _json_str(detail_text(err, False))
        if ctx is not None:
            trace_id = ctx.trace_id
            biz = ctx.biz_code
            ids = (
                f'{_json_str(trace_id)},"span_id":{_json_str(ctx.span_id)},"biz_code":'
                f'{"null" if biz is None else _json_str(biz)}'
            )
        else:
            trace_id = None
            ids = 'null,"span_id":null,"biz_code":null'
        eid = "null" if event_id is None else _json_str(event_id)
        instance = f',"instance":{eid}' if event_id else ""
        text = f'{parts.head}{detail}{instance}{parts.middle}{ids},"event_id":{eid}{parts.tail}'
        headers = list(parts.headers)
        event_name, trace_name = self._names
        if event_id:
            headers.append((event_name, event_id.encode("latin-1")))
        if trace_id is not None:
            headers.append((trace_name, trace_id.encode("latin-1")))
        if parts.retry_after is not None:
            headers.append(parts.retry_after)
        return status, headers, text.encode("ascii")

    def _build(self, err: AppError, status: int) -> _Parts:
        config, code = self.config, err.error_code
        head = (
            f'{{"type":{_json_str(config.problem_type_base + code.id)},'
            f'"title":{_json_str(code.title)},"status":{int(status)},"detail":'
        )
        middle = f',"code":{_json_str(code.id)},"level":{int(code.level)},"trace_id":'
        tail = (
            f',"service":{_json_str(config.service_name)},"hint":{_json_str(code.hint)},'
            f'"retryable":{"true" if code.retryable else "false"}}}'
        )
        static = encode_headers([
            (config.error_code_header, code.id),
            (config.error_level_header, str(int(code.level))),
        ])
        static.insert(0, (b"content-type", _PROBLEM_JSON_BYTES))
        retry = retry_after_header(err)
        parts = _Parts(
            code, head, middle, tail, tuple(static),
            (b"retry-after", retry.encode("ascii")) if retry is not None else None,
        )
        if len(self._parts) >= self._MAX_CACHED:  # codes made up at run time: stay bounded
            self._parts.clear()
        self._parts[(code.id, status)] = parts
        return parts


class _Parts(NamedTuple):
    code: ErrorCode
    head: str
    middle: str
    tail: str
    headers: tuple[tuple[bytes, bytes], ...]
    retry_after: tuple[bytes, bytes] | None


_PROBLEM_JSON_BYTES = PROBLEM_JSON.encode("latin-1")


def encode_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Lower-case latin-1 byte pairs (ASGI's form) from text header pairs."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def retry_after_header(err: AppError) -> str | None:
    """Whole seconds for ``Retry-After`` (RFC 9110 delay-seconds), when it applies."""
    if not err.retryable:
        return None
    if err.retry_after is not None:
        return str(max(0, math.ceil(err.retry_after)))
    if err.http_status in (429, 503):
        return "1"
    return None


def neutral(
    err: AppError, ctx: ErrorContext | None, event_id: str | None, config: Config
) -> dict[str, Any]:
    """The transport-neutral form of an error (for gRPC details and other carriers)."""
    code = err.error_code
    out: dict[str, Any] = {
        "code": code.id,
        "level": int(code.level),
        "message": detail_text(err, config.debug),
        "domain": code.domain,
        "service": config.service_name,
        "http_status": err.http_status,
        "grpc_status": err.grpc_status,
        "retryable": code.retryable,
        "hint": code.hint,
        "trace_id": ctx.trace_id if ctx else None,
        "span_id": ctx.span_id if ctx else None,
        "biz_code": ctx.biz_code if ctx else None,
        "event_id": event_id,
    }
    if err.retry_after is not None:
        out["retry_after"] = err.retry_after
    details = client_details(err)
    details.pop("retry_after", None)
    if details:
        out["details"] = details
    chain = caused_by(err)
    if chain:
        out["caused_by"] = chain
    return out


# --- decoding ---------------------------------------------------------------------------


def _str_or_none(value: Any, limit: int = 128) -> str | None:
    if isinstance(value, str) and value and len(value) <= limit:
        return value
    return None


def _chain(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for link in value[:MAX_CHAIN]:
        if isinstance(link, Mapping) and isinstance(link.get("code"), str):
            out.append({k: v for k, v in link.items() if isinstance(v, str) and len(v) <= 128})
    return tuple(out)


def from_neutral(
    data: Mapping[str, Any],
    *,
    http_status: int | None = None,
    grpc_status: str | None = None,
    service: str | None = None,
) -> AppError | None:
    """Rebuild the :class:`AppError` a remote hop described (problem+json or neutral dict).

    The remote code, level, message and event id are kept; its own event and the events
    behind it become this error's ``caused_by`` chain. Returns None when ``data`` names
    no usable code. Values are bounded and never trusted as more than text.
    """
    code = data.get("code")
    if not isinstance(code, str) or not CODE_ID_RE.match(code):
        return None
    level = data.get("level")
    status = data.get("status", data.get("http_status", http_status))
    message = data.get("detail", data.get("message"))
    remote = RemoteError(
        code=code,
        event_id=_str_or_none(data.get("event_id")),
        trace_id=_str_or_none(data.get("trace_id")),
        span_id=_str_or_none(data.get("span_id")),
        service=_str_or_none(data.get("service")) or service,
        level=level if isinstance(level, int) and not isinstance(level, bool) else None,
        http_status=status if isinstance(status, int) and not isinstance(status, bool) else None,
        grpc_status=_str_or_none(data.get("grpc_status")) or grpc_status,
        upstream=_chain(data.get("caused_by")),
        # Another service's text is not ours to show: kept on the error for this
        # service's code, sent on to clients only in debug.
        message=message[:2048] if isinstance(message, str) and message else None,
    )
    details: dict[str, Any] = {}
    retry_after = data.get("retry_after")
    if (
        isinstance(retry_after, (int, float))
        and not isinstance(retry_after, bool)
        and math.isfinite(retry_after)
        and retry_after >= 0
    ):
        details["retry_after"] = min(float(retry_after), MAX_RETRY_AFTER)
    errors = data.get("errors")
    if isinstance(errors, list):
        details["errors"] = errors[:100]
    return AppError(code, None, details=details, remote=remote, status=remote.http_status)


def _no_constant(name: str) -> Any:
    # NaN / Infinity are not JSON; a remote body that uses them is not decoded.
    raise ValueError(f"{name} is not valid JSON")


def from_http_response(
    status: int, headers: Mapping[str, str], body: bytes, *, service: str | None = None
) -> AppError | None:
    """Decode an HTTP error response: problem+json, JSON with a ``code``, or X-Error-Code.

    ``headers`` keys must be lower-case. Returns None when the response carries no code
    (the caller then classifies it by status or text).
    """
    data: Any = None
    if body and len(body) <= 1_048_576:
        ctype = headers.get("content-type", "")
        if "json" in ctype or body[:1] == b"{":
            try:
                data = json.loads(body, parse_constant=_no_constant)
            except (ValueError, UnicodeDecodeError, RecursionError):
                data = None
    if isinstance(data, Mapping):
        inner = data.get("error") if "code" not in data else None
        candidate = inner if isinstance(inner, Mapping) and "code" in inner else data
        err = from_neutral(candidate, http_status=status, service=service)
        if err is not None:
            if "event_id" not in candidate and headers.get("x-error-event-id") and err.remote:
                err = _with_event(err, headers["x-error-event-id"])
            return err
    code = headers.get("x-error-code")
    if code:
        level = headers.get("x-error-level")
        return from_neutral(
            {
                "code": code.strip(),
                "level": small_int(level),
                "status": status,
                "event_id": headers.get("x-error-event-id"),
            },
            service=service,
        )
    return None


def error_for_upstream_status(status: int) -> AppError:
    """The error for a dependency's un-coded error status (its text is not trusted).

    408/504 -> TIMEOUT; 429/503 -> UPSTREAM_UNAVAILABLE (the peer asks us to come back
    later, so retryable whatever its reason); anything else -> UPSTREAM_ERROR. A 4xx from
    a dependency is this service's failure, not its caller's, so it is never passed on.
    """
    if status in (408, 504):
        code = "TIMEOUT"
    elif status in (429, 503):
        code = "UPSTREAM_UNAVAILABLE"
    else:
        code = "UPSTREAM_ERROR"
    return AppError(code, None, details={"upstream_status": status})


def _with_event(err: AppError, event_id: str) -> AppError:
    assert err.remote is not None
    remote = RemoteError(**{**err.remote.__dict__, "event_id": _str_or_none(event_id)})
    err.remote = remote
    return err
