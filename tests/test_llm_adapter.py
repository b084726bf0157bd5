"""LLM SDK and httpx exceptions -> AppError through errtrace.adapters.llm."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from errtrace.adapters import llm
from errtrace.adapters.llm import install, retry_after_from_headers, translate_llm_exception
from errtrace.core.errors import AppError, mapper, to_app_error

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"


def _openai_status(
    cls: type[openai.APIStatusError],
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> openai.APIStatusError:
    response = httpx.Response(status, request=httpx.Request("POST", OPENAI_URL), headers=headers)
    return cls(f"Error code: {status} - {{'error': {body!r}}}", response=response, body=body)  # type: ignore[arg-type]


def _anthropic_status(
    cls: type[anthropic.APIStatusError],
    status: int,
    error: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> anthropic.APIStatusError:
    response = httpx.Response(status, request=httpx.Request("POST", ANTHROPIC_URL), headers=headers)
    body = {"type": "error", "error": error}
    return cls(f"Error code: {status} - {body!r}", response=response, body=body)  # type: ignore[arg-type]


def _translate(exc: BaseException) -> AppError:
    result = translate_llm_exception(exc)
    assert result is not None
    return result


# ---------------------------------------------------------------- openai


def test_openai_quota_sent_as_429_is_quota_not_rate_limit() -> None:
    exc = _openai_status(
        openai.RateLimitError,
        429,
        {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        },
    )
    err = _translate(exc)
    assert err.code == "LLM_QUOTA_EXCEEDED"
    assert err.retryable is False
    assert err.details["provider_error_type"] == "insufficient_quota"
    assert err.details["provider_error_code"] == "insufficient_quota"
    assert err.details["provider"] == "openai"
    assert err.details["provider_status"] == 429
    assert err.cause is exc


def test_openai_rate_limit_takes_retry_after_from_headers() -> None:
    exc = _openai_status(
        openai.RateLimitError,
        429,
        {
            "message": "Rate limit reached for gpt-4o in organization org-x on requests per min "
            "(RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
        headers={"retry-after-ms": "1500", "retry-after": "2"},
    )
    err = _translate(exc)
    assert err.code == "LLM_RATE_LIMITED"
    assert err.retry_after == 1.5  # retry-after-ms beats retry-after and the wording
    assert err.details["model"] == "gpt-4o"


def test_openai_delay_is_the_limit_it_hit_not_the_later_reset() -> None:
    # No Retry-After; the requests-per-minute limit was hit and clears in 1 s, while the
    # token limit resets in 6 minutes.
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    message = (
        "Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 1s."
    )
    body = {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    err = _translate(_openai_status(openai.RateLimitError, 429, body, headers=headers))
    assert err.retry_after == 1.0
    # the wording decides when no header names the limit that was hit
    unflagged = {k: v for k, v in headers.items() if "remaining" not in k}
    err = _translate(_openai_status(openai.RateLimitError, 429, body, headers=unflagged))
    assert err.retry_after == 1.0
    # and the exhausted limit's reset when the wording names no delay
    body["message"] = "Rate limit reached for gpt-4o on requests per min (RPM)."
    err = _translate(_openai_status(openai.RateLimitError, 429, body, headers=headers))
    assert err.retry_after == 1.0


@pytest.mark.parametrize(
    "code",
    [
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "credit_balance_exhausted",
        "organization_usage_limit_exceeded",
    ],
)
def test_openai_billing_codes_are_quota_whatever_the_type(code: str) -> None:
    body = {"message": "Request denied.", "type": "requests", "param": None, "code": code}
    err = _translate(_openai_status(openai.RateLimitError, 429, body))
    assert (err.code, err.retryable) == ("LLM_QUOTA_EXCEEDED", False)


def test_anthropic_enforced_spend_limit_is_quota_not_rate_limit() -> None:
    error = {
        "type": "rate_limit_error",
        "message": "Your workspace has reached its spend limit.",
        "details": {"error_code": "enforced_spend_limit_reached"},
    }
    err = _translate(
        _anthropic_status(anthropic.RateLimitError, 429, error, headers={"retry-after": "1"})
    )
    assert (err.code, err.retryable, int(err.level)) == ("LLM_QUOTA_EXCEEDED", False, 1)


def test_openai_context_length_keeps_token_numbers() -> None:
    exc = _openai_status(
        openai.BadRequestError,
        400,
        {
            "message": "This model's maximum context length is 8192 tokens. However, you requested "
            "9001 tokens (8001 in the messages, 1000 in the completion).",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        },
    )
    err = _translate(exc)
    assert err.code == "LLM_CONTEXT_LENGTH_EXCEEDED"
    assert (err.details["requested_tokens"], err.details["limit_tokens"]) == (9001, 8192)
    assert err.http_status == 400


@pytest.mark.parametrize(
    ("cls", "status", "body", "code"),
    [
        (
            openai.AuthenticationError,
            401,
            {
                "message": "Incorrect API key provided: sk-abc.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            },
            "LLM_AUTH_FAILED",
        ),
        (
            openai.PermissionDeniedError,
            403,
            {
                "message": "Country, region, or territory not supported",
                "type": "request_forbidden",
                "code": "unsupported_country_region_territory",
            },
            "LLM_PERMISSION_DENIED",
        ),
        (
            openai.NotFoundError,
            404,
            {
                "message": "The model `gpt-9` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "code": "model_not_found",
            },
            "LLM_MODEL_NOT_FOUND",
        ),
        (
            openai.InternalServerError,
            500,
            {
                "message": "The server had an error while processing "
                "your request. Sorry about that!",
                "type": "server_error",
                "code": None,
            },
            "LLM_SERVER_ERROR",
        ),
        (
            openai.InternalServerError,
            503,
            {
                "message": "That model is currently overloaded with other requests.",
                "type": "server_error",
                "code": None,
            },
            "LLM_OVERLOADED",
        ),
        (
            openai.BadRequestError,
            400,
            {"message": "something about the request we cannot read", "type": None, "code": None},
            "LLM_INVALID_REQUEST",
        ),
    ],
)
def test_openai_status_errors(
    cls: type[openai.APIStatusError], status: int, body: dict[str, Any], code: str
) -> None:
    assert _translate(_openai_status(cls, status, body)).code == code


def test_openai_timeout_and_connection_errors() -> None:
    request = httpx.Request("POST", OPENAI_URL)
    assert _translate(openai.APITimeoutError(request=request)).code == "LLM_TIMEOUT"  # type: ignore[arg-type]
    conn = _translate(openai.APIConnectionError(request=request))  # type: ignore[arg-type]
    assert conn.code == "LLM_CONNECTION_ERROR"
    assert conn.retryable is True


def test_azure_endpoint_is_reported_as_azure() -> None:
    response = httpx.Response(
        400, request=httpx.Request("POST", "https://acme.openai.azure.com/openai/deployments/x")
    )
    body = {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
        "content management policy.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
    }
    exc = openai.BadRequestError("Error code: 400", response=response, body=body)  # type: ignore[arg-type]
    err = _translate(exc)
    assert (err.code, err.details["provider"]) == ("LLM_CONTENT_FILTERED", "azure")


def test_raw_provider_text_is_private() -> None:
    secret = "org-SECRET123 in project proj_hidden"
    exc = _openai_status(
        openai.RateLimitError,
        429,
        {
            "message": f"Rate limit reached for gpt-4o in organization {secret}.",
            "type": "requests",
            "code": "rate_limit_exceeded",
        },
    )
    err = _translate(exc)
    assert err.message is None
    assert secret not in str(err)
    public = {k: v for k, v in err.details.items() if not k.startswith("_")}
    assert secret not in repr(public)
    assert secret in err.details["_provider_text"]
    assert err.details["_classification"]["rule"] == "openai:rate-limit"


# ---------------------------------------------------------------- anthropic


def test_anthropic_overloaded_529() -> None:
    exc = _anthropic_status(
        anthropic.InternalServerError, 529, {"type": "overloaded_error", "message": "Overloaded"}
    )
    err = _translate(exc)
    assert err.code == "LLM_OVERLOADED"
    assert err.details["provider_error_type"] == "overloaded_error"
    assert err.details["provider"] == "anthropic"


def test_anthropic_rate_limit_with_retry_after_header() -> None:
    exc = _anthropic_status(
        anthropic.RateLimitError,
        429,
        {
            "type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization of 30,000 "
            "input tokens per minute.",
        },
        headers={"retry-after": "17"},
    )
    err = _translate(exc)
    assert (err.code, err.retry_after) == ("LLM_RATE_LIMITED", 17.0)


def test_anthropic_credit_balance_sent_as_400_is_quota() -> None:
    exc = _anthropic_status(
        anthropic.BadRequestError,
        400,
        {
            "type": "invalid_request_error",
            "message": "Your credit balance is too low to access the Anthropic API.",
        },
    )
    assert _translate(exc).code == "LLM_QUOTA_EXCEEDED"


def test_anthropic_authentication_and_timeout() -> None:
    exc = _anthropic_status(
        anthropic.AuthenticationError,
        401,
        {"type": "authentication_error", "message": "invalid x-api-key"},
    )
    assert _translate(exc).code == "LLM_AUTH_FAILED"
    request = httpx.Request("POST", ANTHROPIC_URL)
    assert _translate(anthropic.APITimeoutError(request=request)).code == "LLM_TIMEOUT"  # type: ignore[arg-type]


# ---------------------------------------------------------------- httpx


def test_httpx_errors_to_llm_hosts_are_translated() -> None:
    request = httpx.Request("POST", OPENAI_URL)
    assert _translate(httpx.ReadTimeout("timed out", request=request)).code == "LLM_TIMEOUT"
    assert _translate(httpx.ConnectError("refused", request=request)).code == "LLM_CONNECTION_ERROR"
    request2 = httpx2.Request("POST", ANTHROPIC_URL)
    assert _translate(httpx2.ConnectTimeout("slow", request=request2)).code == "LLM_TIMEOUT"


def test_httpx_status_error_classifies_the_body() -> None:
    request = httpx.Request("POST", "https://generativelanguage.googleapis.com/v1beta/models/x")
    response = httpx.Response(
        503,
        request=request,
        headers={"content-type": "application/json"},
        content=b'{"error": {"code": 503, "message": "The model is overloaded. Please try again '
        b'later.", "status": "UNAVAILABLE"}}',
    )
    err = _translate(httpx.HTTPStatusError("503", request=request, response=response))
    assert err.code == "LLM_OVERLOADED"
    assert err.details["provider"] == "gemini"
    assert err.details["provider_error_code"] == "UNAVAILABLE"


def test_httpx_errors_elsewhere_are_left_to_the_httpx_adapter() -> None:
    request = httpx.Request("GET", "https://example.com/api")
    assert translate_llm_exception(httpx.ReadTimeout("timed out", request=request)) is None
    assert translate_llm_exception(httpx.ConnectError("no request attached")) is None


def test_self_hosted_endpoints_can_be_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    from errtrace.core import llm_hosts

    monkeypatch.setattr(llm_hosts, "_DOMAINS", dict(llm_hosts._DOMAINS))
    request = httpx.Request("POST", "http://vllm.internal.example/v1/chat/completions")
    assert translate_llm_exception(httpx.ReadTimeout("x", request=request)) is None
    llm.add_llm_host("vllm.internal.example")
    assert _translate(httpx.ReadTimeout("x", request=request)).code == "LLM_TIMEOUT"
    ollama = httpx.Request("POST", "http://gpu-box:11434/api/chat")
    assert _translate(httpx.ConnectError("refused", request=ollama)).code == "LLM_CONNECTION_ERROR"


def test_other_exceptions_are_not_claimed() -> None:
    class HTTPException(Exception):
        status_code = 404

    assert translate_llm_exception(ValueError("rate limit")) is None
    assert translate_llm_exception(HTTPException("not found")) is None
    assert translate_llm_exception(AppError("LLM_TIMEOUT")) is None


def test_retry_after_header_forms() -> None:
    assert retry_after_from_headers({"retry-after": "3"}) == 3.0
    assert (
        retry_after_from_headers(
            {"x-ratelimit-reset-requests": "1m30s", "x-ratelimit-reset-tokens": "20ms"}
        )
        == 90.0
    )
    assert (
        retry_after_from_headers(
            {
                "x-ratelimit-reset-requests": "1m30s",
                "x-ratelimit-reset-tokens": "20ms",
                "x-ratelimit-remaining-tokens": "0",
            }
        )
        == 0.02
    )
    assert retry_after_from_headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_from_headers(None) is None


# ---------------------------------------------------------------- install


def test_install_registers_once_and_to_app_error_uses_it() -> None:
    install()
    install()
    assert mapper._translators.count(translate_llm_exception) == 1
    exc = _anthropic_status(
        anthropic.InternalServerError, 529, {"type": "overloaded_error", "message": "Overloaded"}
    )
    err = to_app_error(exc)
    assert err.code == "LLM_OVERLOADED"
    assert err.__cause__ is exc
    assert to_app_error(RuntimeError("boom")).code == "INTERNAL"


def test_anthropic_error_event_mid_stream_has_no_provider_status() -> None:
    # The SDK raises an error event of a stream with the stream's own response (200).
    exc = _anthropic_status(
        anthropic.APIStatusError, 200, {"type": "overloaded_error", "message": "Overloaded"},
        headers={"request-id": "req_011mid"},
    )
    err = _translate(exc)
    assert err.code == "LLM_OVERLOADED"
    assert "provider_status" not in err.details
    assert err.details["provider_request_id"] == "req_011mid"
