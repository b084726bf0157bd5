"""Errors as gRPC statuses, and back: shared by the sync and aio interceptors.

A server error becomes the code's gRPC status, a safe message and trailing metadata
with ``grpc-status-details-bin``: a ``google.rpc.Status`` whose details hold a
``google.rpc.ErrorInfo`` (reason = code id, domain = the code's domain, metadata =
:func:`errtrace.core.stringmap.to_string_map` of the neutral dict) and, for retryable
codes, a ``google.rpc.RetryInfo`` (AIP-193). Any gRPC client can read it with
``grpc_status.rpc_status.from_call``.

A failed call is decoded back into an :class:`~errtrace.AppError` with the remote code,
level, event id and ``caused_by`` chain; without rich details, the gRPC status decides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import grpc
from google.rpc import error_details_pb2, status_pb2

from errtrace.core.codes import ErrorCode
from errtrace.core.config import Config
from errtrace.core.context import ErrorContext
from errtrace.core.encoding import client_details, detail_text, from_neutral, neutral
from errtrace.core.errors import AppError, error_for_grpc_status
from errtrace.core.status import GRPC_NAMES, small_int
from errtrace.core.stringmap import from_string_map, to_string_map
from errtrace.grpc_interceptors import _wire
from errtrace.grpc_interceptors._metadata import replaced

DETAILS_KEY = "grpc-status-details-bin"
DEFAULT_RETRY_DELAY = 1.0
MAX_STATUS_BYTES = 65536
MAX_MESSAGE_BYTES = 1024
"""Longest status message, as sent in ``grpc-message`` (percent-encoded, as the gRPC
over HTTP/2 protocol spec requires).

The message travels twice: in ``grpc-message`` and inside ``grpc-status-details-bin``
(base64). gRPC refuses a trailer block above its metadata soft limit (8 KiB by default,
``grpc.max_metadata_size``) by failing the call with RESOURCE_EXHAUSTED, which would
lose the error; with this cap the message takes at most about 2.4 KiB of the block."""
_CUT_MARK = "..."
# The bytes grpc sends as they are in grpc-message: printable ASCII except "%". Any
# other byte (of the UTF-8 text) becomes "%XX", three bytes.
_VERBATIM = bytes(b for b in range(0x20, 0x7F) if b != ord("%"))

STATUS_CODES: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}


def error_from_status_exception(exc: BaseException) -> AppError | None:
    """The error for an exception that carries its own gRPC status, or None.

    Such an exception (``status_code`` a non-OK ``grpc.StatusCode``, ``details`` its
    text) says which status its caller should get: the error answers with that status
    and text (no text for UNKNOWN, INTERNAL and DATA_LOSS, which are ``INTERNAL``),
    under the code of the status's class (``NOT_FOUND`` for NOT_FOUND,
    ``BAD_REQUEST`` for FAILED_PRECONDITION, ...), so a handler written for
    grpc-interceptor's exceptions answers as before, wherever its interceptor is listed.
    """
    try:
        status = getattr(exc, "status_code", None)
        text = getattr(exc, "details", None)
    except Exception:  # a property that fails: not such an exception
        return None
    if not isinstance(status, grpc.StatusCode) or status is grpc.StatusCode.OK:
        return None
    return error_for_grpc_status(status.name, text if isinstance(text, str) and text else None)


# A failed call without errtrace details: which code the gRPC status stands for.
_BY_STATUS: dict[str, str] = {
    "UNAVAILABLE": "UPSTREAM_UNAVAILABLE",
    "DEADLINE_EXCEEDED": "TIMEOUT",
    "RESOURCE_EXHAUSTED": "UPSTREAM_UNAVAILABLE",
    "CANCELLED": "CANCELLED",
    "UNIMPLEMENTED": "UPSTREAM_ERROR",
}


class Status(NamedTuple):
    """A ``grpc.Status``-shaped result: code, details and trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, Any], ...]


def error_status(
    err: AppError,
    ctx: ErrorContext | None,
    config: Config,
    *,
    code: grpc.StatusCode | None = None,
    existing: Iterable[tuple[str, Any]] | None = None,
) -> Status:
    """The status, safe message and trailing metadata that answer ``err``.

    ``code`` overrides the code's own status (a status the handler set is kept), as
    does the error's own ``grpc_status`` when no handler set one.
    ``existing`` trailing metadata set by the handler is kept, except for the keys
    errtrace writes.

    A plain error (no public details, no remote chain, debug off) is written from its
    code's parts, serialized once per code and config; anything else goes through the
    neutral dict. Both give the same bytes (the tests compare them).
    """
    if code is None and err.grpc_status_override is not None:  # AppError(grpc_status=...)
        code = STATUS_CODES[err.grpc_status_override]
    if config.debug or err.remote is not None or (err.details and client_details(err)):
        status_code, message, rich, head = _neutral_answer(err, ctx, config, code)
    else:
        status_code, message, rich, head = _plain_answer(err, ctx, config, code)
    _, _, event_key, trace_key = _keys(config)
    added: list[tuple[str, Any]] = [(DETAILS_KEY, rich), *head]
    if err.event_id:
        added.append((event_key, err.event_id))
    if ctx is not None:
        added.append((trace_key, ctx.trace_id))
    return Status(status_code, message, tuple(replaced(existing, added)))


