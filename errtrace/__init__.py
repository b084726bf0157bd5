"""errtrace: one error context, end to end, for services in front of and inside AI/LLM work.

``errtrace.instrument(app)`` gives a FastAPI, Starlette or Flask app the four-layer
context (trace id, span id, business code, error code) and structured, leveled error
responses; ``errtrace.grpc_server_interceptors()`` does the same for a gRPC server.

Importing errtrace imports no web framework, grpc or protobuf: the entry points import
their adapter when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from errtrace import testing
from errtrace._instrument import instrument
from errtrace.adapters import install_default_translators
from errtrace.core.codes import CodeDefinitionError, CodeRegistry, ErrorCode, registry
from errtrace.core.config import Config, ConfigError
from errtrace.core.context import ErrorContext, current
from errtrace.core.errors import (
    AppError,
    BusinessError,
    SystemFailure,
    TransientError,
    register_exception,
)
from errtrace.core.events import ErrorEvent
from errtrace.core.levels import Level
from errtrace.core.logging import ContextFilter
from errtrace.core.policy import policy
from errtrace.core.propagation import dict_setter
from errtrace.core.runtime import inject_current, runtime_for
from errtrace.core.stats import stats as _stats

if TYPE_CHECKING:
    from pathlib import Path

    from errtrace.core.rewrite import Classification

__version__ = "0.1.0"

__all__ = [
    "AppError",
    "BusinessError",
    "Classification",
    "CodeDefinitionError",
    "CodeRegistry",
    "Config",
    "ConfigError",
    "ContextFilter",
    "ErrorCode",
    "ErrorContext",
    "ErrorEvent",
    "Level",
    "SystemFailure",
    "TransientError",
    "__version__",
    "classify",
    "current",
    "grpc_aio_client_interceptors",
    "grpc_aio_server_interceptors",
    "grpc_client_interceptors",
    "grpc_server_interceptors",
    "instrument",
    "load_rules",
    "on_alert",
    "on_error",
    "outgoing_headers",
    "policy",
    "register_exception",
    "registry",
    "report",
    "set_fallback",
    "stats",
    "testing",
]


def outgoing_headers(url: object = None) -> dict[str, str]:
    """Headers for an outgoing call made now, with any HTTP client.

    Same trace id, flags and tracestate as the current request, a fresh child span id
    on every call (this hop's span as its parent), ``baggage`` and the business-code
    header (``tracestate``, ``baggage`` and the business code only when the request
    had them). Names are lower case (``traceparent``, ``x-biz-code``). Outside a
    request, the call continues the trace of the active OpenTelemetry span, or starts a
    new one.

    Give the call's ``url`` (a string or a URL object, or just its host) so that a
    call to a third party's API (an LLM provider, ``Config.third_party_hosts``) gets
    only what ``Config.third_party_propagation`` allows: by default the
    ``traceparent`` alone. Without it the headers are those for a service of your own.
    """
    headers: dict[str, str] = {}
    inject_current(headers, dict_setter, host=None if url is None else _host_of(url))
    return headers


def _host_of(url: object) -> str:
    """The host of a URL (a string, or a URL object such as ``httpx.URL``) or of a bare
    ``host[:port]``; "" when there is none."""
    if not isinstance(url, str):
        if not hasattr(url, "host"):
            raise TypeError(
                f"outgoing_headers: url must be a string or a URL, not {type(url).__name__}"
            )
        url = str(url)
    text = url.strip()
    try:
        return urlsplit(text if "//" in text else "//" + text).hostname or ""
    except ValueError:  # an unbalanced IPv6 bracket: the host is what follows "//"
        rest = text.split("//", 1)[-1]
        return rest.split("/", 1)[0].split("@")[-1].lstrip("[").split(":", 1)[0]


def report(code: str, message: str | None = None, /, **details: Any) -> ErrorEvent:
    """Record a condition that does not fail the request (levels 4-6: slow, cache miss).

    Never raises: an unregistered code is recorded as given (as ``UNREGISTERED_CODE``
    when it is not even a valid code id), logged and counted. ``code`` and
    ``message`` are positional-only, so a detail may have any name (``code="sku-42"``).
    """
    return runtime_for(current()).report(code, message, **details)


def classify(
    text: object, *, status: int | None = None, provider: str | None = None
) -> Classification:
    """Classify a free-text LLM/provider error into an ``LLM_*`` code with a hint."""
    from errtrace.core.rewrite import classify as _classify

    return _classify(text, status=status, provider=provider)


def load_rules(path: str | Path, *, watch: bool = True) -> int:
    """Load classifier rules from a YAML file into the process-wide rule table; returns
    how many. A bad file raises ``RuleFileError`` naming the file, the rule and the
    field. With ``watch`` an edited file is picked up (checked at most once a second);
    an edit that does not load keeps the last good rules, logs a warning and counts
    ``rules_reload_failures``. The ``rules_file`` option does the same at start-up."""
    from errtrace.core.rewrite import load_rules as _load_rules

    return _load_rules(path, watch=watch)


def on_error(fn: Any) -> Any:
    """Register ``fn(event, context)`` called for every recorded error (a decorator too)."""
    return policy.on_error(fn)


def on_alert(fn: Any) -> Any:
    """Register ``fn(event, context)`` for errors whose level or code alerts."""
    return policy.on_alert(fn)


def set_fallback(code: str, fn: Any) -> None:
    """Answer requests failing with ``code`` with ``fn(error, context)``'s result."""
    policy.set_fallback(code, fn)


def stats() -> dict[str, int]:
    """errtrace's counters: dropped headers, rejected biz codes, hook failures, errors."""
    return _stats.snapshot()


def _grpc() -> Any:
    try:
        from errtrace import grpc_interceptors
    except ImportError as exc:
        raise ImportError(
            f'gRPC support needs the grpc extra: pip install "errtrace[grpc]" ({exc})'
        ) from exc
    return grpc_interceptors


def grpc_server_interceptors(**options: Any) -> list[Any]:
    """Interceptors for ``grpc.server(..., interceptors=...)``."""
    return _grpc().server_interceptors(**options)  # type: ignore[no-any-return]


def grpc_aio_server_interceptors(**options: Any) -> list[Any]:
    """Interceptors for ``grpc.aio.server(interceptors=...)``."""
    return _grpc().aio_server_interceptors(**options)  # type: ignore[no-any-return]


def grpc_client_interceptors(**options: Any) -> list[Any]:
    """Interceptors for ``grpc.intercept_channel(channel, *interceptors)``."""
    return _grpc().client_interceptors(**options)  # type: ignore[no-any-return]


def grpc_aio_client_interceptors(**options: Any) -> list[Any]:
    """Interceptors for ``grpc.aio.insecure_channel(..., interceptors=...)``."""
    return _grpc().aio_client_interceptors(**options)  # type: ignore[no-any-return]


install_default_translators()


def __getattr__(name: str) -> Any:
    if name == "Classification":
        from errtrace.core.rewrite import Classification

        return Classification
    raise AttributeError(f"module 'errtrace' has no attribute {name!r}")
