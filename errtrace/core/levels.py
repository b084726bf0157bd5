"""The seven-level severity scale (0 fatal ... 6 debug) and what each level means.

A level decides the default response and the default actions of every code that has
it; a registered :class:`~errtrace.core.codes.ErrorCode` may override both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Level(enum.IntEnum):
    """Severity of an error code; lower is more severe."""

    FATAL = 0
    CRITICAL = 1
    SEVERE = 2
    MODERATE = 3
    MILD = 4
    INFO = 5
    DEBUG = 6

    @property
    def fails_request(self) -> bool:
        """Levels 0-3 fail the request; 4-6 are reported with ``errtrace.report``."""
        return self <= Level.MODERATE

    @property
    def info(self) -> LevelInfo:
        """The documented meaning and defaults of this level."""
        return LEVEL_INFO[self]

    @classmethod
    def parse(cls, value: object) -> Level:
        """Accept ``3``, ``"3"``, ``"moderate"`` or ``Level.MODERATE``; raise ValueError else."""
        if isinstance(value, Level):
            return value
        if isinstance(value, bool):
            raise ValueError(f"invalid level {value!r}: expected 0..6 or a level name")
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise ValueError(f"invalid level {value!r}: expected 0..6") from None
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                return cls.parse(int(text))
            try:
                return cls[text.upper()]
            except KeyError:
                pass
        names = ", ".join(level.name.lower() for level in cls)
        raise ValueError(f"invalid level {value!r}: expected 0..6 or one of {names}")


@dataclass(frozen=True)
class LevelInfo:
    """What a level means and what happens by default when a code of that level occurs."""

    meaning: str
    http_status: int | None
    grpc_status: str | None
    actions: tuple[str, ...]
    log_level: int


# Python logging levels, without importing logging here for a constant.
_CRITICAL, _ERROR, _WARNING, _INFO, _DEBUG = 50, 40, 30, 20, 10

LEVEL_INFO: dict[Level, LevelInfo] = {
    Level.FATAL: LevelInfo(
        "the process itself is unsafe (driver crash, memory corruption)",
        500, "INTERNAL", ("log", "metric", "alert", "event", "exit"), _CRITICAL,
    ),
    Level.CRITICAL: LevelInfo(
        "a core dependency is down (model weights fail to load)",
        503, "UNAVAILABLE", ("log", "metric", "alert", "event", "fallback"), _CRITICAL,
    ),
    Level.SEVERE: LevelInfo(
        "a path is broken but may heal (runtime init failed, upstream 5xx)",
        503, "UNAVAILABLE", ("log", "metric", "event", "retry"), _ERROR,
    ),
    Level.MODERATE: LevelInfo(
        "business logic blocked (missing prompt variable, bad input)",
        400, "INVALID_ARGUMENT", ("log", "metric", "event", "fallback"), _INFO,
    ),
    Level.MILD: LevelInfo(
        "degraded performance (latency above p95); the request is not failed",
        None, None, ("metric", "event"), _WARNING,
    ),
    Level.INFO: LevelInfo(
        "expected state change (cache miss, cold start); the request is not failed",
        None, None, ("log", "event"), _INFO,
    ),
    Level.DEBUG: LevelInfo(
        "diagnostic context; the request is not failed",
        None, None, ("log", "event"), _DEBUG,
    ),
}
