"""A :class:`logging.Filter` that puts the error context on every log record."""

from __future__ import annotations

import logging

from errtrace.core.context import current

FIELDS = ("trace_id", "span_id", "biz_code", "err_code", "event_id")


class ContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id``, ``biz_code``, ``err_code`` and ``event_id``.

    Attach it to a handler (``handler.addFilter(errtrace.ContextFilter())``) and use
    ``%(trace_id)s`` in the format. Outside a request the fields are ``"-"``. Values a
    record already carries (passed with ``extra=``) are kept.
    """

    def __init__(self, name: str = "", *, missing: str = "-") -> None:
        super().__init__(name)
        self.missing = missing

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate ``record``; never drops it."""
        ctx = current()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                value = getattr(ctx, name, None) if ctx is not None else None
                setattr(record, name, value if value is not None else self.missing)
        return True
