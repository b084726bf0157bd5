"""What the raiser puts in an error never breaks its answer: strict JSON bodies, the
error's own status and code, its Retry-After, and an ``event: error`` that an
EventSource client reads as its own event, on both HTTP writers."""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import math
import threading
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

import errtrace
from errtrace.core import encoding
from errtrace.core.config import Config, ConfigError
from errtrace.core.context import ErrorContext
from errtrace.core.encoding import jsonable, problem_json, sse_error_event
from errtrace.core.errors import error_for_http_status
from errtrace.core.propagation import dict_getter, dict_setter, extract, inject, parse_baggage
from errtrace.core.runtime import Runtime
from errtrace.middleware.asgi import ErrtraceMiddleware, Receive, Scope, Send
from errtrace.middleware.wsgi import ErrtraceWSGIMiddleware
from errtrace.testing import capture_events

CTX = ErrorContext(trace_id="a" * 32, span_id="b" * 16, biz_code="tenant-42")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def strict(body: bytes | str) -> Any:
    """Parse as a strict JSON parser does: NaN / Infinity are errors."""
    return json.loads(body, parse_constant=_no_constant)


def both_writers(err: errtrace.AppError) -> list[tuple[int, dict[str, list[str]], bytes]]:
    """The answer of Runtime.http_error (WSGI) and Runtime.http_error_bytes (ASGI):
    status, lower-case header name -> values, body."""
    runtime = Runtime(Config(log_errors=False))
    runtime.record(err, CTX, transport="http")
    status, headers, body = runtime.http_error(err, CTX)
    text: dict[str, list[str]] = {}
    for name, value in headers:
        text.setdefault(name.lower(), []).append(value)
    fast_status, pairs, fast_body = runtime.http_error_bytes(err, CTX)
    raw: dict[str, list[str]] = {}
    for key, item in pairs:
        raw.setdefault(key.decode("latin-1"), []).append(item.decode("latin-1"))
    return [(status, text, body), (fast_status, raw, fast_body)]


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def raising(err: BaseException) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise err

    return app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- NaN, infinities and keys that are not text in details ------------------------------


@pytest.mark.parametrize(("domain", "member"), [
    ("inventory.example.com", "inventory.example.com"),
    ("errtrace.dev", None),  # errtrace's own domain: the body stays as it was
])
def test_a_codes_own_domain_is_written_by_both_writers(domain: str, member: str | None) -> None:
    code = errtrace.ErrorCode(id="INVENTORY_BUSY", level=2, http_status=503, domain=domain)
    for with_details in (False, True):  # the cached fast form, and the full document
        details = {"sku": "A-1"} if with_details else None
        for _, _, body in both_writers(errtrace.AppError(code, "busy", details=details)):
            doc = strict(body)
            assert doc.get("domain") == member and doc["code"] == "INVENTORY_BUSY"


def test_non_finite_floats_in_details_are_written_as_null_by_both_writers() -> None:
    err = errtrace.AppError("VALIDATION_FAILED", "score out of range", details={
        "score": math.nan, "max": math.inf, "min": -math.inf, "ok": 0.5,
        "errors": [{"field": "score", "value": math.nan}],
    })
    for status, headers, body in both_writers(err):
        assert status == 422 and headers["x-error-code"] == ["VALIDATION_FAILED"]
        doc = strict(body)
        assert doc["details"] == {"score": None, "max": None, "min": None, "ok": 0.5}
        assert doc["errors"] == [{"field": "score", "value": None}]
        assert doc["detail"] == "score out of range"


def test_keys_that_are_not_text_keep_the_errors_own_status_on_both_writers() -> None:
    err = errtrace.AppError("BAD_REQUEST", "bad pair", details={
        "by_pair": {("a", "b"): 1, 2: "two", None: "none", True: "yes"},
    })
    first, second = both_writers(err)
    assert first[2] == second[2]  # the same bytes
    for status, headers, body in (first, second):
        assert status == 400 and headers["x-error-code"] == ["BAD_REQUEST"]
        assert strict(body)["details"]["by_pair"] == {
            "('a', 'b')": 1, "2": "two", "null": "none", "true": "yes",
        }


