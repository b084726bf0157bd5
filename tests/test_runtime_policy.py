"""Level policy, hooks in a failsafe, fallbacks, report(), event ids, config, logging."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import errtrace
from errtrace.core.config import Config, ConfigError
from errtrace.core.context import ErrorContext, bind, current, reset
from errtrace.core.errors import RemoteError
from errtrace.core.ids import new_event_id
from errtrace.core.policy import policy
from errtrace.core.runtime import Runtime


def new_ctx() -> ErrorContext:
    return ErrorContext(trace_id="c" * 32, span_id="d" * 16, biz_code="payment")


CTX = new_ctx()


def test_hook_failure_is_contained_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    def bad_hook(event: Any, ctx: Any) -> None:
        raise RuntimeError("hook bug")

    errtrace.on_error(bad_hook)
    runtime = Runtime(Config())
    failure = runtime.fail(errtrace.AppError("NOT_FOUND"), CTX, transport="http")
    assert failure.error.code == "NOT_FOUND"
    assert errtrace.stats()["hook_failures"] == 1
    assert "hook bug" in caplog.text


def test_alert_runs_for_critical_levels_only() -> None:
    alerts: list[str] = []
    errtrace.on_alert(lambda event, ctx: alerts.append(event.code))
    runtime = Runtime(Config())
    runtime.fail(errtrace.AppError("AI_MODEL_LOAD_FAILED"), CTX, transport="http")
    runtime.fail(errtrace.AppError("NOT_FOUND"), CTX, transport="http")
    assert alerts == ["AI_MODEL_LOAD_FAILED"]


def test_fallback_result_becomes_the_answer_and_failures_do_not() -> None:
    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", lambda err, ctx: {"model": "small"})
    runtime = Runtime(Config())
    failure = runtime.fail(errtrace.AppError("AI_MODEL_LOAD_FAILED"), CTX, transport="http")
    assert failure.has_fallback and failure.fallback_result == {"model": "small"}
    assert failure.event.fallback == "applied"

    def broken(err: Any, ctx: Any) -> None:
        raise RuntimeError("fallback bug")

    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", broken)
    failure = runtime.fail(errtrace.AppError("AI_MODEL_LOAD_FAILED"), CTX, transport="http")
    assert not failure.has_fallback and failure.event.fallback == "failed"


def test_no_fallback_after_response_started() -> None:
    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", lambda err, ctx: {"x": 1})
    failure = Runtime(Config()).fail(
        errtrace.AppError("AI_MODEL_LOAD_FAILED"), CTX, transport="http", response_started=True
    )
    assert not failure.has_fallback


def test_exit_only_for_level_0_and_only_when_enabled() -> None:
    exits: list[str] = []
    runtime = Runtime(Config(exit_on_fatal=True))
    runtime.exit_handler = lambda: exits.append("exit")
    runtime.after_response(runtime.fail(errtrace.AppError("AI_PROCESS_UNSAFE"), CTX, transport="x"))
    runtime.after_response(runtime.fail(errtrace.AppError("INTERNAL"), CTX, transport="x"))
    assert exits == ["exit"]
    off = Runtime(Config())
    off.exit_handler = lambda: exits.append("off")
    off.after_response(off.fail(errtrace.AppError("AI_PROCESS_UNSAFE"), CTX, transport="x"))
    assert exits == ["exit"]
    with pytest.raises(ValueError, match="level 0"):
        policy.set_level_actions(1, ["log", "exit"])


def test_a_dependencys_level_0_answer_does_not_stop_this_process() -> None:
    from errtrace.core.encoding import from_http_response

    exits: list[str] = []
    runtime = Runtime(Config(exit_on_fatal=True))
    runtime.exit_handler = lambda: exits.append("exit")
    answers = [
        from_http_response(500, {"content-type": "application/json"},
                           b'{"code": "AI_PROCESS_UNSAFE", "event_id": "E1"}'),
        from_http_response(500, {"x-error-code": "THEIR_OWN_CODE", "x-error-level": "0"}, b""),
    ]
    for remote in answers:
        assert remote is not None and remote.remote is not None
        failure = runtime.fail(remote, CTX, transport="http")
        # The code and level travel on to this service's caller as they came...
        assert failure.event.level == 0 and failure.event.http_status == 500
        runtime.after_response(failure)
    # ...but only the process that raised a level 0 error is unsafe, not its callers.
    assert exits == []
    runtime.after_response(runtime.fail(errtrace.AppError("AI_PROCESS_UNSAFE"), CTX, transport="x"))
    assert exits == ["exit"]


def test_a_failed_answer_claiming_a_non_failing_level_counts_as_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from errtrace.core.encoding import from_http_response

    remote = from_http_response(500, {"x-error-code": "DB_DOWN", "x-error-level": "5"}, b"")
    assert remote is not None
    assert remote.code == "DB_DOWN" and remote.level == 2 and remote.http_status == 500
    with caplog.at_level(logging.INFO, logger="errtrace"):
        failure = Runtime(Config()).fail(remote, CTX, transport="http")
    assert failure.event.http_status == 500 and failure.event.level == 2
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    # Without an error status the remote's own level stands (a report passed on).
    assert errtrace.AppError(
        "THEIR_NOTICE", remote=RemoteError(code="THEIR_NOTICE", level=5)
    ).level == 5


def test_code_actions_override_level_actions() -> None:
    alerts: list[str] = []
    errtrace.on_alert(lambda event, ctx: alerts.append(event.code))
    policy.set_code_actions("NOT_FOUND", ["log", "alert"])
    Runtime(Config()).fail(errtrace.AppError("NOT_FOUND"), CTX, transport="http")
    assert alerts == ["NOT_FOUND"]
    with pytest.raises(ValueError, match="unknown action"):
        policy.set_code_actions("NOT_FOUND", ["page-the-ceo"])


def test_report_records_without_raising_or_touching_err_code() -> None:
    ctx = new_ctx()
    token = bind(ctx)
    try:
        with errtrace.testing.capture_events() as events:
            event = errtrace.report("AI_LATENCY_DEGRADED", "p99 above 2s", p99_ms=2300)
            errtrace.report("NO_SUCH_CODE_ANYWHERE")
    finally:
        reset(token)
    assert [e.code for e in events] == ["AI_LATENCY_DEGRADED", "NO_SUCH_CODE_ANYWHERE"]
    assert event.level == 4 and event.http_status is None
    assert event.trace_id == "c" * 32 and event.details == {"p99_ms": 2300}
    assert event.transport == "report"
    assert ctx.err_code is None
    assert errtrace.stats()["report_unknown_code"] == 1


def test_event_ids_unique_and_time_sortable() -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        local = [new_event_id() for _ in range(2000)]
        with lock:
            ids.extend(local)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 8000
    sequential = [new_event_id() for _ in range(1000)]
    assert sequential == sorted(sequential)
    assert all(len(i) == 26 for i in sequential)



def _decode_crockford(text: str) -> int:
    digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = 0
    for char in text:
        value = value * 32 + digits.index(char)
    return value


def test_event_id_layout_and_monotonic_across_rollover_and_clock_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from errtrace.core import ids as ids_module

    clock = [1_700_000_000_123_000_000]
    monkeypatch.setattr(ids_module.time, "time_ns", lambda: clock[0])
    gen = ids_module._EventIds()
    first = gen.new()
    # 48 bits of milliseconds, then 80 random bits: the ULID layout, readable back.
    assert _decode_crockford(first) >> 80 == 1_700_000_000_123
    assert _decode_crockford(first) & ((1 << 80) - 1) == gen._last_rand
    # Same millisecond: the random part is incremented.
    second = gen.new()
    assert _decode_crockford(second) == _decode_crockford(first) + 1
    # The increment carries past the last two digits: the digits before them change too.
    gen._last_rand = (12345 << 10) | 1023
    carried = gen.new()
    assert _decode_crockford(carried) == (1_700_000_000_123 << 80) | (12346 << 10)
    assert [_decode_crockford(gen.new()) & 1023 for _ in range(2)] == [1, 2]
    # The random part wraps: the id moves to the next millisecond and stays ordered.
    gen._last_rand = (1 << 80) - 1
    wrapped = gen.new()
    assert wrapped > carried
    assert _decode_crockford(wrapped) == (1_700_000_000_124 << 80)
    # The clock steps back: ids keep increasing.
    clock[0] -= 5_000_000_000
    stepped = [gen.new() for _ in range(3)]
    assert stepped == sorted(stepped) and stepped[0] > wrapped
    # The clock moves on: a fresh random part under the new time.
    clock[0] += 10_000_000_000
    later = gen.new()
    assert later > stepped[-1] and _decode_crockford(later) >> 80 == 1_700_000_005_123


def test_recorded_event_carries_every_field_of_the_error_and_its_context() -> None:
    runtime = Runtime(Config(service_name="svc-a"))
    ctx = ErrorContext(
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "1111111111111111",
        biz_code="biz-1", outgoing_spans=["2222222222222222"],
    )
    remote = RemoteError(
        code="LLM_RATE_LIMITED", event_id="01REMOTEEVENT", span_id="3333333333333333",
        service="svc-b",
    )
    err = errtrace.AppError(
        "LLM_RATE_LIMITED", "slow down", remote=remote,
        details={"retry_after": 3, "_provider_text": "Rate limit reached"},
        cause=KeyError("k"),
    )
    event = runtime.record(
        err, ctx, transport="grpc", method="/svc/Call", route="/r", response_started=True
    )
    assert event.as_dict() == {
        "event_id": err.event_id,
        "timestamp": event.timestamp,
        "code": "LLM_RATE_LIMITED",
        "level": 2,
        "title": err.error_code.title,
        "message": "slow down",
        "http_status": 429,
        "grpc_status": "RESOURCE_EXHAUSTED",
        "retryable": True,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "1111111111111111",
        "biz_code": "biz-1",
        "service": "svc-a",
        "transport": "grpc",
        "method": "/svc/Call",
        "route": "/r",
        "exception_type": "KeyError",
        "details": {"retry_after": 3},
        "caused_by": [
            {"code": "LLM_RATE_LIMITED", "event_id": "01REMOTEEVENT",
             "span_id": "3333333333333333", "service": "svc-b"}
        ],
        "outgoing_spans": ["2222222222222222"],
        "response_started": True,
        "fallback": None,
        "private_exception": "KeyError: 'k'",
        "private_provider_text": "Rate limit reached",
    }
    assert abs(event.timestamp - time.time()) < 60
    assert (ctx.err_code, ctx.event_id) == ("LLM_RATE_LIMITED", err.event_id)


# --- config ------------------------------------------------------------------------------


def test_config_precedence_kwargs_env_file(tmp_path: Path) -> None:
    path = tmp_path / "errtrace.yaml"
    path.write_text(
        "errtrace:\n  service_name: from-file\n  debug: true\n  max_header_bytes: 4096\n"
    )
    env = {"ERRTRACE_SERVICE_NAME": "from-env", "ERRTRACE_CONFIG_FILE": str(path)}
    config = Config.load(env=env, max_header_bytes=1024)
    assert config.service_name == "from-env"
    assert config.debug is True
    assert config.max_header_bytes == 1024


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ERRTRACE_DEBG": "1"}, "did you mean ERRTRACE_DEBUG"),
        ({"ERRTRACE_DEBUG": "maybe"}, "ERRTRACE_DEBUG: 'maybe' is not a boolean"),
        ({"ERRTRACE_MAX_HEADER_BYTES": "lots"}, "not an integer"),
        ({"ERRTRACE_MAX_HEADER_BYTES": "0"}, "positive integer"),
    ],
)
def test_bad_env_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.load(env=env)


def test_bad_kwargs_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'debug'"):
        Config.load(env={}, debg=True)
    with pytest.raises(ConfigError, match="biz_pattern"):
        Config(biz_pattern="(")
    with pytest.raises(ConfigError, match="biz_header"):
        Config(biz_header="bad header")
    path = tmp_path / "c.yaml"
    path.write_text("servce_name: x\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*'servce_name'; did you mean 'service_name'"):
        Config.load(path, env={})


def test_debug_off_by_default() -> None:
    assert Config.load(env={}).debug is False


def test_rewrite_responses_prefixes() -> None:
    config = Config(rewrite_responses=["/llm"])  # type: ignore[arg-type]
    assert config.rewrites("/llm/chat") and not config.rewrites("/health")
    loaded = Config.load(env={"ERRTRACE_REWRITE_RESPONSES": "/a,/b"})
    assert loaded.rewrite_responses == ("/a", "/b")


# --- logging -----------------------------------------------------------------------------


def test_logging_filter_adds_context_fields() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(errtrace.ContextFilter())
    logger = logging.getLogger("test.errtrace.filter")
    logger.addHandler(handler)
    try:
        logger.warning("outside")
        ctx = ErrorContext(trace_id="e" * 32, span_id="f" * 16, biz_code="b1", err_code="TIMEOUT")
        token = bind(ctx)
        try:
            logger.warning("inside")
        finally:
            reset(token)
    finally:
        logger.removeHandler(handler)
    outside, inside = records
    assert outside.trace_id == "-"  # type: ignore[attr-defined]
    assert (inside.trace_id, inside.span_id, inside.biz_code, inside.err_code) == (  # type: ignore[attr-defined]
        "e" * 32, "f" * 16, "b1", "TIMEOUT",
    )


def test_unhandled_exception_logged_once_with_stack(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="errtrace")
    try:
        raise ValueError("kaboom")
    except ValueError as exc:
        Runtime(Config()).fail(exc, CTX, transport="http", method="GET", route="/r")
    records = [r for r in caplog.records if r.name == "errtrace"]
    assert len(records) == 1
    assert records[0].exc_info is not None and "kaboom" in caplog.text
    assert records[0].levelno == logging.ERROR


def test_current_is_none_outside_a_request() -> None:
    assert current() is None
    assert errtrace.outgoing_headers()["traceparent"].startswith("00-")


def test_an_async_fallback_on_a_server_that_cannot_await_it_fails_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import warnings

    async def cached(err: errtrace.AppError, ctx: Any) -> dict[str, str]:
        return {"answer": "cached"}

    errtrace.set_fallback("AI_MODEL_LOAD_FAILED", cached)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine never awaited would warn here
        failure = Runtime(Config()).fail(
            errtrace.AppError("AI_MODEL_LOAD_FAILED"), CTX, transport="grpc"
        )
    assert not failure.has_fallback and failure.event.fallback == "failed"
    assert any("coroutine function" in r.getMessage() for r in caplog.records)


def test_exception_groups_of_one_error_are_translated_as_that_error() -> None:
    import builtins

    from errtrace.core.errors import to_app_error

    ExceptionGroup = getattr(builtins, "ExceptionGroup", None)
    if ExceptionGroup is None:
        pytest.skip("exception groups are new in Python 3.11")
    inner = errtrace.AppError("NOT_FOUND")
    assert to_app_error(ExceptionGroup("tasks", [inner])) is inner
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [TimeoutError("slow")])])
    assert to_app_error(nested).code == "TIMEOUT"
    two = ExceptionGroup("tasks", [inner, TimeoutError("slow")])
    assert to_app_error(two).code == "INTERNAL"
