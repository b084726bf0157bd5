"""``on_error``/``on_alert`` hooks defined with ``async def``: run on the event loop where
one runs, never silently dropped where none does."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask

import errtrace

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_fastapi() -> FastAPI:
    app = FastAPI()

    @app.get("/limited")
    async def limited() -> None:
        raise errtrace.AppError("LLM_RATE_LIMITED")

    @app.get("/fatal")
    async def fatal() -> None:
        raise errtrace.AppError("AI_GPU_OUT_OF_MEMORY")

    return errtrace.instrument(app)


async def _settle(condition: Any) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_an_async_on_error_hook_runs_on_the_apps_loop() -> None:
    shipped: list[tuple[str, str | None, str]] = []

    @errtrace.on_error
    async def ship(event: Any, ctx: Any) -> None:
        await asyncio.sleep(0)
        shipped.append((event.code, event.trace_id, ctx.trace_id))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_fastapi()),
                                 base_url="http://test") as c:
        r = await c.get("/limited")
        await _settle(lambda: shipped)
    assert r.status_code == 429
    trace_id = r.headers["x-trace-id"]
    assert shipped == [("LLM_RATE_LIMITED", trace_id, trace_id)]
    assert errtrace.stats().get("hook_failures", 0) == 0


async def test_an_async_on_alert_hook_runs_and_its_failure_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alerted: list[str] = []

    @errtrace.on_alert
    async def page(event: Any, ctx: Any) -> None:
        alerted.append(event.code)
        raise ConnectionError("the pager is down")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_fastapi()),
                                 base_url="http://test") as c:
        r = await c.get("/fatal")  # level 1: alerts
        await _settle(lambda: errtrace.stats().get("hook_failures"))
    assert r.status_code == 503  # the hook's failure never changes the answer
    assert alerted == ["AI_GPU_OUT_OF_MEMORY"]
    assert errtrace.stats()["hook_failures"] == 1
    assert any("on_alert hook" in rec.getMessage() and rec.exc_info
               for rec in caplog.records)


def test_an_async_hook_where_no_loop_runs_is_reported_not_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    @errtrace.on_error
    async def ship(event: Any, ctx: Any) -> None:
        ran.append(event.code)

    app = Flask(__name__)

    @app.get("/limited")
    def limited() -> None:
        raise errtrace.AppError("LLM_RATE_LIMITED")

    errtrace.instrument(app)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.ERROR, logger="errtrace"):
            r = app.test_client().get("/limited")
        gc.collect()
    assert r.status_code == 429 and r.json is not None
    assert r.json["code"] == "LLM_RATE_LIMITED"
    assert ran == []
    assert errtrace.stats()["hook_failures"] == 1
    assert any("is async and no event loop runs here" in rec.getMessage()
               for rec in caplog.records)
    # The coroutine was closed, not left for the garbage collector to complain about.
    assert not [w for w in caught if "never awaited" in str(w.message)]
