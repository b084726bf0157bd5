"""The error model: :class:`AppError`, its kinds, and exception -> code translation.

::

    Exception
     └── AppError                 a failure with a semantic code (any kind)
          ├── BusinessError       the request cannot be served as sent (levels 3+)
          ├── SystemFailure       this service or a core dependency is broken (levels 0-2)
          └── TransientError      may succeed if retried later (retryable codes)

``AppError("LLM_RATE_LIMITED")`` returns an instance of the kind its code has, so
``except errtrace.TransientError`` works whichever class was named at the raise site.

Foreign exceptions are translated at the boundary by :func:`to_app_error`: first the
user's and built-in type mappings (walking the MRO, so the most specific entry wins),
then registered translators (the LLM SDK adapter is one), then ``INTERNAL``.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import math
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from errtrace.core.codes import (
    CODE_ID_RE,
    DEFAULT_DOMAIN,
    CodeRegistry,
    ErrorCode,
    registry,
    short_repr,
)
from errtrace.core.levels import Level
from errtrace.core.status import grpc_to_http, http_to_grpc, is_grpc_status, parse_retry_after

log = logging.getLogger("errtrace")

MAX_RETRY_AFTER = 86400.0
"""Longest retry delay errtrace passes on (a day); a larger or remote value is capped."""

Translator = Callable[[BaseException], "AppError | None"]


@dataclass(frozen=True)
class RemoteError:
    """What a downstream hop said about a failure it answered with."""

    code: str
    event_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    service: str | None = None
    level: int | None = None
    http_status: int | None = None
    grpc_status: str | None = None
    upstream: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    message: str | None = field(default=None, compare=False)
    """The remote's own text: for this service's code and logs, never sent on to its
    clients (it may carry the remote's exception) unless debug is on."""
    retryable: bool | None = None
    """Whether the remote said its failure may be retried (problem+json ``retryable``,
    gRPC ``RetryInfo``); None when it did not say."""
    domain: str | None = None
    """The ``google.rpc.ErrorInfo`` domain the remote gave its code, if any."""

    def link(self) -> dict[str, Any]:
        """The compact form kept in this hop's ``caused_by`` chain."""
        out: dict[str, Any] = {"code": self.code}
        for name in ("event_id", "span_id", "service"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


def resolve_code(
    code_id: str,
    *,
    level: Level | int | None = None,
    http_status: int | None = None,
    grpc_status: str | None = None,
    codes: CodeRegistry | None = None,
    remote: bool = True,
    retryable: bool | None = None,
    domain: str | None = None,
) -> ErrorCode:
    """The registered code of that id, or an ad-hoc one for ids this process does not know.

    A local (``remote=False``) id that is not registered is logged once as a likely typo;
    one that is not even a valid id becomes ``INTERNAL`` (a malformed id from a remote
    service becomes ``UPSTREAM_ERROR``).

    A code decoded from another service may be one only that service registered; its
    own level and status then stand in for a definition here. A level that would not
    fail a request is not believed for an answer that did fail (an error status came
    with it): the code is then treated as SEVERE, so that a real failure is neither
    logged as information nor left out of the error counts. The remote's ``retryable``
    and ``domain`` stand in for those fields too (on a failing level), so that a hop
    passing the error on still tells its own callers to retry, under the same
    ``(reason, domain)`` pair; an invalid domain is ignored.
    """
    known = (codes or registry).find(code_id)
    if known is not None:
        return known
    if not remote:
        _warn_unregistered(code_id)
        if not CODE_ID_RE.match(code_id):
            return registry.get("INTERNAL")
    try:
        lvl = Level.parse(level) if level is not None else Level.SEVERE
    except ValueError:
        lvl = Level.SEVERE
    if grpc_status == "OK" or not is_grpc_status(grpc_status):
        grpc_status = None  # a name the other side made up (or OK) is no error status here
    failed = (http_status is not None and http_status >= 400) or grpc_status is not None
    if failed and not lvl.fails_request:
        lvl = Level.SEVERE
    if not lvl.fails_request:
        return ErrorCode(id=_safe_id(code_id), level=lvl)
    if http_status is None or not 400 <= http_status <= 599:
        http_status = grpc_to_http(grpc_status) if grpc_status else 500
    if grpc_status is None:
        grpc_status = http_to_grpc(http_status)
    return ErrorCode(
        id=_safe_id(code_id), level=lvl, http_status=http_status, grpc_status=grpc_status,
        retryable=retryable is True,
        hint="This code is not registered in this service; see the service that raised it.",
        domain=domain if domain and is_domain(domain) else DEFAULT_DOMAIN,
    )


def resolve_remote(
    code_id: str, remote: RemoteError, codes: CodeRegistry | None = None
) -> ErrorCode:
    """:func:`resolve_code` for the code another service answered with."""
    return resolve_code(
        code_id, level=remote.level, http_status=remote.http_status,
        grpc_status=remote.grpc_status, codes=codes, retryable=remote.retryable,
        domain=remote.domain,
    )


MAX_DOMAIN_CHARS = 128


def is_domain(value: str) -> bool:
    """True for a usable ``ErrorInfo`` domain: 1 to 128 printable ASCII characters, no
    space (a service name such as ``inventory.example.com``)."""
    return 0 < len(value) <= MAX_DOMAIN_CHARS and value.isascii() and value.isprintable() \
        and " " not in value


def _safe_id(code_id: str) -> str:
    return code_id if CODE_ID_RE.match(code_id) else "UPSTREAM_ERROR"


_warned: set[str] = set()


def _warn_unregistered(code_id: str) -> None:
    if code_id in _warned or len(_warned) >= 1000:
        return
    _warned.add(code_id)
    log.warning(
        "errtrace: code %r is not registered (a typo?); define it with errtrace.define() "
        "or a codes file", code_id[:100],
    )


class AppError(Exception):
    """Raised by application code (or produced by translation) for a failure with a code.

    ``message`` is the text clients see as the problem's ``detail``. One that is not
    text never fails the error (it is raised on a failure path, where a TypeError would
    replace its own status with a 500): an exception given as the message, as in
    ``except ValueError as exc: raise AppError("BAD_REQUEST", exc)``, becomes the
    error's cause (its text is the exception's, which clients see only when debug is
    on) and is logged once; any other value is written with ``str()``. Type checkers
    still flag both at the raise site.

    ``status`` (an HTTP status, 400-599) and ``grpc_status`` (a gRPC status name other
    than ``OK``) answer with that status instead of the code's own; the code, its level
    and its other properties stay. An HTTP status outside that range is ignored; so is
    any other ``grpc_status`` value, which is logged (once per value), for the same
    reason.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> AppError:
        if cls is AppError:
            code = args[0] if args else kwargs.get("code", "INTERNAL")
            cls = _kind_class(code, kwargs.get("codes"), kwargs.get("remote"))
        return super().__new__(cls)

    error_code: ErrorCode
    message: str | None
    details: dict[str, Any]
    remote: RemoteError | None
    event_id: str | None
    status_override: int | None
    grpc_status_override: str | None
    headers: dict[str, str | list[str]]
    """Extra headers of this error's HTTP response; a list value sends the header once
    per item (several ``Set-Cookie`` headers, which cannot be joined into one). A number
    is sent as its ``str()``; a name or value that no response can carry (not text, or
    not latin-1) is left out of the response and logged, rather than failing it."""

    def __init__(
        self,
        code: str | ErrorCode = "INTERNAL",
        message: str | None = None,
        *,
        details: Mapping[str, Any] | None = None,
        cause: BaseException | None = None,
        remote: RemoteError | None = None,
        codes: CodeRegistry | None = None,
        status: int | None = None,
        grpc_status: str | None = None,
        headers: Mapping[str, str | list[str]] | None = None,
    ) -> None:
        if grpc_status is not None and (grpc_status == "OK" or not is_grpc_status(grpc_status)):
            _warn_status(grpc_status)
            grpc_status = None
        if isinstance(code, ErrorCode):
            self.error_code = code
        elif isinstance(code, str):
            self.error_code = (
                resolve_remote(code, remote, codes) if remote is not None
                else resolve_code(code, codes=codes, remote=False)
            )
        else:
            raise TypeError(f"code must be a code id or ErrorCode, got {type(code).__name__}")
        if message is not None and not isinstance(message, str):
            message, cause = _message_text(message, cause, self.error_code.id)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.remote = remote
        self.event_id: str | None = None
        self.status_override = status if status is not None and 400 <= status <= 599 else None
        self.grpc_status_override = grpc_status
        self.headers: dict[str, str | list[str]] = dict(headers or {})
        if cause is not None:
            self.__cause__ = cause
        super().__init__(message or self.error_code.title)

    # help() and IDEs read this, not the generic signature of __new__.
    __signature__ = inspect.signature(__init__).replace(
        parameters=list(inspect.signature(__init__).parameters.values())[1:],
        return_annotation=inspect.Signature.empty,
    )

    @classmethod
    def _translated(cls, code: ErrorCode, cause: BaseException) -> AppError:
        """``AppError(code, cause=cause)`` for a registered code, without the keyword
        handling (every unhandled exception in a request comes through here)."""
        self: AppError = Exception.__new__(_KINDS[code.kind])
        self.error_code = code
        self.message = None
        self.details = {}
        self.remote = None
        self.event_id = None
        self.status_override = None
        self.grpc_status_override = None
        self.headers = {}
        self.__cause__ = cause
        Exception.__init__(self, code.title)
        return self

    # The code's properties, for convenience at the catch site.
    @property
    def code(self) -> str:
        """The code id, e.g. ``LLM_RATE_LIMITED``."""
        return self.error_code.id

    @property
    def level(self) -> Level:
        """The code's level."""
        return self.error_code.level

    @property
    def http_status(self) -> int:
        """The HTTP status this error answers with."""
        return self.status_override or self.error_code.http_status or 500

    @property
    def grpc_status(self) -> str:
        """The gRPC status name this error answers with."""
        return self.grpc_status_override or self.error_code.grpc_status or "UNKNOWN"

    @property
    def retryable(self) -> bool:
        """Whether a client may retry the same request later."""
        return self.error_code.retryable

    @property
    def hint(self) -> str:
        """What an operator or client should do about it."""
        return self.error_code.hint

    @property
    def kind(self) -> str:
        """``business``, ``system`` or ``transient``."""
        return self.error_code.kind

    @property
    def unhandled(self) -> bool:
        """True for an exception nothing mapped: a foreign one translated to ``INTERNAL``
        (the case an app's own 500 page answers, in the framework adapters)."""
        cause = self.__cause__
        return self.code == "INTERNAL" and cause is not None and not isinstance(cause, AppError)

    @property
    def cause(self) -> BaseException | None:
        """The exception this error was translated from, if any."""
        return self.__cause__

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before retrying, when known (``details["retry_after"]``)."""
        value = self.details.get("retry_after")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                seconds = float(value)
            except OverflowError:  # a finite int beyond any float: capped like any huge one
                return MAX_RETRY_AFTER if value > 0 else None
            # A huge finite delay is capped; inf or NaN means nothing and is ignored.
            if math.isfinite(seconds) and seconds >= 0:
                return min(seconds, MAX_RETRY_AFTER)
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Everything a catch site reads survives pickling and copying (multiprocessing,
        # task queues); the cause does not, as with any pickled exception.
        return (_rebuild, (
            self.error_code, self.message, self.details, self.remote, self.event_id,
            self.status_override, self.headers, self.grpc_status_override,
        ))


_warned_messages: set[str] = set()


def _warn_status(value: object) -> None:
    key = f"grpc_status:{short_repr(value)}"
    if key not in _warned_messages and len(_warned_messages) < 1000:
        _warned_messages.add(key)
        log.warning(
            "errtrace: AppError(grpc_status=%s) is not a gRPC status name other than OK; "
            "the code's own status is used", short_repr(value),
        )


def _message_text(
    message: object, cause: BaseException | None, code_id: str
) -> tuple[str | None, BaseException | None]:
    """The (message, cause) of an AppError given a message that is not text."""
    if isinstance(message, BaseException):
        key = f"{code_id}:{type(message).__qualname__}"
        if key not in _warned_messages and len(_warned_messages) < 1000:
            _warned_messages.add(key)
            log.warning(
                "errtrace: AppError(%r, <%s>): an exception given as the message is kept "
                "as the cause, not shown to clients; pass a text message and cause=exc",
                code_id[:100], type(message).__name__,
            )
        return None, cause if cause is not None else message
    try:
        return str(message), cause
    except Exception:  # a __str__ that fails: the code's own text is shown
        return None, cause


def _rebuild(
    code: ErrorCode,
    message: str | None,
    details: dict[str, Any],
    remote: RemoteError | None = None,
    event_id: str | None = None,
    status: int | None = None,
    headers: dict[str, str | list[str]] | None = None,
    grpc_status: str | None = None,
) -> AppError:
    err = AppError(
        code, message, details=details, remote=remote, status=status, headers=headers,
        grpc_status=grpc_status,
    )
    err.event_id = event_id
    return err


class BusinessError(AppError):
    """Raised when the request cannot be served as sent (a level 3+ code, not retryable)."""


class SystemFailure(AppError):
    """Raised when this service or a core dependency is broken (a level 0-2 code)."""


class TransientError(AppError):
    """Raised for a failure that may succeed if retried later (a retryable code)."""


_KINDS: dict[str, type[AppError]] = {
    "business": BusinessError,
    "system": SystemFailure,
    "transient": TransientError,
}


def _kind_class(
    code: object, codes: CodeRegistry | None, remote: RemoteError | None = None
) -> type[AppError]:
    if isinstance(code, ErrorCode):
        return _KINDS[code.kind]
    if isinstance(code, str):
        found = (codes or registry).find(code)
        if found is not None:
            return _KINDS[found.kind]
        if isinstance(remote, RemoteError):  # another service's code: its level decides
            return _KINDS[resolve_remote(code, remote, codes).kind]
    return SystemFailure


_HTTP_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    422: "VALIDATION_FAILED",
    429: "RATE_LIMITED",
    499: "CANCELLED",
    501: "NOT_IMPLEMENTED",
    502: "UPSTREAM_ERROR",
    503: "UPSTREAM_UNAVAILABLE",
    504: "TIMEOUT",
}


# A gRPC status an application raised itself: the generic code of its class (UNKNOWN,
# INTERNAL and DATA_LOSS are INTERNAL).
_GRPC_CODES: dict[str, str] = {
    "INVALID_ARGUMENT": "BAD_REQUEST",
    "FAILED_PRECONDITION": "BAD_REQUEST",
    "OUT_OF_RANGE": "BAD_REQUEST",
    "NOT_FOUND": "NOT_FOUND",
    "ALREADY_EXISTS": "CONFLICT",
    "ABORTED": "CONFLICT",
    "PERMISSION_DENIED": "PERMISSION_DENIED",
    "UNAUTHENTICATED": "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED": "RATE_LIMITED",
    "DEADLINE_EXCEEDED": "TIMEOUT",
    "UNAVAILABLE": "UPSTREAM_UNAVAILABLE",
    "UNIMPLEMENTED": "NOT_IMPLEMENTED",
    "CANCELLED": "CANCELLED",
}


def error_for_grpc_status(status: str, message: str | None = None) -> AppError:
    """The error for a gRPC status an application raised (a non-OK status name).

    The status is kept as given (FAILED_PRECONDITION stays FAILED_PRECONDITION) while
    the code names its class, as :func:`error_for_http_status` does for HTTP. An error
    that becomes ``INTERNAL`` drops ``message``: INTERNAL's text reaches a client only
    in debug, from the cause.
    """
    code = _GRPC_CODES.get(status, "INTERNAL")
    return AppError(code, message if code != "INTERNAL" else None, grpc_status=status)


def error_for_http_status(
    status: int,
    message: str | None = None,
    headers: Mapping[str, str | list[str]] | None = None,
) -> AppError:
    """The error for a framework's own HTTP exception (e.g. a 404 from the router).

    The status is kept as given (a 405 stays 405) while the code names its class. A
    header sent several times (two ``WWW-Authenticate`` challenges) has a list of values.
    """
    code = _HTTP_CODES.get(status) or ("BAD_REQUEST" if status < 500 else "INTERNAL")
    own = dict(headers or {})
    details: dict[str, Any] = {}
    names = [n for n in own if isinstance(n, str) and n.lower() == "retry-after"]
    for name in names[1:]:  # exactly one Retry-After is written: the first one set
        del own[name]
    if names:
        # The app's own Retry-After stays its header, as it was set, whatever the
        # code's retryable flag: RFC 9110 (10.2.3) gives it a meaning on 413, 429, 503
        # and 3xx alike. The error then writes no Retry-After of its own; the delay
        # also becomes its retry_after, so the body shows it.
        value = own[names[0]]
        if isinstance(value, list):
            own[names[0]] = value = value[0]
        seconds = parse_retry_after(value)
        if seconds is not None:
            details["retry_after"] = seconds
    return AppError(code, message, status=status, headers=own, details=details)


_MAX_RESOLVED = 4096


class ExceptionMapper:
    """Exception types -> code ids, looked up along the MRO; plus fallback translators."""

    def __init__(self) -> None:
        self._types: dict[type[BaseException], str] = {}
        # Replaced, never changed in place: ``translate`` iterates it without copying.
        self._translators: tuple[Translator, ...] = ()
        # The lookup's result per exception class (None: no mapping), cleared on register.
        self._resolved: dict[type[BaseException], str | None] = {}
        self._lock = threading.Lock()

    def register(self, exc_type: type[BaseException], code: str) -> None:
        """Map ``exc_type`` (and its subclasses, unless more specific) to ``code``."""
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            raise TypeError(f"{exc_type!r} is not an exception type")
        registry.get(code)  # fail loudly now on an unknown code, not at the first error
        with self._lock:
            self._types[exc_type] = code
            self._resolved.clear()

    def add_translator(self, translator: Translator, *, first: bool = False) -> None:
        """Add a callable that turns a foreign exception into an AppError, or returns None."""
        with self._lock:
            if translator in self._translators:
                return
            if first:
                self._translators = (translator, *self._translators)
            else:
                self._translators = (*self._translators, translator)

    def lookup(self, exc: BaseException) -> str | None:
        """The code of the most specific registered type in ``exc``'s MRO, or None."""
        klass = type(exc)
        try:
            return self._resolved[klass]
        except KeyError:
            pass
        code = None
        for base in klass.__mro__:
            code = self._types.get(base)
            if code is not None:
                break
        with self._lock:
            if len(self._resolved) >= _MAX_RESOLVED:  # classes made at run time: bounded
                self._resolved.clear()
            self._resolved[klass] = code
        return code

    def translate(self, exc: BaseException) -> AppError:
        """Turn any exception into an :class:`AppError`; never raises.

        An exception group holding one exception (an anyio or asyncio task group with
        one failed task) is translated as that exception.
        """
        if isinstance(exc, AppError):
            return exc
        if _GROUP is not None and isinstance(exc, _GROUP):
            only = _only_member(exc)
            if only is not None:
                return self.translate(only)
        code = self.lookup(exc)
        if code is None:
            for translator in self._translators:
                try:
                    translated = translator(exc)
                except Exception:  # a translator bug must not turn into a second failure
                    log.exception("errtrace: exception translator %r failed", translator)
                    continue
                if translated is not None:
                    if translated.__cause__ is None:
                        translated.__cause__ = exc
                    return translated
            code = "INTERNAL"
        found = registry.find(code)
        if found is None:  # a mapping to a code removed from the registry since
            return AppError(code, None, cause=exc)
        return AppError._translated(found, exc)


_GROUP: type[BaseException] | None = getattr(builtins, "BaseExceptionGroup", None)


def _only_member(group: BaseException) -> Exception | None:
    """The one exception inside (nested) single-member groups, else None."""
    for _ in range(32):  # nesting is bounded: a group is built by code, not input
        members: tuple[BaseException, ...] = getattr(group, "exceptions", ())
        if len(members) != 1:
            return None
        group = members[0]
        if _GROUP is None or not isinstance(group, _GROUP):
            return group if isinstance(group, Exception) else None
    return None


mapper = ExceptionMapper()
"""The process-wide exception mapper used by every middleware and interceptor."""
mapper.register(TimeoutError, "TIMEOUT")
if sys.version_info < (3, 11):  # since 3.11 asyncio.TimeoutError is TimeoutError itself
    import asyncio

    mapper.register(asyncio.TimeoutError, "TIMEOUT")
mapper.register(ConnectionError, "UPSTREAM_UNAVAILABLE")
mapper.register(NotImplementedError, "NOT_IMPLEMENTED")


def register_exception(exc_type: type[BaseException], code: str) -> None:
    """Map an exception type to a code for every middleware and interceptor."""
    mapper.register(exc_type, code)


def to_app_error(exc: BaseException) -> AppError:
    """Translate any exception into an :class:`AppError` (see the module docstring)."""
    return mapper.translate(exc)
