"""gRPC status codes and the canonical gRPC <-> HTTP mapping.

The gRPC names and numbers are those of ``google.rpc.Code``; the HTTP equivalents follow
the table in ``google/rpc/code.proto`` and the gRPC "HTTP to gRPC status code mapping"
document. The core names gRPC statuses by string so that it never imports grpc.
"""

from __future__ import annotations

import time

GRPC_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
GRPC_NAMES: dict[int, str] = {number: name for name, number in GRPC_CODES.items()}

# google/rpc/code.proto gives each gRPC code its HTTP mapping.
GRPC_TO_HTTP: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# The reverse direction, from the gRPC "HTTP to gRPC status code mapping" document,
# extended with the 4xx/5xx statuses a JSON API commonly returns.
HTTP_TO_GRPC: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    451: "FAILED_PRECONDITION",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def http_to_grpc(status: int) -> str:
    """The gRPC status name for an HTTP status (unknown 4xx -> FAILED_PRECONDITION...)."""
    name = HTTP_TO_GRPC.get(status)
    if name is not None:
        return name
    if 400 <= status < 500:
        return "FAILED_PRECONDITION"
    if status >= 500:
        return "UNKNOWN"
    return "OK"


def grpc_to_http(name: str) -> int:
    """The HTTP status for a gRPC status name; unknown names map to 500."""
    return GRPC_TO_HTTP.get(name, 500)


def small_int(value: object, digits: int = 2) -> int | None:
    """A non-negative int of at most ``digits`` ASCII digits, else None.

    Remote values are untrusted: ``str.isdigit`` accepts "²" or Arabic-Indic digits
    that ``int()`` then rejects or reads, so only ASCII 0-9 pass.
    """
    if isinstance(value, str):
        value = value.strip()
        if 0 < len(value) <= digits and value.isascii() and value.isdecimal():
            return int(value)
    return None


def is_grpc_status(name: object) -> bool:
    """True when ``name`` is one of the 17 canonical gRPC status names."""
    return isinstance(name, str) and name in GRPC_CODES


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value: delay-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdecimal():
        return float(int(value[:10]))
    import email.utils  # only an HTTP-date needs it; kept out of `import errtrace`

    # The value is untrusted: a huge year or zone offset ("+99999999999999") makes the
    # parser or the datetime arithmetic raise OverflowError (or OSError on some
    # platforms); such a date is ignored like any other invalid one.
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # an HTTP-date is GMT; obsolete formats may lack the zone
            return None
        return max(0.0, round(when.timestamp() - time.time(), 3))
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
