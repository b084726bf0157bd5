"""What each hop logs: one line per request, with the errtrace context on the record."""

from __future__ import annotations

import logging

import errtrace

log = logging.getLogger("chain")


def hop(service: str, what: str) -> None:
    """Log that ``service`` handles a request; the context fields come from ContextFilter."""
    ctx = errtrace.current()
    extra = {
        "service": service,
        "parent_span_id": ctx.parent_span_id if ctx is not None else None,
        # the span ids this hop handed to its outgoing calls so far
        "outgoing_spans": list(ctx.outgoing_spans) if ctx is not None else [],
    }
    log.info("%s: %s", service, what, extra=extra)


class Collector(logging.Handler):
    """Keeps the chain's log records (with context fields) for the demo and the tests."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.addFilter(errtrace.ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def for_trace(self, trace_id: str) -> list[logging.LogRecord]:
        """The records of one trace, in the order they were logged."""
        return [r for r in self.records if getattr(r, "trace_id", None) == trace_id]
