"""Process-wide counters of what errtrace dropped, rejected or failed at.

Counted, not logged per occurrence, so that a flood of bad input cannot flood logs.
Read them with ``errtrace.stats()``; names are stable (see README, "Counters").
"""

from __future__ import annotations

import threading
from collections import Counter


class Stats:
    """Thread-safe named counters."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def incr(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``."""
        with self._lock:
            self._counts[name] += amount

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