@pytest.mark.anyio
async def test_an_asgi_answer_with_unencodable_details_keeps_its_code() -> None:
    for details in ({"score": math.nan}, {"by_pair": {("a", "b"): 1}}):
        err = errtrace.AppError("BAD_REQUEST", "bad", details=details)
        with capture_events() as events:
            async with client(ErrtraceMiddleware(raising(err))) as c:
                r = await c.get("/")
        assert r.status_code == 400 and r.headers["x-error-code"] == "BAD_REQUEST"
        assert strict(r.content)["code"] == "BAD_REQUEST"
        assert [e.code for e in events] == ["BAD_REQUEST"]  # no second, INTERNAL event


def test_odd_values_never_fail_the_body() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    err = errtrace.AppError("BAD_REQUEST", details={
        "odd": Unprintable(), "loop": loop, "deep": deep, "big": 10 ** 5000, "nan": math.nan,
    })
    for status, _, body in both_writers(err):
        assert status == 400
        details = strict(body)["details"]
        assert details["odd"] == "<unprintable Unprintable>"
        assert details["loop"] == {"name": "loop", "self": "<circular reference>"}
        assert details["big"].startswith("<int of ") and details["nan"] is None


def test_a_document_the_encoder_writes_is_unchanged_by_the_json_safe_copy() -> None:
    class Small(IntEnum):
        ONE = 1

    doc = {
        "text": "naïve → 模型", "n": -3, "f": 1.5, "e": Small.ONE, "none": None,
        "nested": {"list": [1, (2, 3)], 1: "int key", 2.5: "float key", False: "f"},
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5), "raw": b"k1",
        "money": Decimal("1.10"), "tags": {"x"},
    }
    assert problem_json(jsonable(doc)) == problem_json(doc)
    # A NaN anywhere makes the fallback write the whole document: the rest is the same.
    assert problem_json({**doc, "score": math.nan}) == problem_json(doc)[:-1] + b',"score":null}'


def test_the_sse_error_event_data_is_strict_json() -> None:
    err = errtrace.AppError("LLM_OVERLOADED", details={"score": math.nan, (1, 2): "pair"})
    (event,) = parse_sse(sse_error_event(err, CTX, Config()).decode())
    assert event[0] == "error"
    assert strict(event[1])["details"] == {"score": None, "(1, 2)": "pair"}


# --- headers of the error's own ----------------------------------------------------------


def test_own_header_numbers_are_sent_as_text_and_unsendable_ones_are_left_out(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoding, "_dropped_warned", set())  # logged once per process
    err = errtrace.AppError("PAYLOAD_TOO_LARGE", headers={
        "X-Max-MB": 5, "X-Ratio": 0.5, "X-Note": "max 5 MB ✓", "X-Set": ["a", 7],
        "X-Latin": "café",
    })
    with caplog.at_level(logging.WARNING, logger="errtrace"):
        answers = both_writers(err)
    for status, headers, body in answers:
        assert status == 413 and headers["x-error-code"] == ["PAYLOAD_TOO_LARGE"]
        assert strict(body)["code"] == "PAYLOAD_TOO_LARGE"
        assert headers["x-max-mb"] == ["5"] and headers["x-ratio"] == ["0.5"]
        assert headers["x-set"] == ["a", "7"] and headers["x-latin"] == ["café"]
        assert "x-note" not in headers
    assert "'X-Note'" in caplog.text and "not latin-1" in caplog.text


@pytest.mark.anyio
async def test_an_asgi_answer_with_unsendable_headers_keeps_its_code() -> None:
    for headers in ({"X-Max-MB": 5}, {"X-Note": "max 5 MB ✓"}, {3: "x"}):
        err = errtrace.AppError("PAYLOAD_TOO_LARGE", headers=headers)  # type: ignore[dict-item]
        with capture_events() as events:
            async with client(ErrtraceMiddleware(raising(err))) as c:
                r = await c.get("/")
        assert r.status_code == 413 and r.headers["x-error-code"] == "PAYLOAD_TOO_LARGE"
        assert [e.code for e in events] == ["PAYLOAD_TOO_LARGE"]


# --- a message that is not text ----------------------------------------------------------


def test_an_exception_given_as_the_message_becomes_the_cause_not_the_detail() -> None:
    try:
        int("secret-input")
    except ValueError as exc:
        err = errtrace.AppError("BAD_REQUEST", exc)  # type: ignore[arg-type]
        cause = exc
    assert err.cause is cause and err.message is None
    first, second = both_writers(err)
    assert first[2] == second[2]
    for status, _, body in (first, second):
        doc = strict(body)
        assert status == 400 and doc["code"] == "BAD_REQUEST"
        assert isinstance(doc["detail"], str) and "secret-input" not in body.decode()


