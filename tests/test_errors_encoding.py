"""AppError, exception translation by MRO, problem+json and decoding it back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import errtrace
from errtrace.core.config import Config
from errtrace.core.context import ErrorContext
from errtrace.core.encoding import (
    PROBLEM_JSON,
    error_headers,
    from_http_response,
    neutral,
    problem,
)
from errtrace.core.errors import ExceptionMapper, RemoteError, to_app_error
from errtrace.core.runtime import Runtime

CTX = ErrorContext(trace_id="a" * 32, span_id="b" * 16, biz_code="tenant-42")


def test_app_error_kind_class_follows_code() -> None:
    assert isinstance(errtrace.AppError("LLM_RATE_LIMITED"), errtrace.TransientError)
    assert isinstance(errtrace.AppError("AI_MODEL_LOAD_FAILED"), errtrace.SystemFailure)
    assert isinstance(errtrace.AppError("NOT_FOUND"), errtrace.BusinessError)
    err = errtrace.AppError("LLM_CONTEXT_LENGTH_EXCEEDED", "too long", details={"limit": 8192})
    assert (err.code, err.http_status, err.grpc_status, err.level) == (
        "LLM_CONTEXT_LENGTH_EXCEEDED", 400, "INVALID_ARGUMENT", errtrace.Level.MODERATE,
    )
    with pytest.raises(errtrace.BusinessError):
        raise err


def test_unknown_code_still_answers_as_a_server_error() -> None:
    err = errtrace.AppError("SOME_OTHER_SERVICE_CODE")
    assert err.http_status == 500 and err.level == errtrace.Level.SEVERE


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (TimeoutError("t"), "TIMEOUT"),
        (asyncio.TimeoutError(), "TIMEOUT"),
        (ConnectionRefusedError("no"), "UPSTREAM_UNAVAILABLE"),
        (NotImplementedError(), "NOT_IMPLEMENTED"),
        (ValueError("secret"), "INTERNAL"),
        (KeyError("k"), "INTERNAL"),
    ],
)
def test_builtin_exception_mapping(exc: BaseException, code: str) -> None:
    err = to_app_error(exc)
    assert err.code == code
    assert err.cause is exc


def test_mro_most_specific_mapping_wins() -> None:
    class StoreError(Exception):
        pass

    class StoreTimeout(StoreError, TimeoutError):
        pass

    mapper = ExceptionMapper()
    mapper.register(StoreError, "UPSTREAM_ERROR")
    mapper.register(TimeoutError, "TIMEOUT")
    mapper.register(StoreTimeout, "AI_INFERENCE_TIMEOUT")
    assert mapper.translate(StoreError()).code == "UPSTREAM_ERROR"
    assert mapper.translate(StoreTimeout()).code == "AI_INFERENCE_TIMEOUT"

    class Other(StoreError):
        pass

    assert mapper.translate(Other()).code == "UPSTREAM_ERROR"
    with pytest.raises(KeyError, match="NO_SUCH_CODE"):
        mapper.register(Other, "NO_SUCH_CODE")


def test_translator_used_for_unmapped_and_its_bugs_are_contained() -> None:
    mapper = ExceptionMapper()

    def broken(exc: BaseException) -> errtrace.AppError | None:
        raise RuntimeError("translator bug")

    def llm(exc: BaseException) -> errtrace.AppError | None:
        return errtrace.AppError("LLM_OVERLOADED") if "overloaded" in str(exc) else None

    mapper.add_translator(broken)
    mapper.add_translator(llm)
    err = mapper.translate(RuntimeError("overloaded_error"))
    assert err.code == "LLM_OVERLOADED" and isinstance(err.cause, RuntimeError)
    assert mapper.translate(RuntimeError("other")).code == "INTERNAL"


def test_problem_members_rfc9457_and_extensions() -> None:
    config = Config()
    err = errtrace.AppError(
        "LLM_RATE_LIMITED", "slow down",
        details={"retry_after": 2.2, "model": "gpt-4o", "_provider_text": "secret raw"},
    )
    body = problem(err, CTX, "01EVENT", config)
    assert body["type"] == "https://errtrace.dev/codes/LLM_RATE_LIMITED"
    assert (body["title"], body["status"], body["detail"], body["instance"]) == (
        "LLM rate limited", 429, "slow down", "01EVENT",
    )
    assert body["code"] == "LLM_RATE_LIMITED" and body["level"] == 2
    assert (body["trace_id"], body["span_id"]) == ("a" * 32, "b" * 16)
    assert body["biz_code"] == "tenant-42"
    assert body["event_id"] == "01EVENT" and body["retryable"] is True
    assert body["retry_after"] == 2.2 and body["hint"]
    assert body["details"] == {"model": "gpt-4o"}  # the private key is not sent
    assert "secret raw" not in json.dumps(body)
    headers = dict(error_headers(err, CTX, "01EVENT", config))
    assert headers["Retry-After"] == "3"
    assert headers["X-Error-Code"] == "LLM_RATE_LIMITED" and headers["X-Error-Level"] == "2"


def test_unhandled_exception_text_never_in_body_unless_debug() -> None:
    err = to_app_error(ValueError("password=hunter2"))
    body = json.dumps(problem(err, CTX, "E", Config()))
    assert "hunter2" not in body and "ValueError" not in body
    debug_body = json.dumps(problem(err, CTX, "E", Config(debug=True)))
    assert "hunter2" in debug_body and "traceback" in debug_body


def test_round_trip_through_http_keeps_code_event_and_chain() -> None:
    config = Config(service_name="bottom")
    inner = errtrace.AppError("LLM_RATE_LIMITED", details={"retry_after": 4})
    body = json.dumps(problem(inner, CTX, "EV-BOTTOM", config)).encode()
    decoded = from_http_response(429, {"content-type": PROBLEM_JSON}, body, service="bottom")
    assert decoded is not None
    assert decoded.code == "LLM_RATE_LIMITED" and decoded.http_status == 429
    assert decoded.retry_after == 4.0
    assert decoded.remote == RemoteError(
        code="LLM_RATE_LIMITED", event_id="EV-BOTTOM", trace_id="a" * 32, span_id="b" * 16,
        service="bottom", level=2, http_status=429, grpc_status=None, retryable=True,
    )
    # One hop up: the middle hop re-raises it, its own event links the bottom one.
    middle = problem(decoded, CTX, "EV-MIDDLE", Config(service_name="middle"))
    assert middle["caused_by"] == [{"code": "LLM_RATE_LIMITED", "event_id": "EV-BOTTOM",
                                    "span_id": "b" * 16, "service": "bottom"}]
    top = from_http_response(429, {"content-type": PROBLEM_JSON}, json.dumps(middle).encode())
    assert top is not None
    chain = problem(top, CTX, "EV-TOP", config)["caused_by"]
    assert [link["event_id"] for link in chain] == ["EV-MIDDLE", "EV-BOTTOM"]


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        ({"content-type": "application/json"}, b'{"code": "PAYMENT_DECLINED", "message": "x"}',
         "PAYMENT_DECLINED"),
        ({"content-type": "application/json"}, b'{"error": {"code": "NOT_FOUND"}}', "NOT_FOUND"),
        ({"x-error-code": "TIMEOUT", "x-error-event-id": "EV1"}, b"gateway timeout", "TIMEOUT"),
    ],
)
def test_decode_other_shapes(headers: dict[str, str], body: bytes, code: str) -> None:
    err = from_http_response(504, headers, body)
    assert err is not None and err.code == code



@pytest.mark.parametrize("grpc_status", ["nope", "OK", "unavailable", ""])
def test_a_remote_grpc_status_that_is_no_error_status_is_ignored(grpc_status: str) -> None:
    # A code this service does not know takes its status from the remote's answer; a
    # made-up (or OK) gRPC status name used to fail the decoding with a definition error.
    body = json.dumps({"code": "THEIR_CODE", "grpc_status": grpc_status}).encode()
    err = from_http_response(502, {"content-type": "application/json"}, body)
    assert err is not None and err.code == "THEIR_CODE"
    assert (err.http_status, err.grpc_status, int(err.level)) == (502, "UNAVAILABLE", 2)
    body = json.dumps({"code": "THEIR_CODE", "grpc_status": "RESOURCE_EXHAUSTED"}).encode()
    err = from_http_response(429, {"content-type": "application/json"}, body)
    assert err is not None and err.grpc_status == "RESOURCE_EXHAUSTED"  # a real one is kept

def test_a_code_only_the_remote_registers_keeps_its_retryable_and_domain() -> None:
    # The next hop passes the error on: its own callers must still be told to retry,
    # under the remote's (reason, domain) pair.
    body = json.dumps({"code": "INVENTORY_BUSY", "level": 2, "retryable": True,
                       "domain": "inventory.example.com", "retry_after": 3}).encode()
    err = from_http_response(503, {"content-type": "application/json"}, body)
    assert isinstance(err, errtrace.TransientError) and err.retryable
    assert err.error_code.domain == "inventory.example.com" and err.retry_after == 3.0
    assert problem(err, CTX, "E", Config())["retryable"] is True
    assert neutral(err, CTX, "E", Config())["domain"] == "inventory.example.com"
    # Said nothing, or not as a JSON boolean: not retryable.
    for said in ({}, {"retryable": "true"}, {"retryable": 1}):
        body = json.dumps({"code": "INVENTORY_BUSY", **said}).encode()
        err = from_http_response(503, {"content-type": "application/json"}, body)
        assert err is not None and not err.retryable
        assert isinstance(err, errtrace.SystemFailure)


@pytest.mark.parametrize(
    "domain", ["", "two words", "x" * 129, "inv.example.com\r\nX-Injected: 1", "caf\u00e9", 7,
               None],
)
def test_a_remote_domain_that_is_no_usable_domain_is_not_kept(domain: Any) -> None:
    body = json.dumps({"code": "INVENTORY_BUSY", "domain": domain}).encode()
    err = from_http_response(503, {"content-type": "application/json"}, body)
    assert err is not None and err.remote is not None
    assert err.remote.domain is None and err.error_code.domain == "errtrace.dev"


def test_a_registered_code_keeps_this_services_definition_whatever_the_remote_says() -> None:
    body = json.dumps({"code": "LLM_RATE_LIMITED", "retryable": False,
                       "domain": "elsewhere.example.com"}).encode()
    err = from_http_response(429, {"content-type": PROBLEM_JSON}, body)
    assert err is not None and err.remote is not None
    assert err.remote.retryable is False  # what the remote said is kept on the record
    assert err.retryable and err.error_code.domain == "errtrace.dev"


def test_a_remote_body_neither_holds_memory_nor_passes_its_text_on() -> None:
    # Every decoded error is kept in the event ring (1000 by default) and sent on to
    # this service's clients: what a remote put in it must be bounded, and only the
    # members errtrace writes itself are kept.
    item = {"field": "card", "message": "m" * 1000, "type": "value_error",
            "input": "x" * 1000, "exception": "psycopg2.OperationalError: secret"}
    body = {
        "code": "BILLING_FAILED",
        "errors": [[{}] * 3400, "text", 7, *[item] * 120],
        "caused_by": [
            {"code": "DB_DOWN", "event_id": "E1", "service": "db",
             "exception": "db_password=hunter2"},
            {"code": "lower bad", "event_id": "E2"},
            {"code": "CACHE_DOWN", "event_id": "e" * 500},
        ],
    }
    err = from_http_response(502, {"content-type": "application/json"},
                             json.dumps(body).encode())
    assert err is not None
    errors = err.details["errors"]
    assert len(errors) == 97  # of the first 100 items, the 3 that are no field error go
    assert errors[0] == {"field": "card", "message": "m" * 512, "type": "value_error"}
    doc = problem(err, CTX, "EV", Config())
    assert doc["caused_by"] == [{"code": "BILLING_FAILED"},
                                {"code": "DB_DOWN", "event_id": "E1", "service": "db"},
                                {"code": "CACHE_DOWN"}]
    text = json.dumps(doc)
    assert "hunter2" not in text and "psycopg2" not in text and "xxxx" not in text
    assert len(text) < 80_000


@pytest.mark.parametrize(
    ("body", "code", "level"),
    [
        ({"code": "PAYMENTS_DOWN2", "level": 5, "status": 200}, "PAYMENTS_DOWN2", 2),
        ({"code": "INTERNAL", "status": 401}, "INTERNAL", 1),
        ({"code": "THEIR_CODE", "http_status": 404}, "THEIR_CODE", 2),
    ],
)
def test_the_status_an_answer_came_with_wins_over_its_body(
    body: dict[str, Any], code: str, level: int
) -> None:
    err = from_http_response(500, {"content-type": "application/json"},
                             json.dumps(body).encode())
    assert err is not None and err.code == code
    assert (err.http_status, int(err.level)) == (500, level)


@pytest.mark.parametrize(
    "body", [b"", b"plain text", b"{not json", b'{"code": "lower-case bad"}', b"[1,2]",
             b'{"code": 12}'],
)
def test_decode_returns_none_without_usable_code(body: bytes) -> None:
    assert from_http_response(500, {"content-type": "application/json"}, body) is None


def test_neutral_form() -> None:
    err = errtrace.AppError("AI_GPU_OUT_OF_MEMORY")
    data = neutral(err, CTX, "EV", Config(service_name="svc"))
    assert data["code"] == "AI_GPU_OUT_OF_MEMORY" and data["grpc_status"] == "RESOURCE_EXHAUSTED"
    assert data["service"] == "svc" and data["event_id"] == "EV" and data["level"] == 1



def test_an_error_header_given_as_a_list_is_sent_once_per_value() -> None:
    import pickle

    err = errtrace.AppError("RATE_LIMITED", headers={
        "Set-Cookie": ["session=a; Path=/", "region=eu; Path=/"], "X-Shard": "7",
    })
    runtime = Runtime(Config())
    for error in (err, pickle.loads(pickle.dumps(err))):
        _, headers, _ = runtime.http_error(error, CTX)
        assert [v for k, v in headers if k == "Set-Cookie"] == [
            "session=a; Path=/", "region=eu; Path=/"
        ]
        _, pairs, _ = runtime.http_error_bytes(error, CTX)
        assert [v for k, v in pairs if k == b"set-cookie"] == [
            b"session=a; Path=/", b"region=eu; Path=/"
        ]
        assert (b"x-shard", b"7") in pairs

def test_runtime_http_error_and_record() -> None:
    runtime = Runtime(Config(service_name="svc"))
    seen: list[Any] = []
    errtrace.on_error(lambda event, ctx: seen.append((event.code, ctx.trace_id)))
    with errtrace.testing.capture_events() as captured:
        failure = runtime.fail(ValueError("boom"), CTX, transport="http", method="GET", route="/x")
    status, headers, body = runtime.http_error(failure.error, CTX)
    assert status == 500
    assert ("Content-Type", PROBLEM_JSON) in headers
    event = captured[0]
    assert event.code == "INTERNAL" and event.trace_id == "a" * 32 and event.biz_code == "tenant-42"
    assert event.private_exception == "ValueError: boom"
    assert json.loads(body)["event_id"] == event.event_id == CTX.event_id
    assert seen == [("INTERNAL", "a" * 32)]


def test_framework_retry_after_is_written_once_and_shown_in_body() -> None:
    from errtrace.core.errors import error_for_http_status

    err = error_for_http_status(429, "slow down", {"Retry-After": "30", "X-Other": "1"})
    headers = error_headers(err, CTX, "EV", Config())
    assert [v for k, v in headers if k.lower() == "retry-after"] == ["30"]
    assert ("X-Other", "1") in headers
    assert problem(err, CTX, "EV", Config())["retry_after"] == 30.0


# --- the cached writer gives the same bytes as the document path --------------------------


def _slow_response(
    err: errtrace.AppError, ctx: ErrorContext | None, config: Config
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    from errtrace.core.encoding import encode_headers, problem_json

    headers = [("Content-Type", PROBLEM_JSON), *error_headers(err, ctx, err.event_id, config)]
    body = problem_json(problem(err, ctx, err.event_id, config))
    return err.http_status, encode_headers(headers), body


WRITER_CONTEXTS = [
    CTX,
    ErrorContext(trace_id="c" * 32, span_id="d" * 16),
    ErrorContext(trace_id="e" * 32, span_id="f" * 16, biz_code=""),
    None,
]
WRITER_CONFIGS = [
    Config(),
    Config(
        service_name='svc "ünï" \\ côdé',
        problem_type_base="https://example.com/problems/",
        error_code_header="X-Code",
        trace_id_header="Trace-Id",
        event_id_header="Event",
    ),
]


@pytest.mark.parametrize("config", WRITER_CONFIGS, ids=["default", "custom"])
def test_error_writer_matches_the_document_path_for_every_code(config: Config) -> None:
    from errtrace.core.codes import registry
    from errtrace.core.encoding import ErrorWriter

    writer = ErrorWriter(config)
    checked = 0
    for code in registry:
        for message in (None, 'quote " backslash \\ newline \n', "naïve → 模型", ""):
            for ctx in WRITER_CONTEXTS:
                for event_id in ("01JDX3Q0M2V8Y7K9R5T4W6Z1AB", None):
                    for status in (None, 418):
                        err = errtrace.AppError(code.id, message, status=status)
                        err.event_id = event_id
                        fast = writer.response(err, ctx, event_id)
                        assert fast == _slow_response(err, ctx, config), (code.id, message)
                        json.loads(fast[2])  # and it is JSON
                        checked += 1
    assert checked >= 45 * 4 * 4 * 2 * 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: errtrace.AppError("VALIDATION_FAILED", details={"errors": [{"field": "a"}]}),
        lambda: errtrace.AppError("LLM_RATE_LIMITED", details={"retry_after": 2.5}),
        lambda: errtrace.AppError("NOT_FOUND", headers={"WWW-Authenticate": "Bearer"}),
        lambda: errtrace.AppError("INTERNAL", details={"_private": "x", "shown": 1}),
        lambda: errtrace.AppError("INTERNAL", details={"_private": "only private"}),
        lambda: errtrace.AppError(
            "LLM_RATE_LIMITED", remote=RemoteError(code="LLM_RATE_LIMITED", event_id="E1")
        ),
        lambda: errtrace.AppError("BAD_REQUEST", details={"score": float("nan")}),
        lambda: errtrace.AppError("BAD_REQUEST", details={"by_pair": {("a", "b"): 1}}),
        lambda: errtrace.AppError("PAYLOAD_TOO_LARGE", headers={"X-Max-MB": 5}),  # type: ignore[dict-item]
        lambda: errtrace.AppError("NOT_FOUND", 42),  # type: ignore[arg-type]
        lambda: errtrace.AppError("BAD_REQUEST", ValueError("secret")),  # type: ignore[arg-type]
    ],
    ids=["field-errors", "retry-after", "own-headers", "details", "private", "remote",
         "nan-detail", "tuple-key", "int-header", "int-message", "exception-message"],
)
def test_error_writer_documents_with_more_than_the_code(make: Any) -> None:
    from errtrace.core.encoding import ErrorWriter

    for config in (Config(), Config(debug=True)):
        err = make()
        err.event_id = "01JDX3Q0M2V8Y7K9R5T4W6Z1AB"
        fast = ErrorWriter(config).response(err, CTX, err.event_id)
        assert fast == _slow_response(err, CTX, config)
        assert isinstance(json.loads(fast[2], parse_constant=_no_constant)["detail"], str)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def test_error_writer_follows_a_code_registered_again() -> None:
    from errtrace.core.codes import CodeRegistry, ErrorCode
    from errtrace.core.encoding import ErrorWriter

    writer = ErrorWriter(Config())
    first = CodeRegistry([ErrorCode("MY_CODE", 3, http_status=409, hint="first hint")])
    second = CodeRegistry([ErrorCode("MY_CODE", 3, http_status=409, hint="second hint")])
    body1 = writer.response(errtrace.AppError("MY_CODE", codes=first), CTX, None)[2]
    body2 = writer.response(errtrace.AppError("MY_CODE", codes=second), CTX, None)[2]
    assert json.loads(body1)["hint"] == "first hint"
    assert json.loads(body2)["hint"] == "second hint"


def test_debug_body_of_an_unprintable_exception() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    body = problem(to_app_error(Unprintable()), None, "E", Config(debug=True))
    assert body["debug"]["exception"].endswith("Unprintable: <unprintable>")
