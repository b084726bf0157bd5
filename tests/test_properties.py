"""Property-based tests (Hypothesis) of errtrace's decoders of untrusted input.

The rule under test: bad input (headers, gRPC metadata, response bodies, config values)
gets a clear structured result or error, never crashes a request and never loses data;
untrusted input is validated and bounded. Each property states a guarantee from the
docstrings, README or DESIGN and is checked against generated input: arbitrary text and
bytes, grammar-built valid values (W3C traceparent, tracestate, baggage), near-valid
mutations of them, and hostile shapes (huge, repeated, deeply nested).

The profile below is loaded for this module: derandomized and without an example
database, so every run (and CI) tries the same inputs.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import errtrace
from errtrace.core._yaml import ConfigFileError
from errtrace.core.codes import CODE_ID_RE, registry
from errtrace.core.config import Config, ConfigError
from errtrace.core.context import ErrorContext, bind, reset
from errtrace.core.encoding import MAX_CHAIN, ErrorWriter, detail_text, from_http_response
from errtrace.core.errors import MAX_RETRY_AFTER, AppError
from errtrace.core.ids import new_event_id
from errtrace.core.levels import Level
from errtrace.core.propagation import (
    BAGGAGE_MAX_BYTES,
    BAGGAGE_MAX_MEMBERS,
    DEFAULT_SETTINGS,
    TRACESTATE_MAX_MEMBERS,
    TRACESTATE_PROPAGATE_BYTES,
    PropagationSettings,
    dict_getter,
    dict_setter,
    extract,
    extract_pairs,
    format_baggage,
    inject,
    new_root_context,
    parse_baggage,
    parse_traceparent,
    parse_tracestate,
)
from errtrace.core.rewrite import default_ruleset, from_response
from errtrace.core.stringmap import MAX_CAUSED_BY_CHARS, from_string_map, to_string_map
from errtrace.grpc_interceptors import _wire
from errtrace.grpc_interceptors._status import (
    DETAILS_KEY,
    MAX_MESSAGE_BYTES,
    MAX_STATUS_BYTES,
    decode_status,
    error_status,
    sendable_message,
)
from errtrace.middleware.asgi import ErrtraceMiddleware

settings.register_profile(
    "errtrace-properties",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("errtrace-properties")

# Hypothesis raises the recursion limit while a test runs (to 2048 today); a server
# decodes its peers' answers under the interpreter's default. Decoders of nested input
# run under that default here, so that a RecursionError a server would hit is seen.
DEFAULT_RECURSION_LIMIT = sys.getrecursionlimit()


@contextmanager
def default_recursion_limit() -> Iterator[None]:
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(raised)


# --- shared strategies -----------------------------------------------------------------

HEX = "0123456789abcdef"
OWS = st.text(" \t", max_size=2)
# Any code point, lone surrogates included (they reach us through JSON "\ud800"
# escapes, os.environ's surrogateescape and str() of foreign objects).
ANY_CHAR = st.one_of(st.characters(), st.characters(categories=["Cs"]))
ANY_TEXT = st.text(ANY_CHAR, max_size=80)
CONTROL = st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f\x85\u2028\u2029\ufeff")
LATIN1 = st.characters(max_codepoint=0xFF)


def repeated(part: st.SearchStrategy[str], most: int = 3000) -> st.SearchStrategy[str]:
    """A short text repeated up to ``most`` times: huge values without slow generation."""
    return st.builds(lambda s, n: s * n, part, st.integers(0, most))


def nested(most: int = 1500) -> st.SearchStrategy[str]:
    """Deeply nested JSON-ish text: ``[[[...]]]`` or ``{"a":{"a":...}}``."""
    return st.one_of(
        st.builds(lambda n: "[" * n + "]" * n, st.integers(0, most)),
        st.builds(lambda n: '{"a":' * n + "1" + "}" * n, st.integers(0, most)),
        st.builds(lambda n: "[" * n, st.integers(0, most)),
    )


def hex_id(size: int) -> st.SearchStrategy[str]:
    # Built from an integer, not filtered: a filter on all-zero text makes Hypothesis
    # give up on many examples (it shrinks towards zeros).
    return st.integers(1, 16**size - 1).map(lambda n: f"{n:0{size}x}")


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A near-valid value: ``base`` with a few characters inserted, deleted, replaced,
    upper-cased or the value cut, doubled or padded."""
    value = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(
            ["insert", "delete", "replace", "upper", "cut", "double", "pad", "control"]
        ))
        pos = draw(st.integers(0, len(value)))
        if op == "insert":
            value = value[:pos] + draw(ANY_CHAR) + value[pos:]
        elif op == "delete":
            value = value[:pos] + value[pos + 1:]
        elif op == "replace":
            value = value[:pos] + draw(st.sampled_from("-0fFgz,;=% \t")) + value[pos + 1:]
        elif op == "upper":
            value = value[:pos] + value[pos:].upper()
        elif op == "cut":
            value = value[:pos]
        elif op == "double":
            value = value + draw(st.sampled_from([",", "-", ""])) + value
        elif op == "pad":
            value = draw(OWS) + value + draw(OWS)
        else:
            value = value[:pos] + draw(CONTROL) + value[pos:]
    return value


# W3C Trace Context grammar ---------------------------------------------------------------


@st.composite
def traceparents(draw: st.DrawFn) -> tuple[str, str, str, int]:
    """A valid ``traceparent`` (any version but ff, a future one with a suffix), with
    its trace id, parent id and flags."""
    trace_id, parent_id = draw(hex_id(32)), draw(hex_id(16))
    flags = draw(st.integers(0, 255))
    version = draw(st.sampled_from([0, 0, 0, 1, 0x42, 0xFE]))
    value = f"{version:02x}-{trace_id}-{parent_id}-{flags:02x}"
    if version and draw(st.booleans()):
        value += "-" + draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                                    max_size=40))
    return draw(OWS) + value + draw(OWS), trace_id, parent_id, flags


