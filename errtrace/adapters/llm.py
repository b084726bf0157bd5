"""LLM SDK exceptions -> :class:`~errtrace.core.errors.AppError` with an ``LLM_*`` code.

Handles exceptions of the ``openai`` and ``anthropic`` SDKs, of ``httpx`` (and the
``httpx2`` fork the newer SDKs use) when the request went to a known LLM API host, and
of other LLM client libraries (groq, mistralai, cohere, together, google-genai,
ollama, litellm, botocore for Bedrock) that carry a status code and message. None of
them is imported: exceptions are recognised by their module, class name and
attributes, so this module costs nothing when those libraries are absent.

The provider's own words are kept for operators but never shown to clients: they go
into ``details["_provider_text"]`` (``_``-prefixed keys are stripped from client
output by the encoder). The provider's error type/code (``insufficient_quota``,
``overloaded_error``) are safe to show and stay in ``details``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from errtrace.core.errors import AppError, mapper
from errtrace.core.llm_hosts import add_llm_host as add_llm_host  # re-exported
from errtrace.core.llm_hosts import provider_for_host, provider_request_id
from errtrace.core.rewrite import Classification, classify, from_response

_SDK_ROOTS = frozenset(
    {
        "openai",
        "anthropic",
        "groq",
        "mistralai",
        "cohere",
        "together",
        "ollama",
        "litellm",
    }
)
_HTTPX_ROOTS = frozenset({"httpx", "httpx2", "httpcore", "httpcore2"})

# SDK classes that say what happened even when there is no response to read.
_CLASS_CODES: dict[str, str] = {
    "APITimeoutError": "LLM_TIMEOUT",
    "APIConnectionError": "LLM_CONNECTION_ERROR",
}


def _root(exc: BaseException) -> str:
    return type(exc).__module__.split(".", 1)[0]


def _mro_names(exc: BaseException) -> set[str]:
    return {klass.__name__ for klass in type(exc).__mro__}


def _safe_getattr(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # httpx raises RuntimeError for an unset .request
        return None


def _status_of(exc: BaseException) -> int | None:
    for candidate in (
        _safe_getattr(exc, "status_code"),
        _safe_getattr(exc, "status"),
        _safe_getattr(_safe_getattr(exc, "response"), "status_code"),
        _safe_getattr(exc, "http_status"),
        _safe_getattr(exc, "code"),
    ):
        if (
            isinstance(candidate, int)
            and not isinstance(candidate, bool)
            and 100 <= candidate <= 599
        ):
            return candidate
    response = _safe_getattr(exc, "response")
    if isinstance(response, Mapping):  # botocore ClientError.response
        meta = response.get("ResponseMetadata")
        status = meta.get("HTTPStatusCode") if isinstance(meta, Mapping) else None
        if isinstance(status, int) and 100 <= status <= 599:
            return status
    return None


def _host_of(exc: BaseException) -> tuple[str, int | None] | None:
    request = _safe_getattr(exc, "request")
    if request is None:
        request = _safe_getattr(_safe_getattr(exc, "response"), "request")
    url = _safe_getattr(request, "url")
    host = _safe_getattr(url, "host")
    if not isinstance(host, str) or not host:
        return None
    port = _safe_getattr(url, "port")
    return host.lower(), port if isinstance(port, int) else None


def is_llm_host(host: str, port: int | None = None) -> bool:
    """Whether an outgoing request to ``host``/``port`` went to a known LLM API."""
    return provider_for_host(host, port) is not None


def _provider_for(exc: BaseException, host: str | None) -> str | None:
    root = _root(exc)
    if root in ("openai", "anthropic", "groq", "cohere", "together", "ollama"):
        if root == "openai" and host and host.endswith("openai.azure.com"):
            return "azure"
        return root
    if root == "mistralai":
        return "mistral"
    if root == "botocore":
        return "bedrock"
    return provider_for_host(host)


def _body_text(exc: BaseException) -> str:
    body = _safe_getattr(exc, "body")
    if isinstance(body, (Mapping, list)):
        return repr(body)
    if isinstance(body, (str, bytes)):
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return ""


def _text_of(exc: BaseException) -> str:
    """What the exception says, class name first (``RateLimitError: Error code: 429 - {...}``)."""
    try:
        message = str(exc)
    except Exception:
        message = ""
    text = f"{type(exc).__name__}: {message}"
    body = _body_text(exc)
    if body and body[:200] not in text:
        text = f"{text} {body}"
    return text


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _parse_duration(value: str) -> float | None:
    """``"6m0s"``, ``"1.5s"``, ``"20ms"`` or plain seconds ``"7"`` as seconds."""
    value = value.strip().lower()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def retry_after_from_headers(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after``, else from the
    ``x-ratelimit-reset-*`` headers (see :func:`_reset_delay`)."""
    explicit = _explicit_delay(headers)
    return explicit if explicit is not None else _reset_delay(headers)


def _header(headers: Any, name: str) -> str | None:
    if headers is None or not hasattr(headers, "get"):
        return None
    try:
        value = headers.get(name)
    except Exception:
        return None
    return value if isinstance(value, str) and value.strip() else None


def _explicit_delay(headers: Any) -> float | None:
    """The provider's own ``retry-after-ms`` or ``retry-after`` (delay-seconds)."""
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    seconds = _header(headers, "retry-after")
    if seconds is not None:
        try:
            return max(0.0, float(seconds))
        except ValueError:
            pass  # an HTTP-date; the reset headers are easier to trust
    return None


