"""The protobuf wire bytes of the ``google.rpc.Status`` a failed call answers with.

Building the status from generated message classes (``Status``, ``Any.Pack`` of an
``ErrorInfo`` with a map field, a ``RetryInfo``) took about 14 µs per failed call, more
than recording the error; the message is small and fixed in shape, so it is written
here directly (about 5 µs). Field numbers, from ``google/rpc/status.proto``,
``error_details.proto``, ``google/protobuf/any.proto`` and ``duration.proto``::

    Status     { int32 code = 1; string message = 2; repeated Any details = 3; }
    Any        { string type_url = 1; bytes value = 2; }
    ErrorInfo  { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
    RetryInfo  { Duration retry_delay = 1; }
    Duration   { int64 seconds = 1; int32 nanos = 2; }

A map entry is a nested message ``{ key = 1; value = 2; }``. Fields at their default
(0, "") are left out, as proto3 serializers do. Decoding keeps using protobuf, which
validates what a peer sent; the tests check that protobuf reads these bytes back equal
to the message it would have built itself.
"""

from __future__ import annotations

from collections.abc import Mapping

ERROR_INFO_URL = b"type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO_URL = b"type.googleapis.com/google.rpc.RetryInfo"


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_BYTE = [bytes((i,)) for i in range(256)]


def _delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte, the payload's length, the payload."""
    size = len(payload)
    return tag + (_BYTE[size] if size < 0x80 else _varint(size)) + payload


def utf8(value: str) -> bytes:
    """``value`` as UTF-8, as protobuf strings are; a lone surrogate (never valid
    there) becomes ``?``."""
    return value.encode("utf-8", "replace")


# Tag bytes: (field number << 3) | wire type (0 varint, 2 length-delimited).
_F1, _F2, _F3 = b"\x0a", b"\x12", b"\x1a"
_V1, _V2 = b"\x08", b"\x10"

ERROR_INFO = _delimited(_F1, ERROR_INFO_URL)
"""The ``type_url`` field of an ``Any`` holding an ``ErrorInfo``."""
RETRY_INFO = _delimited(_F1, RETRY_INFO_URL)
"""The ``type_url`` field of an ``Any`` holding a ``RetryInfo``."""

# The key field of a metadata map entry, by key: the same few keys on every call.
_KEY_FIELDS: dict[str, bytes] = {}


def _key_field(key: str) -> bytes:
    found = _KEY_FIELDS.get(key)
    if found is None:
        found = _delimited(_F1, utf8(key)) if key else b""
        if len(_KEY_FIELDS) < 256:
            _KEY_FIELDS[key] = found
    return found


def error_info(reason: str, domain: str, metadata: Mapping[str, str]) -> bytes:
    """A serialized ``google.rpc.ErrorInfo``."""
    out = bytearray(error_info_head(reason, domain))
    for key, value in metadata.items():
        out += map_entry(key, value)
    return bytes(out)


def error_info_head(reason: str, domain: str) -> bytes:
    """The ``reason`` and ``domain`` fields of an ``ErrorInfo``; its metadata entries
    (:func:`map_entry`) follow."""
    out = b""
    if reason:
        out += _delimited(_F1, utf8(reason))
    if domain:
        out += _delimited(_F2, utf8(domain))
    return out


def map_entry(key: str, value: str) -> bytes:
    """One ``metadata`` map entry of an ``ErrorInfo``."""
    entry = _key_field(key)
    if value:
        text = utf8(value)
        size = len(entry) + 2 + len(text)
        if size < 0x80:  # ids and names: every length fits in one byte
            return _F3 + _BYTE[size] + entry + _F2 + _BYTE[len(text)] + text
        entry += _delimited(_F2, text)
    return _delimited(_F3, entry)


def retry_info(seconds: float) -> bytes:
    """A serialized ``google.rpc.RetryInfo`` with ``retry_delay`` of ``seconds`` (>= 0)."""
    whole = int(seconds)
    nanos = int((seconds - whole) * 1e9)
    duration = b""
    if whole:
        duration += _V1 + _varint(whole)
    if nanos:
        duration += _V2 + _varint(nanos)
    return _delimited(_F1, duration)


def status(code: int, message: str, details: list[tuple[bytes, bytes]]) -> bytes:
    """A serialized ``google.rpc.Status``; ``details`` are (packed type head, value) pairs.

    Use :data:`ERROR_INFO` / :data:`RETRY_INFO` as the heads.
    """
    out = bytearray(_V1 + _varint(code) if code else b"")
    if message:
        out += _delimited(_F2, utf8(message))
    for head, value in details:
        out += _delimited(_F3, head + _delimited(_F2, value))
    return bytes(out)