TS_SIMPLE_KEY = st.from_regex(r"[a-z][_0-9a-z\-*/]{0,20}", fullmatch=True)
TS_TENANT_KEY = st.from_regex(r"[a-z0-9][_0-9a-z\-*/]{0,10}@[a-z][_0-9a-z\-*/]{0,13}",
                              fullmatch=True)
TS_VALUE = st.from_regex(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,30}[\x21-\x2b\x2d-\x3c\x3e-\x7e]",
                         fullmatch=True)
TS_MEMBER = st.builds(lambda k, v: f"{k}={v}", TS_SIMPLE_KEY | TS_TENANT_KEY, TS_VALUE)
TS_LONG_MEMBER = st.builds(lambda k, n: f"{k}={'v' * n}", TS_SIMPLE_KEY, st.integers(100, 255))


@st.composite
def tracestates(draw: st.DrawFn) -> str:
    members = draw(st.lists(TS_MEMBER | TS_LONG_MEMBER, max_size=40))
    seps = [draw(OWS) + "," + draw(OWS) for _ in members]
    return "".join(m + s for m, s in zip(members, seps, strict=True)).rstrip(", \t")


# W3C Baggage grammar ---------------------------------------------------------------------

TOKEN = st.text("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                min_size=1, max_size=12)
BAGGAGE_OCTETS = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='",;\\'),
    max_size=30,
)
BAGGAGE_PROPS = st.lists(
    st.builds(lambda k, v: k if v is None else f"{k}={v}", TOKEN, st.none() | BAGGAGE_OCTETS),
    max_size=3,
).map(";".join)
# A member value is any text but lone surrogates (UTF-8 cannot carry them).
MEMBER_VALUE = st.text(st.characters(codec="utf-8"), max_size=40) | repeated(
    st.sampled_from(["x", "é"]), 400
)
BAGGAGE_MEMBER = st.tuples(TOKEN, MEMBER_VALUE, BAGGAGE_PROPS)
RAW_BAGGAGE_MEMBER = st.builds(
    lambda k, v, p: f"{k}={quote(v, safe='')}" + (f";{p}" if p else ""),
    TOKEN, MEMBER_VALUE, BAGGAGE_PROPS,
)
RAW_BAGGAGE = st.lists(RAW_BAGGAGE_MEMBER, max_size=80).map(",".join)
BIZ = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True)

# Header values: arbitrary, near-valid and huge --------------------------------------------

VALID_TRACEPARENT = traceparents().map(lambda t: t[0])


def header_value() -> st.SearchStrategy[str]:
    return st.one_of(
        ANY_TEXT,
        st.text(LATIN1, max_size=80),
        VALID_TRACEPARENT,
        mutated(VALID_TRACEPARENT),
        tracestates(),
        mutated(tracestates()),
        RAW_BAGGAGE,
        mutated(RAW_BAGGAGE),
        BIZ,
        mutated(BIZ),
        repeated(st.sampled_from(["a=b,", "k=v", "ab", "a=b;c", ",", "x" * 50, "biz.code=t-1,"])),
        repeated(ANY_TEXT, 200),
    )


INBOUND_NAMES = ["traceparent", "tracestate", "baggage", "x-biz-code"]
HEADER_NAME = st.sampled_from(
    [*INBOUND_NAMES, "TraceParent", "BAGGAGE", "x-tenant", "content-type"]
) | st.text(max_size=12)
CARRIERS = st.dictionaries(
    HEADER_NAME, header_value() | st.lists(header_value(), min_size=1, max_size=3), max_size=6
)
SETTINGS = st.sampled_from([
    DEFAULT_SETTINGS,
    PropagationSettings(
        biz_header="x-tenant", biz_pattern=re.compile(r"^[a-z]{1,8}$"),
        baggage_biz_key="tenant", max_header_bytes=1024,
    ),
])


# --- checks shared by the properties ---------------------------------------------------


def is_id(value: object, size: int) -> bool:
    return (
        isinstance(value, str)
        and re.fullmatch(f"[0-9a-f]{{{size}}}", value) is not None
        and value != "0" * size
    )


def baggage_size(members: Sequence[tuple[str, str, str]]) -> int:
    """A lower bound of the inbound bytes these decoded members took: a decoded value
    never has more UTF-8 bytes than its percent-encoded form had characters."""
    total = 0
    for key, value, props in members:
        total += len(key) + 1 + len(value.encode("utf-8", "surrogatepass"))
        total += 1 + len(props) if props else 0
    return total + max(0, len(members) - 1)


def assert_valid_context(ctx: ErrorContext, cfg: PropagationSettings) -> None:
    assert is_id(ctx.trace_id, 32), ctx.trace_id
    assert is_id(ctx.span_id, 16), ctx.span_id
    assert ctx.parent_span_id is None or is_id(ctx.parent_span_id, 16)
    assert ctx.remote == (ctx.parent_span_id is not None)
    assert isinstance(ctx.trace_flags, int) and ctx.trace_flags & ~0x03 == 0
    if ctx.tracestate is not None:
        assert ctx.remote, "tracestate kept without a valid traceparent"
        assert parse_tracestate([ctx.tracestate]) == ctx.tracestate
        assert len(ctx.tracestate.split(",")) <= TRACESTATE_MAX_MEMBERS
        assert len(ctx.tracestate) <= TRACESTATE_PROPAGATE_BYTES
    assert len(ctx.baggage) <= BAGGAGE_MAX_MEMBERS
    assert baggage_size(ctx.baggage) <= min(BAGGAGE_MAX_BYTES, cfg.max_header_bytes)
    for key, value, _props in ctx.baggage:
        assert isinstance(key, str) and isinstance(value, str)
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if ctx.biz_code is not None:
        assert cfg.biz_pattern.fullmatch(ctx.biz_code), ctx.biz_code
        assert len(ctx.biz_code) <= 256
    assert ctx.err_code is None and ctx.event_id is None  # never taken from a client


