"""Shared fixtures: every test starts with no context, no hooks, no events, no counters."""

from __future__ import annotations

from collections.abc import Iterator

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
