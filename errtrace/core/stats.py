"""Process-wide counters of what errtrace dropped, rejected or failed at.

Counted, not logged per occurrence, so that a flood of bad input cannot flood logs.
Read them with ``errtrace.stats()``; names are stable (see README, "Counters").
"""

from __future__ import annotations

import threading
from collections import Counter

MAX_COUNTERS = 2048
"""Distinct counter names kept; past them, counts go to ``counters_over_limit``. Some
names come from other services (``errors.<CODE>`` for the codes they answer with), so
their number must not grow without bound."""


class Stats:
    """Thread-safe named counters."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def incr(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``."""
        with self._lock:
            counts = self._counts
            if name in counts or len(counts) < MAX_COUNTERS:
                counts[name] += amount
            else:
                counts["counters_over_limit"] += amount

    def get(self, name: str) -> int:
        """The value of one counter (0 if never incremented)."""
        return self._counts.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        """A copy of all counters."""
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        """Reset every counter (tests)."""
        with self._lock:
            self._counts.clear()


stats = Stats()
