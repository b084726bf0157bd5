"""Real provider texts the classifier once got wrong, checked as a user sees the result.

Each test asserts what reaches a client or an operator: the code, its HTTP status, level
and retryable flag, the hint, and the extracted numbers. The texts are provider answers
as published in the providers' documentation and in public issue reports.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from errtrace.core.codes import registry
from errtrace.core.config import Config
from errtrace.core.errors import to_app_error
from errtrace.core.rewrite import classify
from errtrace.core.runtime import Runtime


def _openai_body(message: str, code: str | None = None, type: str = "invalid_request_error") -> str:
    return json.dumps({"error": {"message": message, "type": type, "param": None, "code": code}})


def _seen(code: str) -> tuple[int | None, int, bool]:
    """What a client is told for ``code``: HTTP status, level, retryable."""
    found = registry.get(code)
    return found.http_status, int(found.level), found.retryable


# ------------------------------------------- a type hint against the provider's status

OPENAI_DEACTIVATED = (
    "The OpenAI account associated with this API key has been deactivated. If you are the "
    "developer for this OpenAI app, please check your email for more information."
)
OPENAI_NO_ORG = (
    "You must be a member of an organization to use the API. Please contact us through our "
    "help center at help.openai.com."
)
OPENAI_UNVERIFIED = (
    "Your organization must be verified to stream this model. Please go to: "
    "https://platform.openai.com/settings/organization/general and click on Verify "
    "Organization."
)
OPENAI_BAD_ISSUER = "Your authentication token is not from a valid issuer."


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (401, _openai_body(OPENAI_DEACTIVATED, "account_deactivated"), "LLM_AUTH_FAILED"),
        (401, _openai_body(OPENAI_NO_ORG, "no_organization"), "LLM_PERMISSION_DENIED"),
        (401, _openai_body(OPENAI_BAD_ISSUER, "invalid_issuer"), "LLM_AUTH_FAILED"),
        (403, _openai_body(OPENAI_UNVERIFIED, "unsupported_value"), "LLM_PERMISSION_DENIED"),
    ],
)
def test_openai_401_and_403_are_our_credentials_not_the_callers_request(
    status: int, body: str, code: str
) -> None:
    # OpenAI labels these "invalid_request_error" too; the status says what failed
    result = classify(body, status=status, provider="openai")
    assert result.code == code
    assert _seen(result.code) == (502, 1, False)  # not a 4xx blaming the caller; alerts
    assert result.details["provider_error_type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("cls", "status", "message", "provider_code", "code"),
    [
        (
            openai.AuthenticationError,
            401,
            OPENAI_DEACTIVATED,
            "account_deactivated",
            "LLM_AUTH_FAILED",
        ),
        (openai.AuthenticationError, 401, OPENAI_NO_ORG, "no_organization", None),
        (
            openai.PermissionDeniedError,
            403,
            OPENAI_UNVERIFIED,
            "unsupported_value",
            "LLM_PERMISSION_DENIED",
        ),
    ],
)
def test_openai_sdk_auth_errors_escaping_a_handler_answer_502(
    cls: type[openai.APIStatusError],
    status: int,
    message: str,
    provider_code: str,
    code: str | None,
) -> None:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": provider_code,
        }
    }
    exc = cls(
        f"Error code: {status} - {body}",
        response=httpx.Response(status, json=body, request=request),
        body=body["error"],
    )
    err = to_app_error(exc)
    assert err.code in ((code,) if code else ("LLM_AUTH_FAILED", "LLM_PERMISSION_DENIED"))
    assert err.http_status == 502
    assert int(err.level) == 1
    assert err.details["provider_status"] == status


def test_the_status_in_an_sdk_message_also_outranks_the_type_hint() -> None:
    # str(openai.AuthenticationError), classified without a status
    text = (
        "Error code: 401 - {'error': {'message': 'Your authentication token is not from a "
        "valid issuer.', 'type': 'invalid_request_error', 'param': None, 'code': "
        "'invalid_issuer'}}"
    )
    result = classify(text)
    assert (result.code, result.rule) == ("LLM_AUTH_FAILED", "status-in-text:401")


OPENAI_BAD_URL = _openai_body("Invalid URL (POST /v1/chat/completion)")


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        # OpenAI's answer to a wrong endpoint: our configuration, not the caller's request
        (404, OPENAI_BAD_URL, "LLM_MODEL_NOT_FOUND"),
        # the same generic type under a status that names another failure
        (429, OPENAI_BAD_URL, "LLM_RATE_LIMITED"),
        (500, OPENAI_BAD_URL, "LLM_SERVER_ERROR"),
        (502, OPENAI_BAD_URL, "LLM_SERVER_ERROR"),
        # OpenAI's 503 "slow_down" is typed server_error: the status says overloaded
        (503, _openai_body("Slow Down", "slow_down", "server_error"), "LLM_OVERLOADED"),
    ],
)
def test_a_type_hint_never_contradicts_a_404_429_or_5xx(status: int, body: str, code: str) -> None:
    result = classify(body, status=status)
    assert (result.code, result.rule) == (code, f"status-only:{status}")


@pytest.mark.parametrize("status", [None, 400, 422])
def test_a_type_hint_still_decides_where_the_status_agrees_or_is_missing(
    status: int | None,
) -> None:
    body = _openai_body(
        "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 "
        "instead.",
        "integer_below_min_value",
    )
    result = classify(body, status=status)
    assert (result.code, result.rule) == ("LLM_INVALID_REQUEST", "weak:invalid-request-type")
    assert _seen(result.code) == (400, 3, False)


def test_openai_account_wording_is_recognised_without_a_status() -> None:
    assert classify(_openai_body(OPENAI_DEACTIVATED)).code == "LLM_AUTH_FAILED"
    assert classify(_openai_body(OPENAI_NO_ORG)).code == "LLM_PERMISSION_DENIED"
    assert classify(_openai_body(OPENAI_UNVERIFIED)).code == "LLM_PERMISSION_DENIED"


# ------------------------------------------------------------- Gemini quota counters


def _gemini_429(message: str, quota_id: str, metric: str, delay: str) -> str:
    return json.dumps(
        {
            "error": {
                "code": 429,
                "message": message,
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{"quotaMetric": metric, "quotaId": quota_id}],
                    },
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
                ],
            }
        }
    )


GEMINI_HEAD = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
)
GEMINI_PER_MINUTE = _gemini_429(
    GEMINI_HEAD + "To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. "
    "\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_paid_"
    "tier_input_token_count, limit: 4000000\nPlease retry in 47.434392449s.",
    "GenerateContentPaidTierInputTokensPerModelPerMinute",
    "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count",
    "47s",
)
GEMINI_PER_DAY = _gemini_429(
    GEMINI_HEAD + "To monitor your current usage, head to: https://ai.dev/rate-limit. \n* Quota "
    "exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_"
    "requests, limit: 20, model: gemini-2.5-flash\nPlease retry in 58.821668433s.",
    "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    "generativelanguage.googleapis.com/generate_content_free_tier_requests",
    "58s",
)
GEMINI_NO_FREE_TIER = _gemini_429(
    GEMINI_HEAD + "To monitor your current usage, head to: https://ai.dev/rate-limit. \n* Quota "
    "exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_"
    "requests, limit: 0, model: gemini-3-pro\nPlease retry in 45.578569677s.",
    "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    "generativelanguage.googleapis.com/generate_content_free_tier_requests",
    "45s",
)


@pytest.mark.parametrize(
    ("body", "retry_after"), [(GEMINI_PER_MINUTE, 47.434), (GEMINI_PER_DAY, 58.822)]
)
def test_gemini_quota_counters_are_rate_limits_with_their_retry_after(
    body: str, retry_after: float
) -> None:
    result = classify(body, status=429, provider="gemini")
    assert (result.code, result.rule) == ("LLM_RATE_LIMITED", "gemini:quota-window")
    assert _seen(result.code) == (429, 2, True)
    assert result.details["retry_after"] == pytest.approx(retry_after)
    assert result.hint == registry.get("LLM_RATE_LIMITED").hint
    assert "will not help" not in result.hint


def test_gemini_message_without_its_details_is_still_a_rate_limit() -> None:
    text = GEMINI_HEAD + "\ncode: 429"  # as a CLI shows it
    assert classify(text).code == "LLM_RATE_LIMITED"


def test_gemini_limit_zero_is_a_quota_no_retry_can_fix() -> None:
    # the model has no quota at all on the project's tier: billing must change
    result = classify(GEMINI_NO_FREE_TIER, status=429, provider="gemini")
    assert (result.code, result.rule) == ("LLM_QUOTA_EXCEEDED", "gemini:no-quota-on-tier")
    assert _seen(result.code) == (429, 1, False)


@pytest.mark.parametrize("status", [429, None])
def test_openai_insufficient_quota_stays_a_quota(status: int | None) -> None:
    message = (
        "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors."
    )
    for text in (_openai_body(message, "insufficient_quota", "insufficient_quota"), message):
        result = classify(text, status=status)
        assert (result.code, result.rule) == ("LLM_QUOTA_EXCEEDED", "openai:insufficient-quota")
        assert _seen(result.code) == (429, 1, False)
        assert "retry_after" not in result.details


# -------------------------------------------- our request body is not JSON, not the model's

OPENAI_BAD_BODY = _openai_body(
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
    "contact us through our help center at help.openai.com.)"
)
ANTHROPIC_BAD_BODY = json.dumps(
    {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "The request body is not valid JSON: no low surrogate in string: line 1 "
            "column 54841 (char 54840)",
        },
    }
)
ANTHROPIC_EMPTY_BODY = json.dumps(
    {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Request body is not valid JSON: Expecting value: line 1 column 1 (char 0)",
        },
    }
)


@pytest.mark.parametrize("body", [OPENAI_BAD_BODY, ANTHROPIC_BAD_BODY, ANTHROPIC_EMPTY_BODY])
@pytest.mark.parametrize("status", [400, None])
def test_a_provider_refusing_our_request_json_is_an_invalid_request(
    body: str, status: int | None
) -> None:
    result = classify(body, status=status)
    assert result.code == "LLM_INVALID_REQUEST"
    assert _seen(result.code) == (400, 3, False)  # not a retryable 502
    assert result.hint == registry.get("LLM_INVALID_REQUEST").hint


@pytest.mark.parametrize(
    "text",
    [
        "langchain_core.exceptions.OutputParserException: Invalid json output: Sure! Here is",
        "Model output is not valid JSON: Expecting value: line 1 column 1 (char 0)",
    ],
)
def test_model_output_that_is_not_json_is_still_a_parse_error(text: str) -> None:
    assert classify(text).code == "LLM_OUTPUT_PARSE_ERROR"


# ------------------------------------------------------------------ context windows


def test_vertex_context_window_error_with_its_numbers() -> None:
    body = json.dumps(
        {
            "error": {
                "code": 400,
                "message": "Unable to submit request because the input token count is 40000 "
                "but model only supports up to 32768. Reduce the input token count and try "
                "again. You can also use the CountTokens API to calculate prompt token count "
                "and billable characters. Learn more: https://cloud.google.com/vertex-ai/"
                "generative-ai/docs/multimodal/get-token-count",
                "status": "INVALID_ARGUMENT",
            }
        }
    )
    result = classify(body, status=400, provider="vertex")
    assert (result.code, result.rule) == ("LLM_CONTEXT_LENGTH_EXCEEDED", "gemini:input-token-count")
    assert (result.details["requested_tokens"], result.details["limit_tokens"]) == (40000, 32768)
    assert result.hint == registry.get("LLM_CONTEXT_LENGTH_EXCEEDED").hint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # vLLM: the prompt fits, the prompt plus max_tokens does not
        (
            "'max_tokens' or 'max_completion_tokens' is too large: 1000. This model's maximum "
            "context length is 4096 tokens and your request has 3500 input tokens "
            "(1000 > 4096 - 3500).",
            {"requested_tokens": 4500, "limit_tokens": 4096},
        ),
        (
            json.dumps(
                {
                    "error": {
                        "message": "'max_tokens' or 'max_completion_tokens' is too large: 8000. "
                        "This model's maximum context length is 4096 tokens and your request "
                        "has 2778 input tokens (8000 > 4096 - 2778). None",
                        "type": "BadRequestError",
                        "param": None,
                        "code": 400,
                    }
                }
            ),
            {"requested_tokens": 10778, "limit_tokens": 4096},
        ),
        # TGI
        (
            "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
            "Given: 4000 `inputs` tokens and 500 `max_new_tokens`",
            {"requested_tokens": 4500, "limit_tokens": 4096},
        ),
        (
            "Input validation error: `inputs` must have less than 4096 tokens. Given: 5000",
            {"requested_tokens": 5000, "limit_tokens": 4096},
        ),
        # vLLM, the prompt alone too long
        (
            "This model's maximum context length is 4096 tokens. However, your request has 5000 "
            "input tokens. Please reduce the length of the input messages.",
            {"requested_tokens": 5000, "limit_tokens": 4096},
        ),
        # only the prompt is named and it fits: no "requested" that contradicts "exceeded"
        (
            "This model's maximum context length is 4096 tokens and your request has 3500 "
            "input tokens.",
            {"limit_tokens": 4096},
        ),
    ],
)
def test_requested_tokens_are_the_whole_request_never_below_the_limit(
    text: str, expected: dict[str, int]
) -> None:
    result = classify(text, status=400)
    assert result.code == "LLM_CONTEXT_LENGTH_EXCEEDED"
    numbers = {k: v for k, v in result.details.items() if k.endswith("_tokens")}
    assert numbers == expected


def test_no_corpus_line_reports_fewer_requested_tokens_than_the_limit() -> None:
    from pathlib import Path

    corpus = Path(__file__).parent / "data" / "llm_errors.jsonl"
    checked = 0
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row: dict[str, Any] = json.loads(line)
        details = classify(row["text"], status=row["status"]).details
        if "requested_tokens" in details:
            checked += 1
            assert details["requested_tokens"] >= details["limit_tokens"], row["text"]
    assert checked >= 5


# ------------------------------------------------------------------ accelerator memory

TORCH_OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total "
    "capacity of 79.15 GiB of which 1.75 MiB is free."
)
TGI_OOM = json.dumps(
    {
        "error": "Request failed during generation: Server error: CUDA out of memory. Tried to "
        "allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity; 13.50 GiB already allocated)",
        "error_type": "generation",
    }
)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        (TORCH_OOM, None),
        (TGI_OOM, 424),
        ("RuntimeError: CUDA error: out of memory", 500),
        ("torch.OutOfMemoryError: HIP out of memory. Tried to allocate 1.00 GiB", None),
    ],
)
def test_accelerator_out_of_memory_is_the_gpu_code(text: str, status: int | None) -> None:
    result = classify(text, status=status)
    assert (result.code, result.rule) == ("AI_GPU_OUT_OF_MEMORY", "gpu:out-of-memory")
    assert _seen(result.code) == (503, 1, True)
    assert "lower the batch size" in result.hint


def test_a_rewritten_tgi_out_of_memory_answer_carries_the_gpu_code() -> None:
    runtime = Runtime(Config.load(rewrite_responses=True))
    err = runtime.rewrite_response(424, {"content-type": "application/json"}, TGI_OOM.encode())
    assert err is not None
    assert (err.code, err.http_status, err.retryable) == ("AI_GPU_OUT_OF_MEMORY", 503, True)


def test_memory_that_is_not_an_accelerator_s_is_not_the_gpu_code() -> None:
    for text in (
        '{"error":"model requires more system memory (16.0 GiB) than is available (8.0 GiB)"}',
        "java.lang.OutOfMemoryError: Java heap space",
    ):
        assert classify(text, status=500).code != "AI_GPU_OUT_OF_MEMORY"
