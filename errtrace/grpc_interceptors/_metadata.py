"""The carrier Getter/Setter for gRPC metadata, and metadata merging.

gRPC metadata is a sequence of ``(key, value)`` pairs with lower-case keys; keys ending
in ``-bin`` hold bytes and are never read as text. The same core ``extract``/``inject``
code path as for HTTP headers runs over it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Metadata = Sequence[tuple[str, Any]]
"""gRPC metadata: ``(key, value)`` pairs (``str`` values, ``bytes`` for ``-bin`` keys)."""


class MetadataGetter:
    """Getter over inbound gRPC metadata (keys are lower-case; ``-bin`` keys ignored)."""

    def get(self, carrier: Iterable[tuple[str, Any]] | None, key: str) -> list[str] | None:
        """All text values of ``key``."""
        found: list[str] | None = None
        for k, v in carrier or ():  # a plain loop: this runs four times per request
            if k == key and isinstance(v, str):
                if found is None:
                    found = [v]
                else:
                    found.append(v)
        return found


class MetadataSetter:
    """Setter that appends ``(key, value)`` to a list of metadata pairs."""

    def set(self, carrier: list[tuple[str, Any]], key: str, value: str) -> None:
        """Append ``key: value`` (``key`` lower-cased, as gRPC requires)."""
        carrier.append((key.lower(), value))


metadata_getter = MetadataGetter()
metadata_setter = MetadataSetter()


def merged(
    existing: Iterable[tuple[str, Any]] | None, added: Sequence[tuple[str, Any]]
) -> list[tuple[str, Any]]:
    """``existing`` pairs followed by ``added`` ones whose keys ``existing`` does not have.

    What the caller (or the handler) set explicitly wins over what errtrace adds.
    """
    pairs = list(existing) if existing else []
    if not pairs:
        return list(added)
    present = {k for k, _ in pairs}
    pairs.extend(item for item in added if item[0] not in present)
    return pairs


def replaced(
    existing: Iterable[tuple[str, Any]] | None, added: Sequence[tuple[str, Any]]
) -> list[tuple[str, Any]]:
    """``existing`` pairs without the keys of ``added``, then ``added``."""
    keys = {k for k, _ in added}
    pairs = [item for item in existing or () if item[0] not in keys]
    pairs.extend(added)
    return pairs