def assert_bounded_error(err: AppError) -> None:
    """What a decoder of a remote error may hand on: a valid code and bounded text."""
    assert isinstance(err, AppError)
    assert CODE_ID_RE.match(err.code) and len(err.code) <= 63
    assert isinstance(err.level, Level)
    assert isinstance(err.http_status, int) and 100 <= err.http_status <= 599
    remote = err.remote
    if remote is not None:
        assert remote.code == err.code
        for name in ("event_id", "trace_id", "span_id", "service", "grpc_status"):
            value = getattr(remote, name)
            assert value is None or (isinstance(value, str) and 0 < len(value) <= 128), name
        assert remote.message is None or len(remote.message) <= 2048
        assert len(remote.upstream) <= MAX_CHAIN
        for link in remote.upstream:
            assert all(isinstance(v, str) and len(v) <= 128 for v in link.values())
    retry = err.retry_after
    assert retry is None or (math.isfinite(retry) and 0 <= retry <= MAX_RETRY_AFTER)
    errors = err.details.get("errors")
    assert errors is None or (isinstance(errors, list) and len(errors) <= 100)
    grpc_details = err.details.get("_grpc_details")
    assert grpc_details is None or len(grpc_details) <= 2048


# --- W3C Trace Context, Baggage and the business code ------------------------------------


@given(CARRIERS, SETTINGS)
@example({"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "a=1"},
         DEFAULT_SETTINGS)
@example({"baggage": ["k=%ff%zz", "biz.code=" + "x" * 300]}, DEFAULT_SETTINGS)
def test_extract_never_raises_and_always_yields_a_valid_context(
    carrier: dict[str, Any], cfg: PropagationSettings
) -> None:
    ctx = extract(carrier, dict_getter, cfg)
    assert_valid_context(ctx, cfg)
    # A valid business code in its header is kept (after OWS), an invalid one dropped.
    raw = dict_getter.get(carrier, cfg.biz_header)
    if raw and cfg.biz_pattern.fullmatch(raw[0].strip(" \t")):
        assert ctx.biz_code == raw[0].strip(" \t")


PAIR_NAME = st.sampled_from([n.encode() for n in [*INBOUND_NAMES, "x-tenant"]]) | st.binary(
    max_size=12
).filter(lambda b: b.decode("latin-1").lower() == b.decode("latin-1"))
PAIR_VALUE = st.one_of(
    st.binary(max_size=80),
    header_value().map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.text(LATIN1, max_size=80).map(lambda s: s.encode("latin-1")),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(0, 3000)),
)
PAIRS = st.lists(st.tuples(PAIR_NAME, PAIR_VALUE), max_size=8)


@given(PAIRS, SETTINGS)
def test_extract_pairs_never_raises_and_agrees_with_extract(
    pairs: list[tuple[bytes, bytes]], cfg: PropagationSettings
) -> None:
    """ASGI's byte pairs give a valid context, the same one :func:`extract` builds from
    the same headers as a mapping (the fast path must not change the answer)."""
    ctx = extract_pairs(pairs, cfg)
    assert_valid_context(ctx, cfg)
    carrier: dict[str, list[str]] = {}
    for name, value in pairs:
        carrier.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    other = extract(carrier, dict_getter, cfg)
    assert ctx.remote == other.remote
    if ctx.remote:
        assert ctx.trace_id == other.trace_id
    assert ctx.parent_span_id == other.parent_span_id
    assert ctx.trace_flags == other.trace_flags
    assert ctx.tracestate == other.tracestate
    assert list(ctx.baggage) == list(other.baggage)
    assert ctx.biz_code == other.biz_code


@given(traceparents(), st.none() | tracestates(), st.none() | BIZ)
def test_a_valid_traceparent_continues_the_trace(
    parent: tuple[str, str, str, int], state: str | None, biz: str | None
) -> None:
    value, trace_id, parent_id, flags = parent
    assert parse_traceparent(value) == (trace_id, parent_id, flags)
    carrier = {"traceparent": value}
    if state is not None:
        carrier["tracestate"] = state
    if biz is not None:
        carrier["x-biz-code"] = biz
    ctx = extract(carrier, dict_getter)
    assert_valid_context(ctx, DEFAULT_SETTINGS)
    assert ctx.remote and ctx.trace_id == trace_id and ctx.parent_span_id == parent_id
    assert ctx.span_id != parent_id
    assert ctx.sampled == bool(flags & 0x01)
    assert ctx.trace_flags == flags & 0x03  # Level 2: sampled and random kept, others not
    assert ctx.biz_code == biz
    if state is not None:
        members = [m.strip(" \t") for m in state.split(",") if m.strip(" \t")]
        keys = [m.split("=", 1)[0] for m in members]
        joined = ",".join(members)
        if (len(keys) == len(set(keys)) and len(members) <= TRACESTATE_MAX_MEMBERS
                and len(joined) <= TRACESTATE_PROPAGATE_BYTES):
            assert ctx.tracestate == (joined or None)  # a valid small one, as received
        elif ctx.tracestate is not None:
            assert set(ctx.tracestate.split(",")) <= set(members)  # never an invented member
    # The outgoing traceparent re-parses: same trace, this call's span as parent, flags.
    out: dict[str, str] = {}
    child = inject(ctx, out, dict_setter)
    sent = parse_traceparent(out["traceparent"])
    assert sent == (trace_id, child, flags & 0x03)
    assert out.get("tracestate") == ctx.tracestate
    assert parse_traceparent(ctx.traceparent) == (trace_id, ctx.span_id, flags & 0x03)


