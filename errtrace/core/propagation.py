"""Extracting and injecting the error context through any carrier.

One carrier protocol serves every transport: a :class:`Getter` reads header (or gRPC
metadata) values by lower-case name and a :class:`Setter` writes them. Each transport
has one concrete getter/setter next to its adapter; :class:`DictGetter` and
:class:`DictSetter` cover plain mappings.

Formats and the rules followed:

* ``traceparent`` / ``tracestate``: W3C Trace Context (Level 2). An invalid
  ``traceparent`` starts a new trace and drops ``tracestate``; it never fails a request.
* ``baggage``: W3C Baggage. Members are percent-decoded; at most 64 members and 8192
  bytes are kept, and only whole members ("never partial").
* ``X-Biz-Code`` (or the baggage member ``biz.code``): validated against a configurable
  pattern and, as it is echoed in outgoing headers, limited to visible ASCII; an invalid
  value is dropped and counted, never echoed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import quote, unquote

from errtrace.core.context import FLAG_RANDOM, FLAG_SAMPLED, ErrorContext
from errtrace.core.ids import _Generators, ids
from errtrace.core.stats import stats

C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"


class Getter(Protocol[C_contra]):
    """Reads the values of one header / metadata key (lower-case) from a carrier."""

    def get(self, carrier: C_contra, key: str) -> Sequence[str] | None:
        """All values of ``key`` in ``carrier`` (several for repeated headers), or None."""
        ...


class Setter(Protocol[C_contra]):
    """Writes one header / metadata value into a carrier."""

    def set(self, carrier: C_contra, key: str, value: str) -> None:
        """Set ``key`` to ``value`` in ``carrier``."""
        ...


class DictGetter:
    """Getter for ``Mapping[str, str | list[str]]``, case-insensitive on keys."""

    def get(self, carrier: Mapping[str, Any], key: str) -> Sequence[str] | None:
        """Values of ``key`` (compared case-insensitively)."""
        value = carrier.get(key)
        if value is None:
            for name, candidate in carrier.items():
                if name.lower() == key:
                    value = candidate
                    break
            else:
                return None
        if isinstance(value, str):
            return [value]
        return [str(v) for v in value]


class DictSetter:
    """Setter for a mutable ``dict[str, str]``."""

    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        """Set ``key`` to ``value``."""
        carrier[key] = value


dict_getter = DictGetter()
dict_setter = DictSetter()


DEFAULT_BIZ_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
"""What a business code must match unless configured otherwise."""
_DEFAULT_BIZ_RE = re.compile(DEFAULT_BIZ_PATTERN)
# A biz code is echoed in the outgoing X-Biz-Code header / x-biz-code metadata: only
# visible ASCII (no space, control or non-ASCII character) is sendable there.
_SENDABLE_BIZ_RE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class PropagationSettings:
    """The parts of :class:`~errtrace.Config` that extraction and injection use."""

    biz_header: str = "x-biz-code"
    biz_pattern: re.Pattern[str] = _DEFAULT_BIZ_RE
    baggage_biz_key: str = "biz.code"
    max_header_bytes: int = 8192
    sample_new_traces: bool = True
    _biz_seen: dict[str, bool] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Values already checked against ``biz_pattern`` (bounded; see validate_biz_code)."""
    biz_header_bytes: bytes = field(init=False, repr=False, compare=False)
    """``biz_header`` as latin-1 bytes, for :func:`extract_pairs`."""
    _biz_check_sendable: bool = field(init=False, repr=False, compare=False)
    """Whether a value ``biz_pattern`` accepts must also be checked as a header value:
    the default pattern only matches visible ASCII, a user pattern may match anything."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "biz_header_bytes", self.biz_header.lower().encode("latin-1"))
        pattern, default = self.biz_pattern, _DEFAULT_BIZ_RE
        custom = pattern.pattern != default.pattern or pattern.flags != default.flags
        object.__setattr__(self, "_biz_check_sendable", custom)

    @property
    def inbound_names(self) -> tuple[str, ...]:
        """The lower-case header / metadata names that :func:`extract` reads."""
        return (TRACEPARENT, TRACESTATE, BAGGAGE, self.biz_header)


DEFAULT_SETTINGS = PropagationSettings()

# --- W3C Trace Context ----------------------------------------------------------------

_OWS = " \t"
_TRACEPARENT_RE = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_TRACEPARENT_00_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_FLAGS = {f"{flags:02x}": flags for flags in range(256)}
_KEPT_FLAGS = FLAG_SAMPLED | FLAG_RANDOM
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Keys and values per the tracestate grammar (simple-key / multi-tenant-key).
_TS_KEY = (
    r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
)
_TS_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TS_MEMBER_RE = re.compile(rf"({_TS_KEY})=({_TS_VALUE})")
TRACESTATE_MAX_MEMBERS = 32
TRACESTATE_PROPAGATE_BYTES = 512  # the spec's "SHOULD propagate at least 512" budget


class TraceParent(NamedTuple):
    """A parsed ``traceparent``."""

    trace_id: str
    parent_id: str
    flags: int


def parse_traceparent(value: str) -> TraceParent | None:
    """Parse one ``traceparent`` value; None when invalid (the caller starts a new trace).

    Version ``ff`` is invalid; version ``00`` must be exactly 55 characters; a higher
    (future) version is parsed by its 55-character prefix, which must be followed by
    the end or a ``-``. Upper-case hex and all-zero ids are invalid.
    """
    parsed = _parse_traceparent(value)
    return None if parsed is None else TraceParent(*parsed)


def _parse_traceparent(value: str) -> tuple[str, str, int] | None:
    # The common case (version 00, exactly 55 characters) is one regex.
    match = _TRACEPARENT_00_RE.fullmatch(value)
    if match is not None:
        trace_id, parent_id, flags = match.groups()
    else:
        if len(value) > 1024:
            return None
        value = value.strip(_OWS)
        if len(value) < 55:
            return None
        version = value[:2]
        if version == "00":
            if len(value) != 55:
                return None
        elif version == "ff" or (len(value) > 55 and value[55] != "-"):
            return None
        if _TRACEPARENT_RE.fullmatch(value, 0, 55) is None:
            return None
        trace_id, parent_id, flags = value[3:35], value[36:52], value[53:55]
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, _FLAGS[flags]


def parse_tracestate(values: Sequence[str] | None, max_bytes: int = 8192) -> str | None:
    """Combine and validate ``tracestate`` header values; None when absent or invalid.

    Several headers are joined in order as one list. Empty members are allowed and
    skipped. An invalid member, a duplicated key or more than 32 members make the whole
    header invalid (it is then dropped, as the W3C test suite expects at Level 2).
    Over 512 characters, members longer than 128 characters are dropped first, then
    members from the end, as the spec recommends.
    """
    if not values:
        return None
    combined = ",".join(values)
    if len(combined) > max_bytes:
        stats.incr("tracestate_dropped")
        return None
    members: list[str] = []
    keys: set[str] = set()
    for raw in combined.split(","):
        member = raw.strip(_OWS)
        if not member:
            continue
        match = _TS_MEMBER_RE.fullmatch(member)
        if match is None or match.group(1) in keys:
            stats.incr("tracestate_dropped")
            return None
        keys.add(match.group(1))
        members.append(member)
    if not members:
        return None
    if len(members) > TRACESTATE_MAX_MEMBERS:
        stats.incr("tracestate_dropped")
        return None
    joined = ",".join(members)
    if len(joined) > TRACESTATE_PROPAGATE_BYTES:
        members = [m for m in members if len(m) <= 128]
        while members and len(",".join(members)) > TRACESTATE_PROPAGATE_BYTES:
            members.pop()
        joined = ",".join(members)
    return joined or None


# --- W3C Baggage ----------------------------------------------------------------------

BAGGAGE_MAX_MEMBERS = 64
BAGGAGE_MAX_BYTES = 8192
TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
"""An RFC 9110 token: a header name, a baggage key. \\Z: ``match`` allows no final
newline (``$`` would)."""
# baggage-octet: printable US-ASCII except space, DQUOTE, comma, semicolon, backslash.
_BAGGAGE_SAFE = "!#$&'()*+-./:<=>?@[]^_`{|}~"
_BAGGAGE_OCTETS = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")


def parse_baggage(
    values: Sequence[str] | None, max_bytes: int = BAGGAGE_MAX_BYTES
) -> list[tuple[str, str, str]]:
    """Parse ``baggage`` header values into (key, decoded value, raw properties) members.

    Invalid members are dropped (and counted) one by one. Only whole members within
    64 members and ``max_bytes`` are kept; the rest are dropped, never cut.
    """
    if not values:
        return []
    out: list[tuple[str, str, str]] = []
    used = 0
    for header in values:
        for raw in header.split(","):
            member = raw.strip(_OWS)
            if not member:
                continue
            size = len(member) + (1 if out else 0)
            if len(out) >= BAGGAGE_MAX_MEMBERS or used + size > max_bytes:
                stats.incr("baggage_members_dropped")
                continue
            parsed = _parse_baggage_member(member)
            if parsed is None:
                stats.incr("baggage_members_dropped")
                continue
            out.append(parsed)
            used += size
    return out


def _valid_properties(props: str) -> bool:
    # property = key OWS [ "=" OWS value ], ";"-separated; forwarded as received, so it
    # must hold only what the grammar allows (no controls, no non-ASCII).
    for prop in props.split(";"):
        key, eq, value = prop.partition("=")
        if not TOKEN_RE.fullmatch(key.strip(_OWS)):
            return False
        if eq and not _BAGGAGE_OCTETS.fullmatch(value.strip(_OWS)):
            return False
    return True


def _parse_baggage_member(member: str) -> tuple[str, str, str] | None:
    head, _, props = member.partition(";")
    key, eq, value = head.partition("=")
    key = key.strip(_OWS)
    if not eq or not TOKEN_RE.fullmatch(key):
        return None
    value = value.strip(_OWS)
    if not _BAGGAGE_OCTETS.fullmatch(value):
        return None
    props = props.strip(_OWS)
    if props and not _valid_properties(props):
        return None
    # W3C Baggage: octets that are not UTF-8 become U+FFFD; the member is kept. A "%"
    # that starts no escape ("a%zzb") stays a "%" and goes out as "%25", which decodes
    # to the same value: forwarding changes such a value once, at the first hop.
    return key, unquote(value, errors="replace"), props


def format_baggage(
    members: Sequence[tuple[str, str, str]], max_bytes: int = BAGGAGE_MAX_BYTES
) -> str:
    """Serialize members, keeping whole members within 64 members / ``max_bytes``
    (8192 by default); a member that does not fit is dropped and counted."""
    parts: list[str] = []
    used = 0
    for key, value, props in members[:BAGGAGE_MAX_MEMBERS]:
        part = f"{key}={quote(value, safe=_BAGGAGE_SAFE)}"
        if props:
            part = f"{part};{props}"
        size = len(part) + (1 if parts else 0)
        if used + size > max_bytes:
            stats.incr("baggage_members_dropped")
            continue
        parts.append(part)
        used += size
    return ",".join(parts)


# --- business code --------------------------------------------------------------------


_BIZ_SEEN_MAX = 1024


def validate_biz_code(value: str | None, settings: PropagationSettings) -> str | None:
    """``value`` if it matches the configured pattern and is a sendable header value
    (visible ASCII only), else None (and counted).

    Business codes come from a small set, so verdicts are remembered per settings
    object; the memo is emptied when it reaches 1024 values, which bounds it against
    a client sending a new value with every request.
    """
    if value is None:
        return None
    seen = settings._biz_seen
    valid = seen.get(value)
    if valid is None:
        if len(value) > 256:
            stats.incr("biz_code_rejected")
            return None
        valid = settings.biz_pattern.fullmatch(value) is not None
        if valid and settings._biz_check_sendable:
            # A permissive user pattern (r"^.{1,64}$") lets "café" or "t1\rX" through;
            # written into outgoing headers they would fail every call of the request.
            valid = _SENDABLE_BIZ_RE.fullmatch(value) is not None
        if len(seen) >= _BIZ_SEEN_MAX:
            seen.clear()
        seen[value] = valid
    if valid:
        return value
    stats.incr("biz_code_rejected")
    return None


# --- extract / inject -----------------------------------------------------------------


def extract(
    carrier: C, getter: Getter[C], settings: PropagationSettings = DEFAULT_SETTINGS
) -> ErrorContext:
    """Build this hop's context from an inbound carrier; never raises on bad input.

    The trace continues when exactly one valid ``traceparent`` arrives (two headers are
    ambiguous and start a new trace); this hop gets a new span id with the caller's as
    parent. An inbound ``X-Error-Code`` is never read: a client does not set our codes.
    """
    return extract_collected(collect(carrier, getter, settings), settings)


def collect(
    carrier: C, getter: Getter[C], settings: PropagationSettings = DEFAULT_SETTINGS
) -> dict[str, Sequence[str]]:
    """The values :func:`extract_collected` reads, from any carrier through its getter."""
    get = getter.get
    collected: dict[str, Sequence[str]] = {}
    for name in (TRACEPARENT, TRACESTATE, BAGGAGE, settings.biz_header):
        values = get(carrier, name)
        if values:
            collected[name] = values
    return collected


def extract_collected(
    carrier: Mapping[str, Sequence[str]], settings: PropagationSettings = DEFAULT_SETTINGS
) -> ErrorContext:
    """:func:`extract` over ``{lower-case name: [values]}``, as adapters gather it in
    one pass over their headers (see :attr:`PropagationSettings.inbound_names`)."""
    get = carrier.get
    parents = get(TRACEPARENT)
    biz = get(settings.biz_header)
    return _extract(
        parents[0] if parents else None,
        parents is not None and len(parents) > 1,
        get(TRACESTATE),
        get(BAGGAGE),
        biz[0] if biz else None,
        settings,
    )


def extract_pairs(
    headers: Iterable[tuple[bytes, bytes]], settings: PropagationSettings = DEFAULT_SETTINGS
) -> ErrorContext:
    """:func:`extract` over ``(lower-case name, latin-1 value)`` byte pairs, the form of
    ASGI's ``scope["headers"]``.

    When no name repeats (most requests) the pairs become a dict in one C call, and
    only the values errtrace reads are decoded; otherwise every value of a repeated
    name is kept, in order, as :func:`extract` wants.
    """
    if not isinstance(headers, (list, tuple)):
        headers = list(headers)
    unique: dict[bytes, bytes] = dict(headers)
    if len(unique) != len(headers):
        return extract_collected(_gather_pairs(headers, settings), settings)
    get = unique.get
    parent = get(b"traceparent")
    state = get(b"tracestate")
    baggage = get(b"baggage")
    biz = get(settings.biz_header_bytes)
    return _extract(
        None if parent is None else parent.decode("latin-1"),
        False,
        None if state is None else [state.decode("latin-1")],
        None if baggage is None else [baggage.decode("latin-1")],
        None if biz is None else biz.decode("latin-1"),
        settings,
    )


def _gather_pairs(
    headers: Iterable[tuple[bytes, bytes]], settings: PropagationSettings
) -> dict[str, list[str]]:
    names = {name.encode("latin-1"): name for name in settings.inbound_names}
    carrier: dict[str, list[str]] = {}
    for name, value in headers:
        key = names.get(name)
        if key is not None:
            carrier.setdefault(key, []).append(value.decode("latin-1"))
    return carrier


def _extract(
    traceparent: str | None,
    repeated: bool,
    tracestate: Sequence[str] | None,
    raw_baggage: Sequence[str] | None,
    biz: str | None,
    settings: PropagationSettings,
) -> ErrorContext:
    # This runs on every request: the common case (one valid traceparent, no
    # tracestate or baggage) makes as few calls as it can. Two traceparent headers
    # are ambiguous: a new trace starts.
    parent = None
    if traceparent is not None:
        if not repeated:
            parent = _parse_traceparent(traceparent)
        if parent is None:
            stats.incr("traceparent_invalid")
    members: Sequence[tuple[str, str, str]] = ()
    if raw_baggage:
        members = parse_baggage(raw_baggage, settings.max_header_bytes)
    if biz is not None:
        biz = biz.strip(_OWS)
        if not settings._biz_seen.get(biz):  # a value seen valid before skips the call
            biz = validate_biz_code(biz, settings)
    if biz is None and members:
        for key, value, _ in members:
            if key == settings.baggage_biz_key:
                biz = validate_biz_code(value, settings)
                break
    gen = _Generators.current
    if parent is not None:
        trace_id, parent_id, flags = parent
        # Level 2: unknown flag bits are not propagated; sampled and random are kept.
        return ErrorContext(
            trace_id, gen.span_id(), parent_id, flags & _KEPT_FLAGS,
            parse_tracestate(tracestate, settings.max_header_bytes) if tracestate else None,
            biz, None, None, members, True,
        )
    flags = FLAG_RANDOM | (FLAG_SAMPLED if settings.sample_new_traces else 0)
    return ErrorContext(
        gen.trace_id(), gen.span_id(), None, flags, None, biz, None, None, members, False
    )


def new_root_context(settings: PropagationSettings = DEFAULT_SETTINGS) -> ErrorContext:
    """A context for work that starts here (a job, a CLI), with a new trace."""
    return extract({}, dict_getter, settings)


def inject(
    ctx: ErrorContext,
    carrier: C,
    setter: Setter[C],
    settings: PropagationSettings = DEFAULT_SETTINGS,
    *,
    span_id: str | None = None,
    trace_only: bool = False,
) -> str:
    """Write the context for an outgoing call into ``carrier``; returns the call's span id.

    Each call gets a fresh child span id (this hop's span is its parent), the same
    trace id, flags and tracestate, the baggage with ``biz.code`` kept in step, and
    the business-code header. With ``trace_only`` (a call to a third party), only the
    ``traceparent``.
    """
    child = span_id or ids().span_id()
    spans = ctx.outgoing_spans
    if len(spans) < 32:
        if not isinstance(spans, list):  # the first outgoing call of this hop
            ctx.outgoing_spans = spans = list(spans)
        spans.append(child)
    setter.set(carrier, TRACEPARENT, f"00-{ctx.trace_id}-{child}-{ctx.trace_flags & 0x03:02x}")
    if trace_only:
        return child
    if ctx.tracestate:
        setter.set(carrier, TRACESTATE, ctx.tracestate)
    baggage = outgoing_baggage(ctx, settings)
    if baggage:
        setter.set(carrier, BAGGAGE, baggage)
    if ctx.biz_code:
        setter.set(carrier, settings.biz_header, ctx.biz_code)
    return child


def outgoing_baggage(ctx: ErrorContext, settings: PropagationSettings) -> str:
    """The ``baggage`` value for outgoing calls: inbound members plus ``biz.code`` (room
    is made for it: the member and byte limits drop inbound members, counted, not it)."""
    key = settings.baggage_biz_key
    members = [m for m in ctx.baggage if m[0] != key]
    if not ctx.biz_code:
        return format_baggage(members) if members else ""
    own = format_baggage([(key, ctx.biz_code, "")])
    if len(members) >= BAGGAGE_MAX_MEMBERS:
        stats.incr("baggage_members_dropped", len(members) - BAGGAGE_MAX_MEMBERS + 1)
        del members[BAGGAGE_MAX_MEMBERS - 1:]
    # The inbound members get the bytes biz.code leaves (it stays last, as it was).
    rest = format_baggage(members, BAGGAGE_MAX_BYTES - len(own) - 1) if members else ""
    return f"{rest},{own}" if rest else own
