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

_bits = random.getrandbits
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
        value = _bits(128)
        while not value:
            value = _bits(128)
        return value.to_bytes(16, "big").hex()  # faster than f"{value:032x}"

    def span_id(self) -> str:
        """A new random span id."""
        value = _bits(64)
        while not value:
            value = _bits(64)
        return value.to_bytes(8, "big").hex()


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
        self._prefix = ""
        self._high = ""

    def new(self) -> str:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self._last_ms:
                rand = _bits(80)
                self._last_ms = now_ms
                # The 48-bit time is the first 10 digits (50 bits, top 2 zero): encoded
                # once per millisecond, not once per id.
                self._prefix = prefix = _encode(now_ms, 5)
                self._high = high = _encode(rand >> 10, 7)
            else:
                # Same (or an earlier, after a clock step) millisecond: stay monotonic.
                # Only the last two digits change, unless the increment carries.
                rand = (self._last_rand + 1) & _RAND_MASK
                prefix = self._prefix
                if rand == 0:
                    self._last_ms += 1
                    self._prefix = prefix = _encode(self._last_ms, 5)
                if not rand & 1023:
                    self._high = _encode(rand >> 10, 7)
                high = self._high
            self._last_rand = rand
        return prefix + high + _PAIRS[rand & 1023]


def _encode(value: int, pairs: int) -> str:
    """``value`` as ``2 * pairs`` Crockford base32 digits, most significant first."""
    shift = 10 * pairs
    out = ""
    while shift:
        shift -= 10
        out += _PAIRS[(value >> shift) & 1023]
    return out


_RAND_MASK = (1 << 80) - 1
_events = _EventIds()


def new_event_id() -> str:
    """A new 26-character, time-sortable, unique event id."""
    return _events.new()
