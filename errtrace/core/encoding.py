"""Errors on the wire: RFC 9457 problem+json, a neutral dict, and decoding both back.

The problem document carries the RFC 9457 members ``type`` (a stable URI per code),
``title``, ``status``, ``detail`` and ``instance`` (the event id), and the extension
members ``code``, ``level``, ``trace_id``, ``span_id``, ``biz_code``, ``event_id``,
``hint``, ``retryable`` and, where present, ``domain`` (the code's ErrorInfo domain,
when it is not errtrace's own), ``retry_after``, ``errors`` (field errors), ``details``
and ``caused_by`` (the events of downstream hops, nearest first).

The neutral dict is the same information under transport-neutral names; the gRPC
interceptors turn it into ``google.rpc.Status`` with ``ErrorInfo`` and ``RetryInfo``.
Exception text and stack traces appear only when debug is on.

Every body written is strict JSON (RFC 8259), whatever the raiser put in ``details``:
the encoders refuse NaN and the infinities, and the rare document they cannot write as
it is (such a float, a dict key that is not text, a value whose ``str()`` fails, a
cycle) is written again from the copy :func:`jsonable` makes of it. NaN and the
infinities, which JSON has no form for, become ``null``, as JavaScript's
``JSON.stringify`` writes them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import traceback
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any, NamedTuple

from errtrace.core.codes import CODE_ID_RE, DEFAULT_DOMAIN, ErrorCode, short_repr
from errtrace.core.config import Config
from errtrace.core.context import ErrorContext
from errtrace.core.errors import MAX_RETRY_AFTER, AppError, RemoteError, is_domain
from errtrace.core.propagation import TOKEN_RE
from errtrace.core.status import parse_retry_after as parse_retry_after  # re-exported
from errtrace.core.status import small_int

log = logging.getLogger("errtrace")

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


def _provider_message(text: str) -> str:
    """The ``message`` of a provider's error envelope (OpenAI, Anthropic, Google and
    the like, as JSON or as an SDK's printed dict), else the text itself, bounded."""
    from errtrace.core.rewrite._extract import parse_envelope

    message = parse_envelope(text[:8192]).get("message") if "{" in text else None
    return message if message else text[:8192]


