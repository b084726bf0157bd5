"""The neutral error dict as a flat ``map<string, string>``, and back.

Some carriers only hold string pairs: ``google.rpc.ErrorInfo.metadata`` (a
``map<string, string>``) is the one errtrace uses, through the gRPC interceptors. Keys
follow AIP-193 (lowerCamelCase): ``level``, ``traceId``, ``spanId``, ``bizCode``,
``eventId``, ``service`` and ``causedBy``, the compact JSON of the ``caused_by`` chain
(whole links only, within :data:`MAX_CAUSED_BY_CHARS`). The code itself travels as
``ErrorInfo.reason`` and the message as ``google.rpc.Status.message``, so they are
passed separately to :func:`from_string_map`.

Decoding trusts nothing: unknown keys are ignored, values are length-bounded, and the
result is handed to :func:`errtrace.core.encoding.from_neutral`, which bounds again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from errtrace.core.encoding import MAX_CHAIN
from errtrace.core.status import small_int

MAX_VALUE_CHARS = 128
"""Longest scalar value kept when decoding (ids, service names)."""
MAX_CAUSED_BY_CHARS = 2048
"""Budget of the ``causedBy`` JSON; links that do not fit are dropped from the end."""

# neutral key -> map key (AIP-193: ErrorInfo metadata keys are lowerCamelCase)
_SCALARS: tuple[tuple[str, str], ...] = (
    ("trace_id", "traceId"),
    ("span_id", "spanId"),
    ("biz_code", "bizCode"),
    ("event_id", "eventId"),
    ("service", "service"),
)


def to_string_map(data: Mapping[str, Any]) -> dict[str, str]:
    """The string map of a neutral error dict (see :func:`~errtrace.core.encoding.neutral`).

    Missing or ``None`` values are left out; ``level`` becomes its decimal string.
    """
    out: dict[str, str] = {}
    level = data.get("level")
    if isinstance(level, int) and not isinstance(level, bool):
        out["level"] = str(level)
    for key, name in _SCALARS:
        value = data.get(key)
        if value is not None and value != "":
            out[name] = str(value)
    chain = data.get("caused_by")
    if isinstance(chain, list) and chain:
        encoded = _encode_chain(chain)
        if encoded:
            out["causedBy"] = encoded
    return out


def _encode_chain(chain: list[Any]) -> str:
    links = [link for link in chain[:MAX_CHAIN] if isinstance(link, Mapping)]
    while links:
        text = json.dumps(links, separators=(",", ":"), default=str)
        if len(text) <= MAX_CAUSED_BY_CHARS:
            return text
        links.pop()  # whole links only: drop the farthest hop first
    return ""


def from_string_map(
    metadata: Mapping[str, str],
    *,
    code: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """A neutral-shaped dict from a string map, ``code`` and ``message`` (for ``from_neutral``).

    Invalid values are dropped rather than failing: a level that is not a small
    integer, oversized ids, or a ``causedBy`` that is not a JSON list.
    """
    out: dict[str, Any] = {}
    if code is not None:
        out["code"] = code
    if message:
        out["message"] = message
    level = small_int(metadata.get("level"))
    if level is not None:
        out["level"] = level
    for key, name in _SCALARS:
        value = metadata.get(name)
        if isinstance(value, str) and value and len(value) <= MAX_VALUE_CHARS:
            out[key] = value
    raw = metadata.get("causedBy")
    if isinstance(raw, str) and raw and len(raw) <= MAX_CAUSED_BY_CHARS:
        try:
            chain = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            chain = None
        if isinstance(chain, list):
            out["caused_by"] = chain[:MAX_CHAIN]
    return out
