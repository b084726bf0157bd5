"""Error events: one record per recorded error, kept in an in-memory ring.

Every error a middleware, interceptor or ``errtrace.report`` records becomes an
:class:`ErrorEvent` with a time-sortable ``event_id``. The ring keeps the most recent
ones (``Config.event_buffer_size``) for lookup by event id and for
``errtrace.testing.capture_events()``; sinks to outside stores come later.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from errtrace.core.encoding import jsonable
from errtrace.core.stats import stats

log = logging.getLogger("errtrace")


@dataclass(slots=True)
class ErrorEvent:
    """What happened, where, and in which context. Fields starting with ``private_``
    may hold exception or provider text and are never sent to a client."""

    event_id: str
    timestamp: float
    code: str
    level: int
    title: str
    message: str | None
    http_status: int | None
    grpc_status: str | None
    retryable: bool
    trace_id: str | None
    span_id: str | None
    parent_span_id: str | None
    biz_code: str | None
    service: str
    transport: str
    """``http``, ``grpc`` or ``report``."""
    method: str | None = None
    route: str | None = None
    exception_type: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    caused_by: list[dict[str, Any]] = field(default_factory=list)
    outgoing_spans: list[str] = field(default_factory=list)
    response_started: bool = False
    fallback: str | None = None
    private_exception: str | None = None
    private_provider_text: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (including the private fields: for logs, not clients).

        Values are converted as the problem+json encoder converts them
        (:func:`~errtrace.core.encoding.jsonable`): bytes, datetimes and other objects
        become their ``str()``, NaN and the infinities None, tuples lists, dict keys
        text. ``json.dumps`` takes the result as it is (even with ``allow_nan=False``),
        and making it never raises: it is called from hooks that ship events.
        """
        return {name: jsonable(getattr(self, name)) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(ErrorEvent))

Listener = Callable[[ErrorEvent], None]


class EventBuffer:
    """A bounded, thread-safe ring of recent events plus live listeners."""

    def __init__(self, size: int = 1000) -> None:
        self._ring: deque[ErrorEvent] = deque(maxlen=size)
        self._lock = threading.Lock()
        # Replaced, never changed in place: ``add`` reads it without copying.
        self._listeners: tuple[Listener, ...] = ()

    def add(self, event: ErrorEvent) -> None:
        """Store an event and hand it to every listener."""
        with self._lock:  # readers copy the ring under it: no append mid-iteration
            self._ring.append(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not fail the request it records
                stats.incr("hook_failures")
                log.exception("errtrace: event listener %r raised; ignored", listener)

    def ensure_capacity(self, size: int) -> None:
        """Keep at least ``size`` events (the ring is shared: it only grows)."""
        with self._lock:
            if self._ring.maxlen is not None and size > self._ring.maxlen:
                self._ring = deque(self._ring, maxlen=size)

    def find(self, event_id: str) -> ErrorEvent | None:
        """The event with that id, if still in the ring."""
        with self._lock:
            for event in reversed(self._ring):
                if event.event_id == event_id:
                    return event
        return None

    def recent(self, limit: int | None = None) -> list[ErrorEvent]:
        """The most recent events, oldest first."""
        with self._lock:
            items = list(self._ring)
        return items if limit is None else items[-limit:]

    def __iter__(self) -> Iterator[ErrorEvent]:
        return iter(self.recent())

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every new event; returns the function that unsubscribes."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    remaining = list(self._listeners)
                    remaining.remove(listener)
                    self._listeners = tuple(remaining)

        return unsubscribe

    def clear(self) -> None:
        """Forget every stored event."""
        with self._lock:
            self._ring.clear()


events = EventBuffer()
"""The process-wide event ring shared by every runtime."""