def _reset_delay(headers: Any) -> float | None:
    """When the exhausted limit resets: OpenAI-style ``x-ratelimit-reset-requests`` and
    ``-tokens``. The one whose ``x-ratelimit-remaining-*`` is 0 is the limit that was
    hit (the other may reset minutes later); without that, the later of the two."""
    resets: dict[str, float] = {}
    for kind in ("requests", "tokens"):
        raw = _header(headers, f"x-ratelimit-reset-{kind}")
        parsed = _parse_duration(raw) if raw is not None else None
        if parsed is not None:
            resets[kind] = parsed
    hit = [
        delay for kind, delay in resets.items()
        if (_header(headers, f"x-ratelimit-remaining-{kind}") or "").strip() == "0"
    ]
    if hit:
        return max(hit)
    return max(resets.values()) if resets else None


def _sdk_error_fields(exc: BaseException) -> dict[str, str]:
    """The SDK's own ``type``/``code`` attributes (openai ``APIError.type``/``.code``)."""
    out: dict[str, str] = {}
    for attr, key in (("type", "provider_error_type"), ("code", "provider_error_code")):
        value = _safe_getattr(exc, attr)
        if isinstance(value, str) and value and len(value) <= 100:
            out[key] = value
    return out


def _build(
    exc: BaseException,
    result: Classification,
    code: str | None = None,
    headers: Any = None,
    status: int | None = None,
) -> AppError:
    details: dict[str, Any] = {
        k: v
        for k, v in result.details.items()
        if k
        in (
            "provider_error_type",
            "provider_error_code",
            "retry_after",
            "requested_tokens",
            "limit_tokens",
            "model",
        )
    }
    details.update(_sdk_error_fields(exc))
    # The provider's Retry-After is the most exact; then its wording ("try again in
    # 1s", which names the limit it hit); the reset headers last.
    retry_after = _explicit_delay(headers)
    if retry_after is None and "retry_after" not in details:
        retry_after = _reset_delay(headers)
    if retry_after is not None:
        details["retry_after"] = retry_after
    if result.provider:
        details["provider"] = result.provider
    if status is not None and status >= 400:
        # Not a 200: an error event in the middle of a stream comes with the stream's
        # status, which says nothing about the error.
        details["provider_status"] = status
    request_id = provider_request_id(lambda name: _header(headers, name))
    if request_id is not None:
        details["provider_request_id"] = request_id
    details["_provider_text"] = result.text
    details["_classification"] = {"rule": result.rule, "confidence": result.confidence}
    return AppError(code or result.code, None, details=details, cause=exc)


def translate_llm_exception(exc: BaseException) -> AppError | None:
    """Turn an LLM SDK/HTTP exception into an AppError, or None if it is not one of ours."""
    if isinstance(exc, AppError):
        return None
    root = _root(exc)
    if root == "builtins":
        # A built-in exception carries no provider status, request or body: not ours,
        # and the common case for a plain bug, so answer before probing attributes.
        return None
    names = _mro_names(exc)
    hostport = _host_of(exc)
    host = hostport[0] if hostport else None
    status = _status_of(exc)
    response = _safe_getattr(exc, "response")
    headers = _safe_getattr(response, "headers")

    if root in _HTTPX_ROOTS:
        # plain httpx errors belong to the generic httpx adapter unless they went to an LLM API
        if hostport is None or not is_llm_host(*hostport):
            return None
        provider = _provider_for(exc, host)
        if "HTTPStatusError" in names and response is not None and status is not None:
            body = _safe_getattr(response, "content")
            content_type = _safe_getattr(headers, "get") and headers.get("content-type")
            result = from_response(
                status,
                body if isinstance(body, (bytes, str)) else b"",
                content_type if isinstance(content_type, str) else None,
                provider=provider,
            )
            return _build(exc, result, headers=headers, status=status)
        result = classify(_text_of(exc), provider=provider)
        if "TimeoutException" in names:
            return _build(exc, result, "LLM_TIMEOUT")
        if "TransportError" in names or "NetworkError" in names:
            return _build(exc, result, "LLM_CONNECTION_ERROR")
        return _build(exc, result)

    is_sdk = root in _SDK_ROOTS or type(exc).__module__.startswith(
        ("google.genai", "google.generativeai")
    )
    if root == "botocore":
        operation = _safe_getattr(exc, "operation_name")
        is_sdk = operation in (
            "InvokeModel",
            "InvokeModelWithResponseStream",
            "Converse",
            "ConverseStream",
        )
    if not is_sdk and (hostport is None or not is_llm_host(*hostport) or status is None):
        # an exception with a status from anywhere else (a web framework's HTTPException,
        # a generic API client) is not ours to call an LLM failure
        return None
    provider = _provider_for(exc, host)
    result = classify(_text_of(exc), status=status, provider=provider)
    for name, code in _CLASS_CODES.items():
        # the SDK knows it timed out / could not connect; no wording can say otherwise
        if name in names and status is None:
            if name == "APIConnectionError" and "APITimeoutError" in names:
                continue
            return _build(exc, result, code, headers=headers)
    return _build(exc, result, headers=headers, status=status)


def install() -> None:
    """Register :func:`translate_llm_exception` with the process-wide mapper (idempotent)."""
    mapper.add_translator(translate_llm_exception)