@st.composite
def invalid_traceparents(draw: st.DrawFn) -> str:
    """A traceparent made invalid in one way the spec names: upper-case hex, an
    all-zero id, version ff, or a version-00 value with extra characters."""
    _, trace_id, parent_id, flags = draw(traceparents())
    how = draw(st.sampled_from(["upper-trace", "upper-parent", "upper-flags", "zero-trace",
                                "zero-parent", "ff", "00-suffix"]))
    version = "00"
    if how == "upper-trace":
        trace_id = draw(st.text("ABCDEF", min_size=1, max_size=1)) + trace_id[1:]
    elif how == "upper-parent":
        parent_id = parent_id[:-1] + draw(st.sampled_from("ABCDEF"))
    elif how == "zero-trace":
        trace_id = "0" * 32
    elif how == "zero-parent":
        parent_id = "0" * 16
    elif how == "ff":
        version = "ff"
    flag_text = f"{flags:02x}"
    if how == "upper-flags":
        flag_text = draw(st.sampled_from("ABCDEF")) + flag_text[1]
    value = f"{version}-{trace_id}-{parent_id}-{flag_text}"
    if how == "00-suffix":
        value += "-" + draw(st.text(HEX, min_size=0, max_size=8))
    return value


@given(invalid_traceparents(), tracestates())
def test_an_invalid_traceparent_starts_a_new_trace_and_drops_tracestate(
    value: str, state: str
) -> None:
    assert parse_traceparent(value) is None
    ctx = extract({"traceparent": value, "tracestate": state}, dict_getter)
    assert_valid_context(ctx, DEFAULT_SETTINGS)
    assert not ctx.remote and ctx.parent_span_id is None and ctx.tracestate is None
    assert ctx.trace_id not in value.lower()
    assert ctx.sampled  # sample_new_traces defaults to true


@given(VALID_TRACEPARENT, st.lists(header_value(), min_size=1, max_size=2))
def test_two_traceparent_headers_start_a_new_trace(first: str, others: list[str]) -> None:
    ctx = extract({"traceparent": [first, *others]}, dict_getter)
    assert_valid_context(ctx, DEFAULT_SETTINGS)
    assert not ctx.remote


@given(CARRIERS)
def test_outgoing_headers_always_reparse(carrier: dict[str, Any]) -> None:
    """Whatever came in, what goes out is valid: traceparent, tracestate, baggage and
    the business code of this hop, through ``errtrace.outgoing_headers()``."""
    ctx = extract(carrier, dict_getter)
    token = bind(ctx)
    try:
        out = errtrace.outgoing_headers()
    finally:
        reset(token)
    sent = parse_traceparent(out["traceparent"])
    assert sent is not None and sent.trace_id == ctx.trace_id
    assert sent.parent_id == ctx.outgoing_spans[-1] and sent.parent_id != ctx.span_id
    assert sent.flags == ctx.trace_flags & 0x03
    assert out.get("tracestate") == ctx.tracestate
    assert out.get("x-biz-code") == ctx.biz_code
    raw = out.get("baggage")
    if raw is not None:
        raw.encode("ascii")  # a header value: no text beyond US-ASCII
        assert len(raw) <= BAGGAGE_MAX_BYTES
        members = parse_baggage([raw])
        assert len(members) == len(raw.split(","))  # every member sent is whole and valid
        assert len(members) <= BAGGAGE_MAX_MEMBERS
        if ctx.biz_code:
            assert ("biz.code", ctx.biz_code, "") in members


@given(st.lists(BAGGAGE_MEMBER, max_size=90))
@example([("k", "x" * 8000, ""), ("big", "y" * 300, ""), ("small", "z", "")])
def test_baggage_format_then_parse_round_trips_whole_members(
    members: list[tuple[str, str, str]],
) -> None:
    text = format_baggage(members)
    text.encode("ascii")
    assert len(text) <= BAGGAGE_MAX_BYTES
    back = parse_baggage([text]) if text else []
    # Only whole members come out, in order, each exactly as it went in.
    assert len(back) <= BAGGAGE_MAX_MEMBERS
    assert len(back) == (len(text.split(",")) if text else 0)
    it = iter(members)
    assert all(any(m == b for m in it) for b in back), "not an in-order subsequence"
    # Within the limits nothing is lost.
    sizes = [len(format_baggage([m])) for m in members]
    if len(members) <= BAGGAGE_MAX_MEMBERS and sum(sizes) + len(sizes) - 1 <= BAGGAGE_MAX_BYTES:
        assert back == members


@given(st.lists(RAW_BAGGAGE_MEMBER | mutated(RAW_BAGGAGE_MEMBER), max_size=90),
       st.sampled_from([BAGGAGE_MAX_BYTES, 1024, 100]))
def test_parse_baggage_keeps_whole_valid_members_within_the_limits(
    raw: list[str], max_bytes: int
) -> None:
    header = ",".join(raw)
    members = parse_baggage([header], max_bytes)
    assert len(members) <= BAGGAGE_MAX_MEMBERS
    assert baggage_size(members) <= max_bytes
    # Every member kept is, in order, one that a lone parse of it also gives (never cut).
    singles = [m for part in header.split(",") for m in parse_baggage([part], 1 << 30)]
    it = iter(singles)
    assert all(any(s == m for s in it) for m in members)
    # Members are dropped only when over a limit: what fits is all there.
    if len(singles) <= BAGGAGE_MAX_MEMBERS and len(header) <= max_bytes:
        assert members == singles


@given(st.lists(RAW_BAGGAGE_MEMBER, max_size=40), st.none() | BIZ)
def test_forwarded_baggage_keeps_every_member_of_a_well_formed_header(
    raw: list[str], biz: str | None
) -> None:
    """An inbound ``baggage`` this hop accepted whole goes out whole (plus biz.code)."""
    raw = [r for r in raw if not r.startswith("biz.code=")]
    carrier = {"baggage": ",".join(raw)}
    if biz is not None:
        carrier["x-biz-code"] = biz
    ctx = extract(carrier, dict_getter)
    out: dict[str, str] = {}
    inject(ctx, out, dict_setter)
    sent = parse_baggage([out["baggage"]]) if "baggage" in out else []
    expected = list(ctx.baggage) + ([("biz.code", biz, "")] if biz else [])
    if len(ctx.baggage) == len(raw) and len(expected) <= BAGGAGE_MAX_MEMBERS:
        assert sent == expected


@given(st.lists(st.builds(lambda k, n: f"{k}={'x' * n}", TOKEN, st.integers(0, 8190)),
                min_size=1, max_size=6), BIZ)
