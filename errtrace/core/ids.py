"""Trace, span and event id generation.

Trace and span ids are random, as W3C Trace Context Level 2 asks for when the
``random`` trace flag is set. Event ids are ULID-shaped: 48 bits of milliseconds then
80 random bits, Crockford base32, so that they sort by time; within one millisecond
the random part is incremented, so ids from one process are strictly increasing.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Protocol

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 digits per table entry: 10 bits at a time halves the encoding loop.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]


class IdGenerator(Protocol):
    """Source of trace and span ids (swap in ``errtrace.testing.FixedIds`` in tests)."""

    def trace_id(self) -> str:
        """A new 32-hex-digit, non-zero trace id."""
        ...

    def span_id(self) -> str:
        """A new 16-hex-digit, non-zero span id."""
        ...


class RandomIds:
    """Ids from the process's PRNG (reseeded after fork by the ``random`` module)."""

    def trace_id(self) -> str:
        """A new random trace id."""
        value = random.getrandbits(128)
        while not value:
            value = random.getrandbits(128)
        return f"{value:032x}"

    def span_id(self) -> str:
        """A new random span id."""
        value = random.getrandbits(64)
        while not value:
            value = random.getrandbits(64)
        return f"{value:016x}"


class _Generators:
    current: IdGenerator = RandomIds()


def ids() -> IdGenerator:
    """The id generator in use."""
    return _Generators.current


def set_id_generator(generator: IdGenerator | None) -> None:
    """Replace the id generator (``None`` restores the random one)."""
    _Generators.current = generator if generator is not None else RandomIds()


class _EventIds:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self) -> str:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms <= self._last_ms:
                # Same (or an earlier, after a clock step) millisecond: stay monotonic.
                now_ms = self._last_ms
                rand = (self._last_rand + 1) & ((1 << 80) - 1)
                if rand == 0:
                    now_ms += 1
            else:
                rand = random.getrandbits(80)
            self._last_ms, self._last_rand = now_ms, rand
        value = (now_ms << 80) | rand  # 128 bits -> 26 digits: 2 + 12 pairs x 10 bits
        parts = []
        for _ in range(12):
            parts.append(_PAIRS[value & 1023])
            value >>= 10
        parts.append(_PAIRS[value])  # the top 8 bits: one more pair
        return "".join(reversed(parts))


_events = _EventIds()


def new_event_id() -> str:
    """A new 26-character, time-sortable, unique event id."""
    return _events.new()
