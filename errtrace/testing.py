"""Helpers for testing apps that use errtrace.

``capture_events()`` collects the error events recorded while it is open;
``FixedIds`` makes trace and span ids predictable.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from errtrace.core.events import ErrorEvent, events
from errtrace.core.ids import set_id_generator


@contextmanager
def capture_events() -> Iterator[list[ErrorEvent]]:
    """Yield a list that receives every error event recorded inside the ``with`` block."""
    captured: list[ErrorEvent] = []
    unsubscribe = events.subscribe(captured.append)
    try:
        yield captured
    finally:
        unsubscribe()


class FixedIds:
    """Deterministic ids: trace ids ``...0001``, ``...0002`` and span ids likewise."""

    def __init__(self, start: int = 1) -> None:
        self._traces = itertools.count(start)
        self._spans = itertools.count(start)

    def trace_id(self) -> str:
        """The next trace id."""
        return f"{next(self._traces):032x}"

    def span_id(self) -> str:
        """The next span id."""
        return f"{next(self._spans):016x}"


@contextmanager
def fixed_ids(start: int = 1) -> Iterator[FixedIds]:
    """Use :class:`FixedIds` inside the ``with`` block."""
    generator = FixedIds(start)
    set_id_generator(generator)
    try:
        yield generator
    finally:
        set_id_generator(None)


__all__ = ["FixedIds", "capture_events", "fixed_ids"]