@example(["k=" + "x" * 8188], "tenant-1")
def test_forwarded_baggage_always_carries_this_hops_biz_code(raw: list[str], biz: str) -> None:
    """README: the business code goes out as the header *and* the baggage member; the
    member limit drops an inbound member to make room for it, so should the byte limit."""
    ctx = extract({"baggage": ",".join(raw), "x-biz-code": biz}, dict_getter)
    assert ctx.biz_code == biz
    out: dict[str, str] = {}
    inject(ctx, out, dict_setter)
    assert ("biz.code", biz, "") in parse_baggage([out.get("baggage", "")])
    assert len(out["baggage"]) <= BAGGAGE_MAX_BYTES


# --- the HTTP error-response decoder ----------------------------------------------------

JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False), st.text(ANY_CHAR, max_size=40),
    repeated(st.sampled_from(["x", "é", "\ud800"]), 5000),
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
ERROR_KEYS = ["code", "level", "status", "http_status", "detail", "message", "event_id",
              "trace_id", "span_id", "service", "grpc_status", "caused_by", "retry_after",
              "errors", "error", "title", "type"]
CODE_LIKE = st.sampled_from(sorted(c.id for c in registry)) | st.from_regex(
    r"[A-Z][A-Z0-9_]{0,70}", fullmatch=True
) | st.sampled_from(["", "lower", "BAD\n", " INTERNAL ", "X" * 64, "TIMEOUT\x00"])
ERROR_FIELD_VALUE = st.one_of(
    JSON_VALUE, CODE_LIKE, st.integers(0, 7), st.integers(100, 599),
    repeated(st.sampled_from(["x", "é", "\ud800", "a" * 50]), 3000),
    st.lists(st.dictionaries(st.sampled_from(["code", "event_id", "service", "x"]),
                             CODE_LIKE | JSON_SCALAR, max_size=4), max_size=20),
)
ERROR_DOC = st.dictionaries(st.sampled_from(ERROR_KEYS), ERROR_FIELD_VALUE, max_size=10)
# A plausible error document: a code, then any of the other members, odd or not.
PROBLEM_DOC = st.fixed_dictionaries(
    {"code": CODE_LIKE},
    optional={key: ERROR_FIELD_VALUE for key in ERROR_KEYS if key != "code"},
)
ERROR_DOC = ERROR_DOC | PROBLEM_DOC | st.builds(lambda inner: {"error": inner}, PROBLEM_DOC)


def json_bytes(value: Any, ascii: bool) -> bytes:
    # ensure_ascii: lone surrogates arrive as "\ud800" escapes; else as invalid UTF-8
    return json.dumps(value, ensure_ascii=ascii).encode("utf-8", "surrogatepass")