# What the status of an error is made of: its code, message, the serialized
# google.rpc.Status, and the error code and level trailers.
_Answer = tuple[grpc.StatusCode, str, bytes, tuple[tuple[str, str], ...]]


def _neutral_answer(
    err: AppError, ctx: ErrorContext | None, config: Config, code: grpc.StatusCode | None
) -> _Answer:
    data = neutral(err, ctx, err.event_id, config)
    status_code = code if code is not None else STATUS_CODES.get(err.grpc_status)
    if status_code is None or status_code is grpc.StatusCode.OK:
        status_code = grpc.StatusCode.UNKNOWN
    message = sendable_message(data["message"])
    details = [(_wire.ERROR_INFO, _wire.error_info(err.code, data["domain"], to_string_map(data)))]
    if err.retryable:
        details.append((_wire.RETRY_INFO, _wire.retry_info(_delay_seconds(err))))
    rich = _wire.status(status_code.value[0], message, details)
    code_key, level_key, _, _ = _keys(config)
    return status_code, message, rich, ((code_key, err.code), (level_key, str(data["level"])))


class _StatusParts(NamedTuple):
    """What every plain error of one code answers with, serialized once."""

    code: ErrorCode
    status_code: grpc.StatusCode
    info_head: bytes
    """ErrorInfo's reason, domain and ``level`` entry."""
    info_tail: bytes
    """ErrorInfo's ``service`` entry."""
    retry: bytes | None
    """The RetryInfo of the default delay (retryable codes)."""
    trailers: tuple[tuple[str, str], tuple[str, str]]
    """The error code and level trailers."""


_MAX_CACHED_PARTS = 1024
# The ErrorInfo metadata entries of a plain error: the order of to_string_map's keys.
_CONTEXT_KEYS = ("traceId", "spanId", "bizCode", "eventId")


def _plain_answer(
    err: AppError, ctx: ErrorContext | None, config: Config, code: grpc.StatusCode | None
) -> _Answer:
    cache: dict[str, _StatusParts] | None = config.__dict__.get("_grpc_status_parts")
    if cache is None:
        cache = {}
        object.__setattr__(config, "_grpc_status_parts", cache)  # a frozen dataclass's cache
    error_code = err.error_code
    parts = cache.get(error_code.id)
    if parts is None or parts.code is not error_code:
        parts = _status_parts(error_code, config)
        if len(cache) >= _MAX_CACHED_PARTS:
            cache.clear()
        cache[error_code.id] = parts
    if code is None:
        status_code = parts.status_code
    else:  # a status the handler set (OK is no error status: UNKNOWN, as in neutral form)
        status_code = grpc.StatusCode.UNKNOWN if code is grpc.StatusCode.OK else code
    info = bytearray(parts.info_head)
    values = (ctx.trace_id, ctx.span_id, ctx.biz_code) if ctx is not None else (None,) * 3
    for key, value in zip(_CONTEXT_KEYS, (*values, err.event_id), strict=True):
        if value:
            info += _wire.map_entry(key, value)
    info += parts.info_tail
    details = [(_wire.ERROR_INFO, bytes(info))]
    if parts.retry is not None:
        retry = parts.retry if err.retry_after is None else _wire.retry_info(_delay_seconds(err))
        details.append((_wire.RETRY_INFO, retry))
    message = sendable_message(detail_text(err, False))
    rich = _wire.status(status_code.value[0], message, details)
    return status_code, message, rich, parts.trailers


def sendable_message(text: str) -> str:
    """``text`` as a status message can carry it, in ``grpc-message`` and in the rich
    status alike (``grpc_status.rpc_status.from_call`` requires both to be equal).

    A lone surrogate, which UTF-8 cannot encode (grpc would fail to send the status),
    becomes ``?`` as in the rich status bytes; a text longer than
    :data:`MAX_MESSAGE_BYTES` on the wire is cut at a character boundary and ends with
    ``...``.
    """
    if text.isascii() and len(text) * 3 <= MAX_MESSAGE_BYTES:
        return text  # the usual short message: fits even if every byte were escaped
    raw = _wire.utf8(text)
    if _wire_size(raw) <= MAX_MESSAGE_BYTES:
        return raw.decode("utf-8")
    budget = MAX_MESSAGE_BYTES - len(_CUT_MARK)
    end = 0
    for byte in raw[:budget]:  # every byte takes at least one: no need to look further
        budget -= 1 if byte in _VERBATIM else 3
        if budget < 0:
            break
        end += 1
    # A cut inside a multi-byte character drops its first bytes.
    return raw[:end].decode("utf-8", "ignore") + _CUT_MARK


