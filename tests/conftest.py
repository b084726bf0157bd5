"""Shared fixtures: every test starts with no context, no hooks, no events, no counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from errtrace.core import context as _context
from errtrace.core import runtime as _runtime
from errtrace.core.events import events
from errtrace.core.ids import set_id_generator
from errtrace.core.policy import policy
from errtrace.core.stats import stats


@pytest.fixture(autouse=True)
def _isolated_errtrace() -> Iterator[None]:
    token = _context.bind(None)
    events.clear()
    stats.clear()
    policy.clear_hooks()
    saved_default = _runtime._default
    try:
        yield
    finally:
        _context.reset(token)
        policy.clear_hooks()
        set_id_generator(None)
        _runtime.set_default_runtime(saved_default)


TRACEPARENT = "00-12345678901234567890123456789012-1234567890123456-01"
TRACE_ID = "12345678901234567890123456789012"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 (an OS-chosen port) in a thread; its URL."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    if not wait_until(lambda: server.started, timeout=10):
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