def detail_text(err: AppError, debug: bool) -> str:
    """The human-readable detail: the raiser's message, never an exception's text."""
    if err.message:
        return err.message
    if debug and err.remote is not None and err.remote.message:
        return err.remote.message
    if debug:  # an LLM provider's own words, however the call was made (SDK or httpx)
        text = err.details.get("_provider_text")
        if isinstance(text, str) and text.strip():
            return _provider_message(text)
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
    if code.domain != DEFAULT_DOMAIN:
        body["domain"] = code.domain
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
    the same structured error as a non-streaming one. It starts with a blank line: the
    stream may have stopped inside a line or an event, and the WHATWG event-stream
    parser would then read ``event: error`` into that event. The first line break ends
    any partial line, the blank line dispatches any partial event (or, after a complete
    event, dispatches nothing: its data buffer is empty), so the error is always an
    event of its own.
    """
    doc = problem(err, ctx, err.event_id, config)
    try:
        data = _SSE_ENCODER.encode(doc)
    except Exception:  # rare: see problem_json
        data = _SSE_ENCODER.encode(jsonable(doc))
    return b"\n\nevent: error\ndata: " + data.encode() + b"\n\n"


# allow_nan=False: NaN and the infinities are not JSON (RFC 8259 section 6); the encoder
# raises on them, and the fallback writes them as null.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=False)
_SSE_ENCODER = json.JSONEncoder(default=str, allow_nan=False)


def problem_json(body: Any) -> bytes:
    """Serialize a problem document (or any JSON-able value: a fallback's dict or list)
    as strict JSON (other values become strings).

    The C encoder writes the common document at full speed; only one it raises on (a
    NaN, a key that is not text, a ``str()`` that fails, a cycle, nesting too deep) is
    written again from its :func:`jsonable` copy, so an error's own status and code are
    answered whatever its details hold.
    """
    try:
        return _ENCODER.encode(body).encode()
    except Exception:  # any of the above; the copy cannot make the encoder raise
        return _ENCODER.encode(jsonable(body)).encode()


_MAX_DEPTH = 100
_INT_BITS = 10_000  # well within the 4300 digits int -> str converts by default


def jsonable(value: Any) -> Any:
    """A copy of ``value`` that a strict JSON encoder writes as the problem+json encoder
    does (RFC 8259), made without raising.

    Text, finite numbers, booleans and None stay as they are; dicts and lists are
    copied, tuples become lists. NaN and the infinities, which JSON has no form for,
    become None. A dict key that is not text becomes the text JSON writes for it
    (``"1"``, ``"true"``, ``"null"``) or else its ``str()``. Any other value becomes its
    ``str()``, or ``"<unprintable TYPE>"`` when that fails. A container met again inside
    itself, or nested more than 100 deep, is cut off as a short string.
    """
    return _jsonable(value, set(), 0)


def _jsonable(value: Any, seen: set[int], depth: int) -> Any:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return value if value.bit_length() < _INT_BITS else _int_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, (dict, list, tuple)):
        return _text(value)
    if depth >= _MAX_DEPTH:
        return "<nested too deeply>"
    marker = id(value)
    if marker in seen:
        return "<circular reference>"
    seen.add(marker)
    try:
        if isinstance(value, dict):
            return {_key(k): _jsonable(v, seen, depth + 1) for k, v in list(value.items())}
        return [_jsonable(item, seen, depth + 1) for item in list(value)]
    except Exception:  # a container subclass whose items() or iteration raises
        return _text(value)
    finally:
        seen.discard(marker)


def _key(key: Any) -> str:
    # JSON's own text for the keys it accepts (the C encoder's), str() for the others.
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return "null" if key is None else "true" if key else "false"
    if isinstance(key, int):
        return _int_text(key)
    if isinstance(key, float) and math.isfinite(key):
        return float.__repr__(key)
    return _text(key)


def _int_text(value: int) -> str:
    try:
        return int.__repr__(value)
    except ValueError:  # more digits than int -> str converts
        return f"<int of {value.bit_length()} bits>"


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def error_headers(
    err: AppError, ctx: ErrorContext | None, event_id: str | None, config: Config
) -> list[tuple[str, str]]:
    """The response headers of an error: code, level, event id, trace id, Retry-After,
    and the error's own headers (see :func:`_own_headers`)."""
    headers = [
        (config.error_code_header, err.code),
        (config.error_level_header, str(int(err.level))),
    ]
    if event_id:
        headers.append((config.event_id_header, event_id))
    if ctx is not None:
        headers.append((config.trace_id_header, ctx.trace_id))
    own = _own_headers(err) if err.headers else []
    # A Retry-After of the error's own (one the app set) is written as it is and alone.
    if "retry-after" not in {name.lower() for name, _ in own}:
        retry = retry_after_header(err)
        if retry is not None:
            headers.append(("Retry-After", retry))
    headers.extend(own)
    return headers


_BODY_HEADERS = ("content-type", "content-length")


def _own_headers(err: AppError) -> list[tuple[str, str]]:
    """The lines of ``err.headers`` a response can carry, as text pairs.

    A list or tuple value gives one line per item (``Set-Cookie``); a number is written
    with ``str()``. A name or value that no HTTP response can carry (not text, a name
    that is no RFC 9110 token, a value outside latin-1 or with a control character: a
    CR or LF there would split the header, a request value put into it could add a
    header of its own) is left out and logged once per name: the error is being
    answered on a failure path, where raising again would replace its own status with
    a 500. Content-Type and Content-Length are the body's, never the error's.
    """
    out: list[tuple[str, str]] = []
    for name, value in err.headers.items():
        if (isinstance(value, str) and isinstance(name, str) and value.isascii()
                and value.isprintable() and TOKEN_RE.match(name)):  # the common case
            if name.lower() not in _BODY_HEADERS:
                out.append((name, value))
            continue
        items: Sequence[object] = value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            if not (isinstance(name, str) and isinstance(item, str)
                    and TOKEN_RE.match(name) and _latin1(item)
                    and not _CONTROL_RE.search(item)):
                _warn_dropped_header(err, name, item)
            elif name.lower() not in _BODY_HEADERS:
                out.append((name, item))
    return out


_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What a header value may not hold (RFC 9110 section 5.5): controls other than tab."""


def _latin1(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


_dropped_warned: set[str] = set()


def _warn_dropped_header(err: AppError, name: object, value: object) -> None:
    shown = short_repr(name)
    if shown in _dropped_warned or len(_dropped_warned) >= 1000:
        return
    _dropped_warned.add(shown)
    if not isinstance(name, str) or not TOKEN_RE.match(name):
        why = "its name is not a header name (a token)"
    elif isinstance(value, str):
        why = ("its value holds a control character (CR, LF, ...)"
               if _CONTROL_RE.search(value) else "its value is not latin-1 text")
    else:
        why = f"a {type(value).__name__} value is not header text"
    log.warning(
        "errtrace: header %s of error %s left out of the response: %s", shown, err.code, why
    )


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
            f'"retryable":{"true" if code.retryable else "false"}'
            + (f',"domain":{_json_str(code.domain)}}}' if code.domain != DEFAULT_DOMAIN else "}")
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


_LINK_KEYS = ("code", "event_id", "span_id", "service")
"""The members of a ``caused_by`` link (:meth:`RemoteError.link`); a remote's others,
which may carry its text, are not kept."""

_FIELD_ERROR_LIMITS = {"field": 256, "message": 512, "type": 128}
"""The members of an ``errors`` item (the field errors of a validation failure), with
their longest kept length; others are not kept."""
MAX_FIELD_ERRORS = 100


def _chain(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for link in value[:MAX_CHAIN]:
        if isinstance(link, Mapping) and isinstance(link.get("code"), str):
            kept = {k: link[k] for k in _LINK_KEYS if _str_or_none(link.get(k)) is not None}
            if "code" in kept and CODE_ID_RE.match(kept["code"]):
                out.append(kept)
    return tuple(out)


def _field_errors(value: Any) -> list[dict[str, str]]:
    """A remote's field errors, in errtrace's shape only and bounded: a remote's
    ``errors`` may be any JSON, and each item is kept in the event ring and sent on."""
    out: list[dict[str, str]] = []
    if isinstance(value, list):
        for item in value[:MAX_FIELD_ERRORS]:
            if isinstance(item, Mapping):
                kept = {
                    key: text[:limit]
                    for key, limit in _FIELD_ERROR_LIMITS.items()
                    if isinstance(text := item.get(key), str)
                }
                if kept:
                    out.append(kept)
    return out


def from_neutral(
    data: Mapping[str, Any],
    *,
    http_status: int | None = None,
    grpc_status: str | None = None,
    service: str | None = None,
) -> AppError | None:
    """Rebuild the :class:`AppError` a remote hop described (problem+json or neutral dict).

    The remote code, level, message and event id are kept, and for a code this process
    does not register, whether it may be retried and its domain; its own event and the
    events behind it become this error's ``caused_by`` chain. Returns None when ``data`` names
    no usable code. Values are bounded and never trusted as more than text.
    """
    code = data.get("code")
    if not isinstance(code, str) or not CODE_ID_RE.match(code):
        return None
    level = data.get("level")
    # The status the answer came with wins over what its body says (a 500 whose body
    # says 200 or 401 is still a 500); the body's is used when the transport has none.
    status = http_status if http_status is not None else data.get(
        "status", data.get("http_status")
    )
    message = data.get("detail", data.get("message"))
    retryable, domain = data.get("retryable"), data.get("domain")
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
        retryable=retryable if isinstance(retryable, bool) else None,
        domain=domain if isinstance(domain, str) and is_domain(domain) else None,
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
    errors = _field_errors(data.get("errors"))
    if errors:
        details["errors"] = errors
    # A code registered here keeps this service's status; one it does not know takes
    # the remote's level and statuses (resolve_code).
    return AppError(code, None, details=details, remote=remote)


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
