"""Exceptions that carry their own gRPC status (grpc-interceptor's ``NotFound`` and its
kin) answer with that status and text, whichever order the interceptors are listed in.

Real servers on 127.0.0.1 (sync and aio), a plain client reading the rich details with
``grpc_status.rpc_status.from_call``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc import error_details_pb2
from grpc_interceptor import AsyncExceptionToStatusInterceptor, ExceptionToStatusInterceptor
from grpc_interceptor.exceptions import FailedPrecondition, GrpcException, NotFound

import errtrace
from errtrace.core.errors import to_app_error
from errtrace.grpc_interceptors._status import error_from_status_exception
from errtrace.testing import capture_events
from tests.conftest import TRACE_ID, TRACEPARENT
from tests.grpc_helpers import AioServerThread, Result, echo_handler, invoke, sync_server

RAISED: dict[str, GrpcException] = {
    "missing": NotFound("no user 42"),
    "precondition": FailedPrecondition("the account is frozen"),
}


def _sync_unary(request: StringValue, context: Any) -> StringValue:
    raise RAISED[request.value]


def _sync_stream(request: StringValue, context: Any) -> Iterator[StringValue]:
    yield StringValue(value="one")
    raise RAISED[request.value]


async def _aio_unary(request: StringValue, context: Any) -> StringValue:
    raise RAISED[request.value]


async def _aio_stream(request: StringValue, context: Any) -> AsyncIterator[StringValue]:
    yield StringValue(value="one")
    raise RAISED[request.value]


def _serve(mode: str, order: str) -> Any:
    if mode == "sync":
        ours: list[Any] = errtrace.grpc_server_interceptors()
        theirs: Any = ExceptionToStatusInterceptor()
        methods: dict[str, Any] = {"Unary": _sync_unary, "ServerStream": _sync_stream}
    else:
        ours = errtrace.grpc_aio_server_interceptors()
        theirs = AsyncExceptionToStatusInterceptor()
        methods = {"Unary": _aio_unary, "ServerStream": _aio_stream}
    chain = {
        "errtrace-alone": ours,
        "grpc-interceptor-first": [theirs, *ours],
        "errtrace-first": [*ours, theirs],
    }[order]
    if mode == "sync":
        return sync_server(chain, echo_handler(methods))
    return AioServerThread(chain, echo_handler(methods))


def _error_info(result: Result) -> error_details_pb2.ErrorInfo | None:
    from grpc_status import rpc_status

    status = rpc_status.from_call(result.call)  # also checks it agrees with the call's
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


@pytest.mark.parametrize("order", ["errtrace-alone", "grpc-interceptor-first", "errtrace-first"])
@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("kind", ["Unary", "ServerStream"])
@pytest.mark.parametrize(
    ("command", "status", "text", "code"),
    [
        ("missing", grpc.StatusCode.NOT_FOUND, "no user 42", "NOT_FOUND"),
        ("precondition", grpc.StatusCode.FAILED_PRECONDITION, "the account is frozen",
         "BAD_REQUEST"),
    ],
)
def test_the_exceptions_own_status_and_text_reach_the_client(
    mode: str, order: str, kind: str, command: str, status: grpc.StatusCode, text: str,
    code: str,
) -> None:
    with _serve(mode, order) as port, grpc.insecure_channel(
        f"127.0.0.1:{port}"
    ) as channel, capture_events() as events:
        result = invoke(channel, kind, command, metadata=[("traceparent", TRACEPARENT)])

    assert result.code is status
    assert result.call.details() == text
    assert result.trailing()["x-trace-id"] == TRACE_ID
    assert result.values == (["one"] if kind == "ServerStream" else [])
    info = _error_info(result)
    if order == "errtrace-first":
        # grpc-interceptor answers first, with context.abort: a handler's own abort,
        # which errtrace passes on untouched (trace id added) and does not record.
        assert info is None
        assert events == []
    else:
        assert info is not None and info.reason == code
        assert info.metadata["traceId"] == TRACE_ID
        [event] = events
        assert event.code == code
        assert info.metadata["eventId"] == event.event_id


def test_debug_answer_keeps_the_status_too() -> None:
    with sync_server(
        errtrace.grpc_server_interceptors(debug=True),
        echo_handler({"Unary": _sync_unary}),
    ) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        result = invoke(channel, "Unary", "precondition")
    assert result.code is grpc.StatusCode.FAILED_PRECONDITION
    info = _error_info(result)
    assert info is not None and info.reason == "BAD_REQUEST"


@pytest.mark.parametrize(
    ("status", "code", "http"),
    [
        ("INVALID_ARGUMENT", "BAD_REQUEST", 400),
        ("OUT_OF_RANGE", "BAD_REQUEST", 400),
        ("ALREADY_EXISTS", "CONFLICT", 409),
        ("ABORTED", "CONFLICT", 409),
        ("PERMISSION_DENIED", "PERMISSION_DENIED", 403),
        ("UNAUTHENTICATED", "UNAUTHENTICATED", 401),
        ("RESOURCE_EXHAUSTED", "RATE_LIMITED", 429),
        ("DEADLINE_EXCEEDED", "TIMEOUT", 504),
        ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", 503),
        ("UNIMPLEMENTED", "NOT_IMPLEMENTED", 501),
        ("CANCELLED", "CANCELLED", 499),
        ("UNKNOWN", "INTERNAL", 500),
        ("DATA_LOSS", "INTERNAL", 500),
    ],
)
def test_each_status_gets_the_code_of_its_class(status: str, code: str, http: int) -> None:
    err = to_app_error(GrpcException("said so", status_code=grpc.StatusCode[status]))
    # INTERNAL's text never reaches a client outside debug
    shown = None if code == "INTERNAL" else "said so"
    assert (err.code, err.grpc_status, err.http_status, err.message) == (
        code, status, http, shown
    )
    assert isinstance(err.__cause__, GrpcException)


class _Duck(Exception):
    def __init__(self, status: object, details: object) -> None:
        super().__init__("raw text")
        self.status_code = status
        self.details = details


class _Broken(Exception):
    @property
    def status_code(self) -> grpc.StatusCode:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "exc",
    [
        _Duck(404, "an int status is an HTTP client's, not this"),
        _Duck("NOT_FOUND", "a name is not a StatusCode"),
        _Duck(grpc.StatusCode.OK, "OK is no error"),
        _Broken(),
        ValueError("plain"),
    ],
)
def test_other_exceptions_are_not_taken_for_status_carriers(exc: Exception) -> None:
    assert error_from_status_exception(exc) is None


def test_a_carrier_without_usable_text_has_no_message() -> None:
    err = error_from_status_exception(_Duck(grpc.StatusCode.NOT_FOUND, b"bytes"))
    assert err is not None and err.message is None and err.code == "NOT_FOUND"


def test_app_error_grpc_status_option(caplog: pytest.LogCaptureFixture) -> None:
    err = errtrace.AppError("BAD_REQUEST", "frozen", grpc_status="FAILED_PRECONDITION")
    assert (err.grpc_status, err.http_status, err.level) == ("FAILED_PRECONDITION", 400, 3)
    import pickle

    assert pickle.loads(pickle.dumps(err)).grpc_status == "FAILED_PRECONDITION"
    with caplog.at_level(logging.WARNING, logger="errtrace"):
        for bad in ("OK", "NOPE", 5):
            assert errtrace.AppError("BAD_REQUEST", grpc_status=bad).grpc_status == (  # type: ignore[arg-type]
                "INVALID_ARGUMENT"
            )
    assert len([r for r in caplog.records if "grpc_status" in r.getMessage()]) == 3