def _wire_size(raw: bytes) -> int:
    """The length of ``raw`` once percent-encoded for ``grpc-message``."""
    return len(raw) + 2 * len(raw.translate(None, _VERBATIM))


def _status_parts(code: ErrorCode, config: Config) -> _StatusParts:
    status_code = STATUS_CODES.get(code.grpc_status or "UNKNOWN")
    if status_code is None or status_code is grpc.StatusCode.OK:
        status_code = grpc.StatusCode.UNKNOWN
    level = str(int(code.level))
    service = config.service_name
    code_key, level_key, _, _ = _keys(config)
    return _StatusParts(
        code=code,
        status_code=status_code,
        info_head=_wire.error_info_head(code.id, code.domain) + _wire.map_entry("level", level),
        info_tail=_wire.map_entry("service", service) if service else b"",
        retry=_wire.retry_info(DEFAULT_RETRY_DELAY) if code.retryable else None,
        trailers=((code_key, code.id), (level_key, level)),
    )


def _keys(config: Config) -> tuple[str, str, str, str]:
    """The metadata keys of the error code, level, event id and trace id (lower case)."""
    found: tuple[str, str, str, str] | None = config.__dict__.get("_grpc_keys")
    if found is None:
        found = (
            config.error_code_header.lower(),
            config.error_level_header.lower(),
            config.event_id_header.lower(),
            config.trace_id_header.lower(),
        )
        object.__setattr__(config, "_grpc_keys", found)  # a frozen dataclass's cache
    return found


def _delay_seconds(err: AppError) -> float:
    seconds = err.retry_after
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return DEFAULT_RETRY_DELAY
    return seconds


# --- decoding ---------------------------------------------------------------------------


def error_from_call(call: Any, config: Config) -> AppError | None:
    """The :class:`AppError` a failed call stands for (None when it did not fail).

    ``call`` is a ``grpc.RpcError``/``grpc.Call`` (sync) or ``grpc.aio.AioRpcError``;
    the error is chained to it as ``__cause__``.
    """
    try:
        code = call.code()
        details = call.details()
        trailing = call.trailing_metadata()
    except Exception:  # not a finished call (an exception raised inside the channel)
        return None
    if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK:
        return None
    err = decode_status(code, details, trailing, config)
    err.__cause__ = call
    return err


def decode_status(
    code: grpc.StatusCode,
    details: str | None,
    trailing: Iterable[tuple[str, Any]] | None,
    config: Config,
) -> AppError:
    """Rebuild the error from a status, its message and trailing metadata."""
    name = code.name
    headers: dict[str, str] = {}
    wanted = _keys(config)[:3]  # the code, level and event id keys
    for key, value in trailing or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            err = _from_rich(value, code)
            if err is not None:
                return err
        elif key in wanted and isinstance(value, str):
            headers.setdefault(key, value.strip())
    remote_code = headers.get(wanted[0])
    if remote_code:
        # The rich details were dropped on the way (by a proxy), the plain keys were not.
        level = headers.get(wanted[1], "")
        found = from_neutral(
            {
                "code": remote_code,
                "level": small_int(level),
                "event_id": headers.get(wanted[2]),
            },
            grpc_status=name,
        )
        if found is not None:
            return found
    extra: dict[str, Any] = {"grpc_status": name}
    if details:
        # A peer's text may carry its exception: kept private, never shown to our clients.
        extra["_grpc_details"] = details[:2048]
    return AppError(_BY_STATUS.get(name, "UPSTREAM_ERROR"), details=extra)


def _from_rich(value: bytes, code: grpc.StatusCode) -> AppError | None:
    if len(value) > MAX_STATUS_BYTES:
        return None
    try:
        rich = status_pb2.Status.FromString(value)
    except Exception:  # protobuf's DecodeError: a malformed peer value is ignored
        return None
    if rich.code != code.value[0]:
        return None  # inconsistent with the call's status: do not trust it
    info: Any = None
    retry: Any = None
    try:
        for item in rich.details:
            if item.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and info is None:
                info = error_details_pb2.ErrorInfo()
                item.Unpack(info)
            elif item.Is(error_details_pb2.RetryInfo.DESCRIPTOR) and retry is None:
                retry = error_details_pb2.RetryInfo()
                item.Unpack(retry)
    except Exception:  # a corrupt Any inside: ignore the rich details, keep the status
        return None
    if info is None:
        return None
    data = from_string_map(dict(info.metadata), code=info.reason, message=rich.message)
    data["grpc_status"] = GRPC_NAMES.get(rich.code, code.name)
    # The rest of what the peer said about its code, under the neutral dict's names: its
    # domain, and whether it may be retried (AIP-193: RetryInfo is that signal);
    # from_neutral decides what to keep.
    if info.domain:
        data["domain"] = info.domain
    data["retryable"] = retry is not None
    if retry is not None and retry.HasField("retry_delay"):
        delay = retry.retry_delay
        # Duration fields are plain ints here: no timedelta, which overflows on big ones.
        data["retry_after"] = delay.seconds + delay.nanos / 1e9
    return from_neutral(data, grpc_status=code.name)