def test_a_message_that_is_no_text_is_written_as_text_by_both_writers() -> None:
    err = errtrace.AppError("NOT_FOUND", 42)  # type: ignore[arg-type]
    assert err.message == "42"
    first, second = both_writers(err)
    assert first[2] == second[2]
    assert [(status, strict(body)["detail"]) for status, _, body in (first, second)] == [
        (404, "42"), (404, "42"),
    ]


@pytest.mark.anyio
async def test_an_asgi_answer_with_an_exception_as_message_keeps_its_code() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            int("abc")
        except ValueError as exc:
            raise errtrace.AppError("BAD_REQUEST", exc) from None  # type: ignore[arg-type]

    async with client(ErrtraceMiddleware(app)) as c:
        r = await c.get("/")
    assert r.status_code == 400 and strict(r.content)["code"] == "BAD_REQUEST"
    assert isinstance(strict(r.content)["detail"], str)


# --- an event stream that stops inside a line or an event --------------------------------


def parse_sse(text: str) -> list[tuple[str, str]]:
    """The events a WHATWG event-stream parser dispatches: (type, data)."""
    events: list[tuple[str, str]] = []
    etype, data = "", []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:  # a blank line dispatches the event, if its data buffer is not empty
            if data:
                events.append((etype or "message", "\n".join(data)))
            etype, data = "", []
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            etype = value
        elif name == "data":
            data.append(value)
    return events


@pytest.mark.parametrize(("sent", "before"), [
    ('data: {"tok": "l', ["message"]),          # inside a line
    ("event: token\ndata: a\n", ["token"]),     # inside an event
    ("data: a\r", ["message"]),                 # a line ended by CR alone
    ("data: a\n\n", ["message"]),               # after a whole event
    ("", []),                                   # nothing sent yet
])
def test_the_error_event_is_its_own_event_wherever_the_stream_stopped(
    sent: str, before: list[str]
) -> None:
    err = errtrace.AppError("LLM_OVERLOADED")
    events = parse_sse(sent + sse_error_event(err, CTX, Config()).decode())
    assert [t for t, _ in events] == [*before, "error"]
    assert strict(events[-1][1])["code"] == "LLM_OVERLOADED"


async def _relay(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": b'data: {"tok": "Hel"}\n\ndata: {"tok": "l',
                "more_body": True})
    raise ConnectionResetError("upstream reset")


@pytest.mark.anyio
async def test_an_asgi_stream_cut_inside_an_event_ends_with_an_error_event() -> None:
    async with client(ErrtraceMiddleware(_relay)) as c:
        r = await c.get("/")
    events = parse_sse(r.text)
    assert [t for t, _ in events] == ["message", "message", "error"]
    assert strict(events[-1][1])["code"] == "UPSTREAM_UNAVAILABLE"


def test_a_wsgi_stream_cut_inside_an_event_ends_with_an_error_event() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/event-stream")])

        def body() -> Any:
            yield b"data: 1\n\nevent: token\ndata: par"
            raise errtrace.AppError("LLM_OVERLOADED")

        return body()

    r = Client(ErrtraceWSGIMiddleware(app)).get("/")
    events = parse_sse(r.get_data(as_text=True))
    assert [t for t, _ in events] == ["message", "token", "error"]
    assert strict(events[-1][1])["code"] == "LLM_OVERLOADED"


# --- a Retry-After the app set -------------------------------------------------------------


@pytest.mark.parametrize(("status", "value"), [
    (413, "30"), (500, "120"), (401, "5"), (503, "Wed, 21 Oct 2099 07:28:00 GMT"), (429, "30"),
])
def test_an_app_set_retry_after_is_kept_once_on_both_writers(status: int, value: str) -> None:
    err = error_for_http_status(status, "later", {"Retry-After": value, "X-Other": "1"})
    for answer_status, headers, body in both_writers(err):
        assert answer_status == status
        assert headers["retry-after"] == [value] and headers["x-other"] == ["1"]
        if value.isdigit():
            assert strict(body)["retry_after"] == float(value)


def test_one_retry_after_when_the_app_set_it_under_two_spellings() -> None:
    err = error_for_http_status(413, None, {"Retry-After": "30", "retry-after": "60"})
    for _, headers, _ in both_writers(err):
        assert headers["retry-after"] == ["30"]


