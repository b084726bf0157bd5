"""Untrusted inbound values that used to escape errtrace's checks.

* A ``Retry-After`` HTTP-date with a huge year or zone offset made the date parser
  raise OverflowError, out of the httpx adapter and out of a response rewrite.
* A permissive user ``biz_pattern`` let a biz code with non-ASCII or control
  characters through; echoed in the outgoing ``X-Biz-Code`` header it failed every
  outgoing call of the request.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import errtrace
from errtrace.adapters.httpx import error_from_response
from errtrace.core.encoding import from_http_response
from errtrace.core.errors import AppError, error_for_http_status
from errtrace.core.propagation import extract_pairs
from errtrace.core.runtime import Runtime
from errtrace.core.status import parse_retry_after

# --- Retry-After ------------------------------------------------------------------------

OVERFLOWING_DATES = [
    "Mon, 01 Jan 2020 00:00:00 +99999999999999",  # zone offset past a C int
    "Mon, 01 Jan 2020 00:00:00 -99999999999999",
    "Mon, 01 Jan 99999999999999999 00:00:00 GMT",  # year past a C int
    "Mon, 01 Jan 2020 99999999999999:00:00 GMT",
    "Mon, 99999999999999 Jan 2020 00:00:00 GMT",
]


@pytest.mark.parametrize("value", OVERFLOWING_DATES)
def test_an_overflowing_retry_after_date_is_ignored(value: str) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize("value", OVERFLOWING_DATES[:3])
def test_an_upstream_error_with_an_overflowing_retry_after_decodes(value: str) -> None:
    headers = {"retry-after": value, "x-error-code": "UPSTREAM_UNAVAILABLE"}
    err = from_http_response(503, headers, b"")
    assert isinstance(err, AppError)
    assert err.code == "UPSTREAM_UNAVAILABLE"
    assert err.retry_after is None
    # The httpx adapter reads Retry-After after decoding: that is where it escaped.
    request = httpx.Request("GET", "http://upstream.test/v1")
    err = error_from_response(httpx.Response(503, headers=headers, request=request))
    assert err.code == "UPSTREAM_UNAVAILABLE"
    assert err.retry_after is None


@pytest.mark.parametrize("value", OVERFLOWING_DATES[:3])
def test_a_framework_error_with_an_overflowing_retry_after_keeps_it_as_set(value: str) -> None:
    err = error_for_http_status(503, headers={"Retry-After": value})
    assert err.retry_after is None
    assert err.headers["Retry-After"] == value


@pytest.mark.parametrize("value", OVERFLOWING_DATES[:3])
def test_a_rewrite_with_an_overflowing_retry_after_still_classifies(value: str) -> None:
    runtime = Runtime(errtrace.Config())
    err = runtime.rewrite_response(
        429, [("retry-after", value), ("content-type", "text/plain")], b"Rate limit reached"
    )
    assert isinstance(err, AppError)
    assert err.code == "LLM_RATE_LIMITED"
    assert err.retry_after is None


# --- biz code under a permissive pattern ----------------------------------------------

WORDS = r"^[\w.:-]{1,64}$"  # \w is Unicode: it matches "é" or Arabic-Indic digits
ANYTHING = r"^.{1,64}$"  # `.` also matches spaces and control characters
PERMISSIVE = [WORDS, ANYTHING]

# Each matches its pattern (so each is kept without the header-value check); none
# can be written into a header.
NON_ASCII_PAIRS = [
    [(b"baggage", b"biz.code=caf%C3%A9")],  # decodes to "café"
    [(b"x-biz-code", b"caf\xe9")],  # latin-1 "café"
    [(b"baggage", b"biz.code=tenant-%D9%A4%D9%A2")],  # Arabic-Indic digits
]
CONTROL_PAIRS = [  # `.` matches all of these; \w none
    [(b"x-biz-code", b"caf\xc3\xa9")],  # UTF-8 bytes read as latin-1: "cafÃ©"
    [(b"baggage", b"biz.code=t1%0DX")],  # decodes to "t1\rX"
    [(b"baggage", b"biz.code=t1%00X")],
    [(b"baggage", b"biz.code=t1%1FX")],
    [(b"baggage", b"biz.code=t1%7FX")],  # DEL
    [(b"x-biz-code", b"t1\x85X")],  # NEL
    [(b"baggage", b"biz.code=a%20b")],  # a space inside
]
UNSENDABLE = [
    *((WORDS, pairs) for pairs in NON_ASCII_PAIRS),
    *((ANYTHING, pairs) for pairs in NON_ASCII_PAIRS + CONTROL_PAIRS),
]


def _rejected() -> int:
    return errtrace.stats().get("biz_code_rejected", 0)


@pytest.mark.parametrize(("pattern", "pairs"), UNSENDABLE)
def test_an_unsendable_biz_code_is_dropped_whatever_the_pattern(
    pattern: str, pairs: list[tuple[bytes, bytes]]
) -> None:
    settings = errtrace.Config(biz_pattern=pattern).propagation
    before = _rejected()
    assert extract_pairs(pairs, settings).biz_code is None
    assert _rejected() == before + 1
    # The verdict is memoised: a second request is dropped and counted the same way.
    assert extract_pairs(pairs, settings).biz_code is None
    assert _rejected() == before + 2


@pytest.mark.parametrize(("pattern", "pairs"), UNSENDABLE[:4])
def test_the_runtime_drops_an_unsendable_biz_code(
    pattern: str, pairs: list[tuple[bytes, bytes]]
) -> None:
    runtime = Runtime(errtrace.Config(biz_pattern=pattern))
    assert runtime.start_pairs(pairs).biz_code is None
    assert _rejected() == 1


@pytest.mark.parametrize("pattern", PERMISSIVE)
@pytest.mark.parametrize(
    "pairs",
    [
        [(b"x-biz-code", b"tenant-42")],
        [(b"baggage", b"biz.code=tenant-42")],
        [(b"x-biz-code", b" tenant-42\t")],  # optional whitespace around it is trimmed
    ],
)
def test_a_sendable_biz_code_passes_a_permissive_pattern(
    pattern: str, pairs: list[tuple[bytes, bytes]]
) -> None:
    runtime = Runtime(errtrace.Config(biz_pattern=pattern))
    assert runtime.start_pairs(pairs).biz_code == "tenant-42"
    assert runtime.start_pairs(pairs).biz_code == "tenant-42"  # memoised verdict
    assert _rejected() == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    ("pattern", "headers"),
    [
        (WORDS, {"baggage": "biz.code=caf%C3%A9"}),
        (WORDS, {"x-biz-code": b"caf\xe9"}),
        (ANYTHING, {"baggage": "biz.code=caf%C3%A9"}),
        (ANYTHING, {"baggage": "biz.code=t1%0DX"}),
        (ANYTHING, {"x-biz-code": b"caf\xc3\xa9"}),
    ],
)
async def test_outgoing_headers_never_carry_an_unsendable_biz_code(
    pattern: str, headers: dict[str, Any], anyio_backend: str
) -> None:
    from fastapi import FastAPI

    app = errtrace.instrument(FastAPI(), biz_pattern=pattern)

    @app.get("/out")
    async def out() -> dict[str, str]:
        return errtrace.outgoing_headers()

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/out", headers=headers)
    assert r.status_code == 200
    sent = r.json()
    assert "x-biz-code" not in {name.lower() for name in sent}
    # What is sent must be sendable: httpx refuses a value it cannot encode as ASCII.
    httpx.Request("GET", "http://upstream.test", headers=sent)
    assert all(value.isascii() and value.isprintable() for value in sent.values())
    assert _rejected() == 1
