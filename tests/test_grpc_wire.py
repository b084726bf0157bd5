"""The hand-written google.rpc.Status bytes read back, by protobuf, as the message it
would have built itself: for every built-in code, odd text, and delays."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("grpc")

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

import errtrace
from errtrace.core.codes import registry
from errtrace.core.config import Config
from errtrace.core.propagation import new_root_context
from errtrace.grpc_interceptors import _wire
from errtrace.grpc_interceptors._status import (
    DETAILS_KEY,
    decode_status,
    error_status,
)


def _reference(code: int, message: str, reason: str, domain: str,
               metadata: dict[str, str], delay: float | None) -> status_pb2.Status:
    details = []
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata))
    details.append(packed)
    if delay is not None:
        whole = int(delay)
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=whole, nanos=int((delay - whole) * 1e9)))
        packed = any_pb2.Any()
        packed.Pack(retry)
        details.append(packed)
    return status_pb2.Status(code=code, message=message, details=details)


def _ours(code: int, message: str, reason: str, domain: str,
          metadata: dict[str, str], delay: float | None) -> status_pb2.Status:
    details = [(_wire.ERROR_INFO, _wire.error_info(reason, domain, metadata))]
    if delay is not None:
        details.append((_wire.RETRY_INFO, _wire.retry_info(delay)))
    return status_pb2.Status.FromString(_wire.status(code, message, details))


CASES: list[tuple[int, str, str, str, dict[str, str], float | None]] = [
    (14, "A dependency could not be reached.", "UPSTREAM_UNAVAILABLE", "errtrace.dev",
     {"level": "2", "traceId": "ab" * 16, "eventId": "01J0000000000000000000000A"}, 1.0),
    (3, "", "VALIDATION_FAILED", "", {}, None),  # defaults left out
    (13, "ünïcødé ✓ 日本語 " * 20, "INTERNAL", "d", {"k": "", "": "v", "é": "ü"}, None),
    (8, "m" * 300, "LLM_RATE_LIMITED", "errtrace.dev",
     {f"key{i}": "x" * i for i in range(40)}, 2.5),
    (4, "t", "TIMEOUT", "errtrace.dev", {"level": "3"}, 0.000000123),
    (14, "big", "UPSTREAM_UNAVAILABLE", "errtrace.dev", {}, 86400.75),
    (14, "zero", "UPSTREAM_UNAVAILABLE", "errtrace.dev", {}, 0.0),
]


def _unpacked(status: status_pb2.Status) -> tuple[Any, ...]:
    # An Any holds bytes, and map entries may be written in any order: compare the
    # messages inside.
    inner = []
    for item in status.details:
        for klass in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if item.Is(klass.DESCRIPTOR):
                message = klass()
                assert item.Unpack(message)
                inner.append(message)
                break
        else:
            raise AssertionError(f"unexpected detail {item.type_url}")
    return status.code, status.message, inner


@pytest.mark.parametrize("case", CASES, ids=[c[2] + str(i) for i, c in enumerate(CASES)])
def test_wire_bytes_parse_to_the_reference_message(case: Any) -> None:
    ours = _ours(*case)
    assert _unpacked(ours) == _unpacked(_reference(*case))
    assert len(ours.details) == (2 if case[-1] is not None else 1)


def test_lone_surrogate_is_replaced_not_raised() -> None:
    parsed = _ours(13, "bad \ud800 text", "INTERNAL", "d", {"k": "\udfff"}, None)
    assert parsed.message == "bad ? text"
    info = error_details_pb2.ErrorInfo()
    parsed.details[0].Unpack(info)
    assert info.metadata["k"] == "?"


@pytest.mark.parametrize("code_id", sorted(c.id for c in registry))
def test_every_builtin_code_round_trips_through_error_status(code_id: str) -> None:
    config = Config(service_name="svc")
    ctx = new_root_context()
    ctx.biz_code = "tenant-1"
    err = errtrace.AppError(code_id, details={"retry_after": 3.25})
    err.event_id = "01J0000000000000000000000A"
    status = error_status(err, ctx, config)
    rich = dict(status.trailing_metadata)[DETAILS_KEY]
    parsed = status_pb2.Status.FromString(rich)
    assert parsed.code == status.code.value[0] and parsed.message == status.details
    back = decode_status(status.code, status.details, status.trailing_metadata, config)
    assert back.code == code_id and back.remote is not None
    assert back.remote.event_id == err.event_id
    assert back.retryable == err.retryable
    if err.retryable:
        assert back.retry_after == 3.25


# --- the per-code fast path gives the neutral path's bytes ---------------------------------

_CONTEXTS = [
    None,
    "root",  # a new trace, no business code
    "biz",
    "empty-biz",
]


def _context(kind: str | None) -> Any:
    if kind is None:
        return None
    ctx = new_root_context()
    ctx.biz_code = {"root": None, "biz": "tenant-42", "empty-biz": ""}[kind]
    return ctx


@pytest.mark.parametrize("code_id", sorted(c.id for c in registry))
@pytest.mark.parametrize("ctx_kind", _CONTEXTS)
def test_plain_status_matches_the_neutral_path(code_id: str, ctx_kind: str | None) -> None:
    import grpc

    from errtrace.grpc_interceptors._status import _neutral_answer, _plain_answer

    ctx = _context(ctx_kind)
    custom = Config(service_name="mödel ✓", error_code_header="X-Code", event_id_header="Event")
    for config in (Config(service_name="model"), custom):
        for message in (None, 'a "quoted" message, ünïcødé'):
            for event_id in (None, "01J00000000000000000000000"):
                for handler_code in (None, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OK):
                    err = errtrace.AppError(code_id, message)
                    err.event_id = event_id
                    args = (err, ctx, config, handler_code)
                    assert _plain_answer(*args) == _neutral_answer(*args)
        err = errtrace.AppError(code_id, details={"retry_after": 2.5, "_private": "x"})
        assert _plain_answer(err, ctx, config, None) == _neutral_answer(err, ctx, config, None)


def test_error_status_takes_the_neutral_path_when_the_error_carries_more() -> None:
    from errtrace.core.errors import RemoteError

    remote = RemoteError(code="LLM_RATE_LIMITED", event_id="evt-down", service="down")
    chained = errtrace.AppError("LLM_RATE_LIMITED", remote=remote)
    detailed = errtrace.AppError("VALIDATION_FAILED", details={"field": "prompt"})
    for err, config in [
        (chained, Config()),
        (detailed, Config()),
        (errtrace.AppError("INTERNAL", cause=RuntimeError("db down")), Config(debug=True)),
    ]:
        status = error_status(err, new_root_context(), config)
        info = _error_info(status)
        if err is chained:
            assert "causedBy" in info.metadata
        if config.debug:
            assert status.details == "RuntimeError: db down"


def _error_info(status: Any) -> error_details_pb2.ErrorInfo:
    rich = status_pb2.Status.FromString(dict(status.trailing_metadata)[DETAILS_KEY])
    info = error_details_pb2.ErrorInfo()
    rich.details[0].Unpack(info)
    return info


def test_a_code_registered_again_gets_fresh_parts() -> None:
    from errtrace.core.codes import CodeRegistry, ErrorCode

    config = Config(service_name="model")
    first = CodeRegistry([ErrorCode("MY_CODE", 2, grpc_status="UNAVAILABLE", domain="one.dev")])
    second = CodeRegistry([
        ErrorCode("MY_CODE", 3, grpc_status="INVALID_ARGUMENT", domain="two.dev")
    ])
    one = error_status(errtrace.AppError("MY_CODE", codes=first), None, config)
    two = error_status(errtrace.AppError("MY_CODE", codes=second), None, config)
    assert one.code.name == "UNAVAILABLE" and _error_info(one).domain == "one.dev"
    assert two.code.name == "INVALID_ARGUMENT" and _error_info(two).domain == "two.dev"
    assert _error_info(two).metadata["level"] == "3"
    assert dict(two.trailing_metadata)["x-error-level"] == "3"


@pytest.mark.parametrize("details", [{}, {"field": "prompt"}], ids=["plain", "neutral"])
def test_trailers_set_by_the_handler_are_kept_except_errtraces_own(
    details: dict[str, str],
) -> None:
    ctx = new_root_context()
    err = errtrace.AppError("VALIDATION_FAILED", details=details)
    err.event_id = "01J00000000000000000000000"
    existing = (("x-app", "kept"), ("x-error-code", "STALE"), ("x-trace-id", "old"))
    status = error_status(err, ctx, Config(), existing=existing)
    trailers = list(status.trailing_metadata)
    assert trailers[0] == ("x-app", "kept")
    assert dict(trailers) == {
        "x-app": "kept",
        DETAILS_KEY: dict(trailers)[DETAILS_KEY],
        "x-error-code": "VALIDATION_FAILED",
        "x-error-level": "3",
        "x-error-event-id": "01J00000000000000000000000",
        "x-trace-id": ctx.trace_id,
    }
    assert len(trailers) == 6  # nothing doubled


def _trailer_block_size(status: Any) -> int:
    """What gRPC weighs against its metadata limit (``grpc.max_metadata_size``, 8 KiB by
    default): each entry's key and value plus 32 bytes, ``grpc-message`` percent-encoded
    and ``-bin`` values base64-encoded, as they travel."""
    import base64

    raw = status.details.encode("utf-8")
    message = sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in raw)
    size = len("grpc-status") + 2 + 32 + len("grpc-message") + message + 32
    for key, value in status.trailing_metadata:
        size += len(key) + 32
        size += len(base64.b64encode(value)) if key.endswith("-bin") else len(value)
    return size


@pytest.mark.parametrize(
    "text",
    ["x" * 100_000, "%" * 5000, "日本語" * 20_000, "é" * 3000, "\ud800" * 5000, "\n\t" * 4000],
    ids=["ascii", "percent", "cjk", "two-byte", "surrogates", "controls"],
)
@pytest.mark.parametrize("debug", [False, True], ids=["message", "debug-exception"])
def test_a_huge_message_keeps_the_trailers_well_under_grpcs_metadata_limit(
    text: str, debug: bool
) -> None:
    """Past the limit the client gets RESOURCE_EXHAUSTED instead of the error. The worst
    case here also carries the longest ``causedBy`` chain a remote error may add."""
    from errtrace.core.errors import RemoteError

    upstream = tuple({"code": "INTERNAL", "event_id": "e" * 26, "service": "s" * 60}
                     for _ in range(15))
    remote = RemoteError(code="UPSTREAM_ERROR", event_id="evt", service="down",
                         upstream=upstream)
    if debug:
        err = errtrace.AppError("INTERNAL", cause=RuntimeError(text), remote=remote)
    else:
        err = errtrace.AppError("VALIDATION_FAILED", text, remote=remote)
    err.event_id = "01J00000000000000000000000"
    status = error_status(err, new_root_context(), Config(debug=debug, service_name="svc"))
    assert _trailer_block_size(status) < 6 * 1024
    # The message is cut at a character boundary and marked; it fits UTF-8 and is the
    # same in grpc-message and the rich status (grpc_status.rpc_status checks that).
    assert status.details.endswith("...")
    status.details.encode("utf-8")
    assert len(status.details) > 100
    rich = status_pb2.Status.FromString(dict(status.trailing_metadata)[DETAILS_KEY])
    assert rich.message == status.details
    assert "causedBy" in _error_info(status).metadata


def test_a_message_that_fits_is_sent_whole() -> None:
    for text in ["safe message", "ungültig: 你好", "100% %41 done", "x" * 1024, "é" * 170]:
        status = error_status(errtrace.AppError("BAD_REQUEST", text), None, Config())
        assert status.details == text