RESPONSE_BODY = st.one_of(
    st.binary(max_size=200),
    st.builds(json_bytes, ERROR_DOC, st.booleans()),
    st.builds(json_bytes, JSON_VALUE, st.booleans()),
    nested().map(str.encode),
    st.sampled_from([b"{", b'{"code": NaN}', b'{"code": "INTERNAL", "retry_after": Infinity}',
                     b'{"code": "X", "level": ' + b"9" * 5000 + b"}", b"\xff\xfe{}"]),
    mutated(ERROR_DOC.map(json.dumps)).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
RESPONSE_HEADERS = st.dictionaries(
    st.sampled_from(["content-type", "x-error-code", "x-error-level", "x-error-event-id",
                     "retry-after"]),
    st.one_of(st.sampled_from(["application/problem+json", "application/json", "text/html"]),
              CODE_LIKE, st.text(ANY_CHAR, max_size=20), repeated(st.just("e"), 400)),
)
STATUS = st.integers(100, 599) | st.integers() | st.sampled_from([429, 500, 503, 0, -1])


@given(STATUS, RESPONSE_HEADERS, RESPONSE_BODY)
@example(502, {}, b'{"code": "THEIR_CODE", "grpc_status": "nope"}')
def test_http_error_decoder_never_raises_and_bounds_what_it_returns(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    with default_recursion_limit():
        err = from_http_response(status, headers, body, service="svc")
    if err is None:
        return
    assert_bounded_error(err)
    # What was decoded can be passed on, over HTTP and gRPC, by this service.
    config = Config(service_name="me", debug=True)
    ctx = new_root_context()
    code, pairs, payload = ErrorWriter(config).response(err, ctx, "evt")
    problem = json.loads(payload)
    assert problem["code"] == err.code and 400 <= code <= 599
    for name, value in pairs:
        name.decode("latin-1"), value.decode("latin-1")
    error_status(err, ctx, config)


@given(st.sampled_from(sorted(c.id for c in registry)), st.none() | ANY_TEXT,
       st.none() | BIZ)
def test_http_problem_round_trips_code_level_and_event_id(
    code_id: str, message: str | None, biz: str | None
) -> None:
    err = AppError(code_id, message)
    ctx = new_root_context()
    ctx.biz_code = biz
    event_id = new_event_id()
    status, pairs, body = ErrorWriter(Config(service_name="down")).response(err, ctx, event_id)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in pairs}
    back = from_http_response(status, headers, body)
    assert back is not None and back.remote is not None
    assert (back.code, back.level) == (err.code, err.level)
    assert back.remote.event_id == event_id and back.remote.trace_id == ctx.trace_id
    assert back.remote.service == "down" and back.http_status == status


# --- gRPC rich status ---------------------------------------------------------------------

NON_OK = st.sampled_from([c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
META_KEY = st.sampled_from(["level", "traceId", "spanId", "bizCode", "eventId", "service",
                            "causedBy"]) | st.text(max_size=8)
META_VALUE = st.one_of(
    ANY_TEXT, st.integers(-5, 200).map(str), nested(1200),
    ERROR_FIELD_VALUE.map(lambda v: json.dumps(v)[:3000]),
    repeated(st.just("a"), 300),
)


def _scrub(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


@st.composite
def rich_status(draw: st.DrawFn, code: grpc.StatusCode) -> bytes:
    """A ``grpc-status-details-bin`` value: well-formed (possibly lying about the code),
    with odd Any members, or damaged bytes."""
    metadata = draw(st.dictionaries(META_KEY, META_VALUE, max_size=7))
    reason = draw(CODE_LIKE | ANY_TEXT)
    details: list[tuple[bytes, bytes]] = [
        (_wire.ERROR_INFO, _wire.error_info(reason, draw(ANY_TEXT), metadata))
    ]
    if draw(st.booleans()):
        seconds = draw(st.integers(-(2**63), 2**63 - 1))
        nanos = draw(st.integers(-(2**31), 2**31 - 1))
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.seconds, retry.retry_delay.nanos = seconds, nanos
        details.append((_wire.RETRY_INFO, retry.SerializeToString()))
    wire_code = code.value[0] if draw(st.integers(0, 4)) else draw(st.integers(0, 20))
    value = _wire.status(wire_code, _scrub(draw(ANY_TEXT)), details)
    shape = draw(st.sampled_from(["ok", "ok", "junk-any", "cut", "flip", "bytes", "big"]))
    if shape == "junk-any":
        status = status_pb2.Status.FromString(value)
        junk = status_pb2.Status(code=status.code, message=status.message)
        junk.details.add(type_url=draw(st.sampled_from([
            "type.googleapis.com/google.rpc.ErrorInfo", "type.googleapis.com/google.rpc.RetryInfo",
            "x/y", ""])), value=draw(st.binary(max_size=40)))
        junk.details.extend(status.details)
        value = junk.SerializeToString()
    elif shape == "cut":
        value = value[: draw(st.integers(0, len(value)))]
    elif shape == "flip" and value:
        pos = draw(st.integers(0, len(value) - 1))
        value = value[:pos] + bytes([draw(st.integers(0, 255))]) + value[pos + 1:]
    elif shape == "bytes":
        value = draw(st.binary(max_size=200))
    elif shape == "big":
        value = value + b"\x00" * MAX_STATUS_BYTES
    return value


@st.composite
def trailers(draw: st.DrawFn) -> tuple[grpc.StatusCode, list[tuple[str, Any]]]:
    code = draw(NON_OK)
    items: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from([DETAILS_KEY, "x-error-code", "x-error-level",
                                    "x-error-event-id"]) | st.text(max_size=10))
        if key == DETAILS_KEY and draw(st.integers(0, 3)):
            value: Any = draw(rich_status(code))
        else:
            value = draw(st.binary(max_size=40) | CODE_LIKE | ANY_TEXT)
        items.append((key, value))
    return code, items


@given(trailers(), st.none() | ANY_TEXT)
@example(
    (grpc.StatusCode.INTERNAL, [(DETAILS_KEY, _wire.status(13, "m", [(
        _wire.ERROR_INFO, _wire.error_info("INTERNAL", "d", {"causedBy": "[" * 1024 + "]" * 1024})
    )]))]),
    None,
)
def test_grpc_status_decoder_never_raises_and_bounds_what_it_returns(
    status: tuple[grpc.StatusCode, list[tuple[str, Any]]], details: str | None
) -> None:
    code, trailing = status
    with default_recursion_limit():
        err = decode_status(code, details, trailing, Config())
    assert_bounded_error(err)
    assert err.http_status >= 400  # a failed call is never decoded as a success


CODES = st.sampled_from(sorted(c.id for c in registry)) | st.from_regex(
    r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True
)
MESSAGE = st.one_of(
    ANY_TEXT, repeated(st.sampled_from(["a", "é", "你", "%", "\n", "😀", "\ud800"]), 2000),
)


@given(CODES, st.none() | MESSAGE, st.none() | BIZ, st.booleans(),
       st.none() | st.floats(0, 1e6), st.none() | st.dictionaries(TOKEN, ANY_TEXT, max_size=2))
def test_grpc_error_status_round_trips_code_level_and_event_id(
    code_id: str,
    message: str | None,
    biz: str | None,
    debug: bool,
    retry_after: float | None,
    public: dict[str, str] | None,
) -> None:
    details: dict[str, Any] = dict(public or {})
    if retry_after is not None:
        details["retry_after"] = retry_after
    err = AppError(code_id, message, details=details)
    err.event_id = new_event_id()
    ctx = new_root_context()
    ctx.biz_code = biz
    config = Config(service_name="svc", debug=debug)
    status = error_status(err, ctx, config)
    assert status.code is not grpc.StatusCode.OK
    rich = status_pb2.Status.FromString(dict(status.trailing_metadata)[DETAILS_KEY])
    # grpc_status.rpc_status.from_call requires grpc-message == the rich status message
    assert rich.code == status.code.value[0] and rich.message == status.details
    assert status.details == sendable_message(detail_text(err, debug))
    back = decode_status(status.code, status.details, status.trailing_metadata, config)
    assert back.remote is not None
    assert (back.code, back.level) == (err.code, err.level)
    assert back.remote.event_id == err.event_id and back.remote.trace_id == ctx.trace_id
    assert back.remote.service == "svc"
    assert back.remote.message == (status.details or None)
    if err.retryable and err.retry_after is not None:
        assert back.retry_after == pytest.approx(err.retry_after, abs=1e-6)


def grpc_message_size(text: str) -> int:
    """Bytes of ``text`` in ``grpc-message``: UTF-8, then every byte outside printable
    ASCII (and ``%``) percent-encoded (gRPC over HTTP/2, "Status-Message")."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in text.encode("utf-8"))


@given(MESSAGE | st.text(ANY_CHAR, min_size=300, max_size=1200))
@example("é" * 170 + "a")
@example("%" * 342)
@example("a" * 1021 + "😀")
def test_sendable_message_fits_the_wire_and_cuts_at_a_character(text: str) -> None:
    out = sendable_message(text)
    out.encode("utf-8")  # sendable: no lone surrogate
    assert grpc_message_size(out) <= MAX_MESSAGE_BYTES
    clean = _scrub(text)
    if grpc_message_size(clean) <= MAX_MESSAGE_BYTES:
        assert out == clean  # a message that fits is sent whole
    else:
        assert out.endswith("...") and clean.startswith(out[:-3])
        # cut as late as it could be: one more character would not have fit
        nxt = clean[len(out) - 3: len(out) - 2]
        assert grpc_message_size(out[:-3] + nxt + "...") > MAX_MESSAGE_BYTES


# --- the string map of ErrorInfo.metadata -------------------------------------------------

SCALAR_NAMES = [("trace_id", "traceId"), ("span_id", "spanId"), ("biz_code", "bizCode"),
                ("event_id", "eventId"), ("service", "service")]
LINK = st.dictionaries(st.text(max_size=10), st.none() | st.booleans() | st.integers()
                       | st.text(ANY_CHAR, max_size=60), max_size=5)


@given(
    st.integers(0, 99) | st.integers() | st.none(),
    st.fixed_dictionaries({}, optional={k: st.text(ANY_CHAR, min_size=1, max_size=128)
                                        for k, _ in SCALAR_NAMES}),
    st.none() | st.lists(LINK | JSON_SCALAR, max_size=20),
    st.none() | CODES, st.none() | ANY_TEXT,
)
def test_string_map_round_trips_the_neutral_fields(
    level: int | None,
    scalars: dict[str, str],
    chain: list[Any] | None,
    code: str | None,
    message: str | None,
) -> None:
    data: dict[str, Any] = {"level": level, **scalars, "caused_by": chain}
    flat = to_string_map(data)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in flat.items())
    assert len(flat.get("causedBy", "")) <= MAX_CAUSED_BY_CHARS
    back = from_string_map(flat, code=code, message=message)
    assert back.get("code") == code and back.get("message") == (message or None)
    assert back.get("level") == (level if level is not None and 0 <= level <= 99 else None)
    for key, _ in SCALAR_NAMES:
        assert back.get(key) == scalars.get(key)
    links = [link for link in (chain or [])[:MAX_CHAIN] if isinstance(link, dict)]
    got = back.get("caused_by", [])
    assert got == links[: len(got)]  # whole links, nearest first, farthest dropped first
    if links and len(json.dumps(links, separators=(",", ":"))) <= MAX_CAUSED_BY_CHARS:
        assert got == links


@given(st.dictionaries(META_KEY, META_VALUE, max_size=7), st.none() | CODE_LIKE)
@example({"causedBy": "[" * 1024 + "]" * 1024}, None)
def test_from_string_map_never_raises_on_any_metadata(
    metadata: dict[str, str], code: str | None
) -> None:
    with default_recursion_limit():
        out = from_string_map(metadata, code=code)
    for key, _ in SCALAR_NAMES:
        assert out.get(key) is None or len(out[key]) <= 128
    assert isinstance(out.get("caused_by", []), list)
    assert len(out.get("caused_by", [])) <= MAX_CHAIN


# --- the response rewriter ----------------------------------------------------------------

PROVIDER_WORDS = [
    "Rate limit reached for gpt-4o in organization org-x on tokens per min. ",
    "Please try again in ", "try again in 1h2m3.5s", "retry after ", "retry_delay: ",
    "This model's maximum context length is 8192 tokens. However, you requested 9000",
    "prompt is too long: 300000 tokens > 200000", "Error code: 429 - ", "status_code: 503",
    '{"error": {"type": "invalid_request_error", "code": "context_length_exceeded", ',
    '"message": "', '"}}', "overloaded_error", "model 'llama3' not found", "\u0663\u0664s",
    "insufficient_quota", "HTTP/1.1 504 Gateway Timeout", "<html><body>", "</body></html>",
    "deployment named gpt4 does not exist", "ms", "s", "seconds", "İ", "ß", "\ud800", "{", "}",
]
PROVIDER_TEXT = st.lists(
    st.sampled_from(PROVIDER_WORDS) | st.text(ANY_CHAR, max_size=10)
    | st.integers(0, 10**9).map(str), max_size=25,
).map("".join)
REWRITE_BODY = st.one_of(
    PROVIDER_TEXT, PROVIDER_TEXT.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=300), ANY_TEXT, repeated(st.sampled_from(PROVIDER_WORDS), 400),
    nested(2000),
)
CONTENT_TYPE = st.none() | st.sampled_from(
    ["text/html", "TEXT/HTML; charset=x", "application/json", "text/plain", ""]
) | st.text(ANY_CHAR, max_size=20)


@given(STATUS, REWRITE_BODY, CONTENT_TYPE, st.none() | st.sampled_from(
    ["openai", "anthropic", "Azure-OpenAI", "nope", ""]) | st.text(max_size=10))
def test_rewriter_never_fails_and_answers_a_registered_code(
    status: int, body: str | bytes, content_type: str | None, provider: str | None
) -> None:
    with default_recursion_limit():
        found = from_response(status, body, content_type, provider=provider)
    assert found.rule != "fallback:error", "the classifier raised (caught by its failsafe)"
    assert found.code in registry
    assert 0.0 <= found.confidence <= 1.0
    assert len(found.text) <= default_ruleset.max_input + 8
    retry = found.details.get("retry_after")
    assert retry is None or (math.isfinite(retry) and retry >= 0)
    json.dumps(found.as_dict(), allow_nan=False)  # "a JSON-ready dict"


# --- the ASGI middleware ------------------------------------------------------------------

APP_HEADER = st.tuples(
    st.binary(min_size=1, max_size=12).filter(
        lambda b: b.decode("latin-1").lower() == b.decode("latin-1") and b != b"x-trace-id"
    ) | st.sampled_from([b"content-type", b"set-cookie", b"x-ratelimit-remaining",
                         b"retry-after", b"x-error-code"]),
    st.binary(max_size=40) | st.sampled_from([b"text/event-stream", b"application/json",
                                              b"text/html", b"a=1", b"5"]),
)


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _run(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": headers,
             "query_string": b""}
    asyncio.run(app(scope, _receive, send))
    return sent


def _one_trace_id(start: Mapping[str, Any]) -> str:
    values = [v for k, v in start["headers"] if k == b"x-trace-id"]
    assert len(values) == 1, values
    trace_id = values[0].decode("latin-1")
    assert is_id(trace_id, 32)
    return str(trace_id)


def _app(status: int, headers: list[tuple[bytes, bytes]], chunks: list[bytes],
         raises: str | None) -> Callable[..., Any]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if raises == "app-error":
            raise AppError("LLM_RATE_LIMITED")
        if raises == "crash":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": i < len(chunks) - 1})
    return app


def _check_response(sent: list[dict[str, Any]]) -> tuple[dict[str, Any], bytes]:
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert bodies and not bodies[-1].get("more_body", False)
    assert all(m.get("more_body", False) for m in bodies[:-1])
    return starts[0], b"".join(m.get("body", b"") for m in bodies)


@given(PAIRS, st.integers(200, 599), st.lists(APP_HEADER, max_size=4),
       st.lists(st.binary(max_size=30), min_size=1, max_size=3),
       st.sampled_from([None, None, "app-error", "crash"]))
def test_asgi_middleware_answers_every_request_with_one_trace_id(
    inbound: list[tuple[bytes, bytes]],
    status: int,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    raises: str | None,
) -> None:
    app = ErrtraceMiddleware(_app(status, headers, chunks, raises),
                             config=Config(log_errors=False))
    start, body = _check_response(_run(app, inbound))
    trace_id = _one_trace_id(start)
    expected = extract_pairs(inbound)
    if expected.remote:
        assert trace_id == expected.trace_id
    if raises is None:
        assert start["status"] == status and body == b"".join(chunks)
    else:
        code = "LLM_RATE_LIMITED" if raises == "app-error" else "INTERNAL"
        assert start["status"] == registry.get(code).http_status
        problem = json.loads(body)
        assert problem["code"] == code and problem["trace_id"] == trace_id


@given(PAIRS, st.integers(400, 599), st.lists(APP_HEADER, max_size=5),
       st.lists(REWRITE_BODY.map(lambda b: b.encode("utf-8", "surrogatepass")
                                 if isinstance(b, str) else b), min_size=1, max_size=3))
@example([], 500, [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
         [b"Rate limit reached for gpt-4o"])
def test_asgi_rewriter_answers_with_a_registered_code_or_the_app_response(
    inbound: list[tuple[bytes, bytes]],
    status: int,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
) -> None:
    app = ErrtraceMiddleware(_app(status, headers, chunks, None),
                             config=Config(log_errors=False, rewrite_responses=True))
    start, body = _check_response(_run(app, inbound))
    trace_id = _one_trace_id(start)
    out = start["headers"]
    codes = [v.decode("latin-1") for k, v in out if k == b"x-error-code"]
    if any(k == b"x-error-code" for k, _ in headers) or not codes:
        assert start["status"] == status and body == b"".join(chunks)  # passed through
        return
    assert len(codes) == 1 and codes[0] in registry
    assert start["status"] == registry.get(codes[0]).http_status
    problem = json.loads(body)
    assert problem["code"] == codes[0] and problem["trace_id"] == trace_id
    # The app's other headers stay on the answer, every one a response can carry (a
    # token for a name, no control character but tab in a value); the rest never do.
    replaced = {b"content-type", b"content-length", b"content-encoding", b"transfer-encoding",
                b"retry-after", b"x-error-code", b"x-error-level", b"x-error-event-id",
                b"x-trace-id"}
    for name, value in headers:
        if name not in replaced:
            sendable = (re.fullmatch(rb"[!#$%&'*+.^_`|~0-9a-z-]+", name) is not None
                        and re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value) is None)
            assert ((name, value) in out) == sendable, (name, value)


# --- configuration from the environment ---------------------------------------------------

ENV_NAMES = [f"ERRTRACE_{name.upper()}" for name in Config.field_names()]
ENV_WORDS = ["true", "false", "1", "0", "yes", "off", "auto", "none", "/api,/v1", "8192",
             "-5", "X-Biz-Code", "x biz", "(", ")", "[a-z]", "{", "}", "a", "^$", ".*",
             "\u0663", "9" * 30]
ENV_VALUE = st.one_of(
    ANY_TEXT,
    st.lists(st.sampled_from(ENV_WORDS) | st.integers(0, 2**40).map(str), max_size=6).map(
        "".join),
    nested(800).map(lambda s: s.replace("[", "(").replace("]", ")")),
)


@given(st.dictionaries(st.sampled_from(ENV_NAMES) | st.text(max_size=12).map(
    lambda s: "ERRTRACE_" + s), ENV_VALUE, max_size=5).map(
    lambda env: {k: v for k, v in env.items() if k != "ERRTRACE_CONFIG_FILE"}))
@example({"ERRTRACE_BIZ_PATTERN": "a{4294967296}"})  # OverflowError, fixed in 2963e3d
@example({"ERRTRACE_BIZ_PATTERN": "(" * 500 + ")" * 500})  # RecursionError, likewise
def test_config_from_any_environment_is_a_config_or_a_config_error(
    env: dict[str, str],
) -> None:
    try:
        with default_recursion_limit():
            config = Config.load(env=env)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(config, Config)
    # A config that loads is usable on a request.
    ctx = extract({"x-biz-code": "tenant-1"}, dict_getter, config.propagation)
    assert_valid_context(ctx, config.propagation)


@given(st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=30)
       | st.integers(1, 400).map(lambda n: "n" * n))
@example("a\x00b")
def test_an_unreadable_config_file_is_an_error_naming_it(name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)  # "." and ".." are directories; nothing else exists
        with pytest.raises((ConfigError, ConfigFileError)) as info:
            Config.load(env={"ERRTRACE_CONFIG_FILE": path})
        # Named as it is, or quoted when it holds a character that is not printable.
        shown = path if path.isprintable() else repr(path)
        assert str(info.value).startswith(shown + ": ")
        assert str(info.value).isprintable()