@pytest.mark.anyio
async def test_a_starlette_http_exception_keeps_its_retry_after() -> None:
    fastapi = pytest.importorskip("fastapi")

    app = errtrace.instrument(fastapi.FastAPI())

    @app.post("/upload")
    async def upload() -> None:
        raise fastapi.HTTPException(413, "upload window full", headers={"Retry-After": "30"})

    async with client(app) as c:
        r = await c.post("/upload")
    assert r.status_code == 413 and r.headers.get_list("retry-after") == ["30"]
    assert strict(r.content)["retry_after"] == 30


# --- baggage_biz_key -----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["biz code", "biz,code", "biz=code", "bïz", "biz;code"])
def test_a_baggage_key_that_is_no_token_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match=r"^baggage_biz_key: .* is not a valid baggage key"):
        Config(baggage_biz_key=key)


def test_a_bad_baggage_key_names_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={"ERRTRACE_BAGGAGE_BIZ_KEY": "biz code"})
    assert str(info.value) == (
        "baggage_biz_key: 'biz code' is not a valid baggage key (an RFC 7230 token) "
        "(from environment variable ERRTRACE_BAGGAGE_BIZ_KEY)"
    )
    path = tmp_path / "errtrace.yaml"
    path.write_text('baggage_biz_key: "biz code"\n')
    with pytest.raises(ConfigError, match=rf"\(from {path}\)$"):
        Config.load(path, env={})


def test_a_token_baggage_key_goes_out_as_a_member_w3c_parsers_keep() -> None:
    settings = Config(baggage_biz_key="tenant_id").propagation
    ctx = extract({"x-biz-code": "tenant-42", "baggage": "user=alice"}, dict_getter, settings)
    headers: dict[str, str] = {}
    inject(ctx, headers, dict_setter, settings)
    assert ("tenant_id", "tenant-42", "") in parse_baggage([headers["baggage"]])


# --- ErrorEvent.as_dict --------------------------------------------------------------------


def test_event_as_dict_is_json_ready_and_never_raises() -> None:
    lock = threading.Lock()
    event = errtrace.report(
        "AI_CACHE_MISS", "miss", key=b"k1", at=datetime.datetime(2024, 1, 1), lock=lock,
        score=math.nan, pairs={(1, 2): 3}, ids=(1, 2),
    )
    data = event.as_dict()
    text = json.dumps(data, allow_nan=False)  # a strict encoder takes it as it is
    details = strict(text)["details"]
    assert details["key"] == "b'k1'" and details["at"] == "2024-01-01 00:00:00"
    assert details["lock"] == str(lock) and details["score"] is None
    assert details["pairs"] == {"(1, 2)": 3} and details["ids"] == [1, 2]
    # The same values as the problem+json encoder writes for them.
    assert details == strict(problem_json({"details": event.details}))["details"]
    assert data["code"] == "AI_CACHE_MISS" and data["message"] == "miss"
    data["details"]["key"] = "changed"  # a copy
    assert event.details["key"] == b"k1"


# --- errtrace.report -------------------------------------------------------------------------


def test_report_takes_its_code_and_message_by_position_only() -> None:
    params = inspect.signature(errtrace.report).parameters
    assert params["code"].kind is inspect.Parameter.POSITIONAL_ONLY
    assert params["message"].kind is inspect.Parameter.POSITIONAL_ONLY


def test_report_records_details_of_any_name() -> None:
    event = errtrace.report("AI_CACHE_MISS", "miss", code="sku-42", message="m", self="s")
    assert event.code == "AI_CACHE_MISS"
    assert event.details == {"code": "sku-42", "message": "m", "self": "s"}


def test_a_fallbacks_json_answer_is_strict_json_too() -> None:
    errtrace.set_fallback("AI_GPU_OUT_OF_MEMORY",
                          lambda err, ctx: {"score": math.nan, "items": [math.inf]})

    def app(environ: Any, start_response: Any) -> Any:
        raise errtrace.AppError("AI_GPU_OUT_OF_MEMORY")

    r = Client(ErrtraceWSGIMiddleware(app)).get("/")
    assert r.status_code == 200 and r.headers["X-Errtrace-Fallback"] == "AI_GPU_OUT_OF_MEMORY"
    assert strict(r.get_data()) == {"score": None, "items": [None]}
