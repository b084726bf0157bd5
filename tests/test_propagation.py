"""W3C Trace Context (Level 2) and W3C Baggage rules of the core propagation."""

from __future__ import annotations

import pytest

from errtrace.core.context import FLAG_RANDOM, FLAG_SAMPLED
from errtrace.core.propagation import (
    DEFAULT_SETTINGS,
    PropagationSettings,
    dict_getter,
    dict_setter,
    extract,
    extract_pairs,
    format_baggage,
    inject,
    parse_baggage,
    parse_traceparent,
    parse_tracestate,
)
from errtrace.core.stats import stats

from .conftest import TRACE_ID, TRACEPARENT

VALID = TRACEPARENT


@pytest.mark.parametrize(
    "value",
    [
        VALID,
        " " + VALID,
        "\t" + VALID + " \t",
        "cc-12345678901234567890123456789012-1234567890123456-01",
        "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
    ],
)
def test_valid_traceparent_is_continued(value: str) -> None:
    parsed = parse_traceparent(value)
    assert parsed is not None
    assert parsed.trace_id == TRACE_ID
    assert parsed.parent_id == "1234567890123456"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        VALID + ".",  # version 00 must be exactly 55 characters
        VALID + "-what-the-future-will-be-like",
        "cc-12345678901234567890123456789012-1234567890123456-01.what-the-future",
        "ff-12345678901234567890123456789012-1234567890123456-01",  # version ff invalid
        ".0-12345678901234567890123456789012-1234567890123456-01",
        "0.-12345678901234567890123456789012-1234567890123456-01",
        "000-12345678901234567890123456789012-1234567890123456-01",
        "0-12345678901234567890123456789012-1234567890123456-01",
        "00-00000000000000000000000000000000-1234567890123456-01",  # all-zero trace id
        "00-12345678901234567890123456789012-0000000000000000-01",  # all-zero parent
        "00-.2345678901234567890123456789012-1234567890123456-01",
        "00-123456789012345678901234567890123-1234567890123456-01",
        "00-1234567890123456789012345678901-1234567890123456-01",
        "00-12345678901234567890123456789012-12345678901234567-01",
        "00-12345678901234567890123456789012-123456789012345-01",
        "00-12345678901234567890123456789012-1234567890123456-.0",
        "00-12345678901234567890123456789012-1234567890123456-001",
        "00-12345678901234567890123456789012-1234567890123456-1",
        "00-1234567890ABCDEF1234567890123456-1234567890123456-01",  # upper-case hex
        "00-12345678901234567890123456789012-1234567890ABCDEF-01",
        "x" * 100_000,
    ],
)
def test_invalid_traceparent_is_rejected(value: str) -> None:
    assert parse_traceparent(value) is None


def test_invalid_traceparent_starts_new_trace_and_drops_tracestate() -> None:
    carrier = {
        "traceparent": "00-00000000000000000000000000000000-1234567890123456-01",
        "tracestate": "foo=1",
    }
    ctx = extract(carrier, dict_getter)
    assert ctx.trace_id != "0" * 32 and len(ctx.trace_id) == 32
    assert ctx.parent_span_id is None
    assert ctx.tracestate is None
    assert ctx.remote is False
    assert stats.get("traceparent_invalid") == 1


def test_duplicated_traceparent_headers_start_new_trace() -> None:
    ctx = extract({"traceparent": [VALID, VALID.replace("12-", "11-", 1)]}, dict_getter)
    assert ctx.trace_id != TRACE_ID


def test_new_hop_gets_new_span_with_caller_as_parent() -> None:
    ctx = extract({"TraceParent": VALID}, dict_getter)
    assert ctx.trace_id == TRACE_ID
    assert ctx.parent_span_id == "1234567890123456"
    assert ctx.span_id != "1234567890123456" and len(ctx.span_id) == 16
    assert ctx.remote is True


def test_flags_keep_sampled_and_random_and_zero_unknown_bits() -> None:
    ctx = extract({"traceparent": VALID[:-2] + "ff"}, dict_getter)
    assert ctx.trace_flags == FLAG_SAMPLED | FLAG_RANDOM
    ctx = extract({"traceparent": VALID[:-2] + "02"}, dict_getter)
    assert ctx.trace_flags == FLAG_RANDOM
    headers: dict[str, str] = {}
    inject(ctx, headers, dict_setter)
    assert headers["traceparent"].endswith("-02")


def test_future_version_is_forwarded_as_version_00() -> None:
    ctx = extract(
        {"traceparent": "cc-12345678901234567890123456789012-1234567890123456-01-xyz"},
        dict_getter,
    )
    headers: dict[str, str] = {}
    inject(ctx, headers, dict_setter)
    assert headers["traceparent"].startswith("00-" + TRACE_ID + "-")


def test_new_trace_sets_random_flag() -> None:
    ctx = extract({}, dict_getter)
    assert ctx.trace_flags & FLAG_RANDOM


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["foo=1,bar=2"], "foo=1,bar=2"),
        (["foo=1 \t , \t bar=2, \t baz=3"], "foo=1,bar=2,baz=3"),
        (["\t foo=1 \t"], "foo=1"),
        (["foo=1,bar=2", "rojo=1,congo=2", "baz=3"], "foo=1,bar=2,rojo=1,congo=2,baz=3"),
        (["", "foo=1"], "foo=1"),
        (["foo=1", ""], "foo=1"),
        ([""], None),
        (["t" * 241 + "@" + "v" * 14 + "=1"], "t" * 241 + "@" + "v" * 14 + "=1"),
        (["z" * 256 + "=1"], "z" * 256 + "=1"),
    ],
)
def test_tracestate_valid(values: list[str], expected: str | None) -> None:
    assert parse_tracestate(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        ["foo=1,foo=1"],
        ["foo=1", "foo=2"],  # duplicates across headers
        ["foo =1"],
        ["FOO=1"],
        ["foo.bar=1"],
        ["foo@=1,bar=2"],
        ["@foo=1,bar=2"],
        ["foo@@bar=1,bar=2"],
        ["foo@bar@baz=1,bar=2"],
        ["foo=1", "z" * 257 + "=1"],
        ["foo=1", "t" * 242 + "@v=1"],
        ["foo=1", "t@" + "v" * 15 + "=1"],
        ["foo=bar=baz"],
        ["foo=,bar=3"],
        [",".join(f"bar{i:02d}={i:02d}" for i in range(1, 34))],  # 33 members
    ],
)
def test_tracestate_invalid_is_dropped_whole(values: list[str]) -> None:
    assert parse_tracestate(values) is None


def test_tracestate_32_members_kept() -> None:
    members = [f"bar{i:02d}={i:02d}" for i in range(1, 33)]
    assert parse_tracestate([",".join(members[:10]), ",".join(members[10:])]) == ",".join(members)


def test_tracestate_all_allowed_characters() -> None:
    key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
    value = (
        "".join(map(chr, range(0x20, 0x2C)))
        + "".join(map(chr, range(0x2D, 0x3D)))
        + "".join(map(chr, range(0x3E, 0x7F)))
    )
    assert parse_tracestate([f"{key}={value}"]) == f"{key}={value}"
    assert parse_tracestate([f"{key}@a-z0-9_-*/={value}"]) == f"{key}@a-z0-9_-*/={value}"


def test_tracestate_over_512_drops_long_members_first() -> None:
    long_member = "big=" + "x" * 200
    small = [f"k{i}=" + "v" * 20 for i in range(20)]  # 20 * 24 = 480 characters
    result = parse_tracestate([",".join([small[0], long_member, *small[1:]])])
    assert result is not None
    assert "big=" not in result
    assert len(result) <= 512
    assert result.startswith("k0=")


def test_tracestate_forwarded_unchanged_on_outgoing_calls() -> None:
    ctx = extract({"traceparent": VALID, "tracestate": "rojo=00f067aa0ba902b7"}, dict_getter)
    headers: dict[str, str] = {}
    inject(ctx, headers, dict_setter)
    assert headers["tracestate"] == "rojo=00f067aa0ba902b7"


def test_inject_fresh_child_span_per_call() -> None:
    ctx = extract({"traceparent": VALID}, dict_getter)
    spans = set()
    for _ in range(5):
        headers: dict[str, str] = {}
        child = inject(ctx, headers, dict_setter)
        version, trace_id, span, flags = headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert span == child and span != ctx.span_id
        spans.add(span)
    assert len(spans) == 5
    assert ctx.outgoing_spans == sorted(spans, key=ctx.outgoing_spans.index)


# --- baggage -----------------------------------------------------------------------------


def test_baggage_percent_decoding_and_properties() -> None:
    members = parse_baggage(["userId=alice%20smith;ttl=60 , serverNode=DF%3A28,  isProd=false"])
    assert members == [
        ("userId", "alice smith", "ttl=60"),
        ("serverNode", "DF:28", ""),
        ("isProd", "false", ""),
    ]


def test_baggage_round_trip_encodes_unsafe_characters() -> None:
    original = [("k", 'a b,c;d"e\\f%g', ""), ("unicode", "café ☕", "p=1")]
    assert parse_baggage([format_baggage(original)]) == original


def test_baggage_invalid_members_dropped_one_by_one() -> None:
    members = parse_baggage(["good=1,bad key=2,novalue,also=ok,quoted=\"x\""])
    assert [m[0] for m in members] == ["good", "also"]
    assert stats.get("baggage_members_dropped") == 3


def test_baggage_member_limit_64_keeps_whole_members() -> None:
    header = ",".join(f"k{i}=v{i}" for i in range(100))
    members = parse_baggage([header])
    assert len(members) == 64
    assert members[-1] == ("k63", "v63", "")


def test_baggage_byte_limit_never_keeps_partial_members() -> None:
    big = "x" * 3000
    header = ",".join(f"k{i}={big}" for i in range(5))  # ~15 000 bytes
    members = parse_baggage([header])
    assert len(members) == 2  # 2 * 3003 + 1 <= 8192 < 3 members
    assert all(value == big for _, value, _ in members)
    assert len(format_baggage(members)) <= 8192


def test_format_baggage_respects_limits() -> None:
    members = [(f"k{i}", "v" * 200, "") for i in range(80)]
    out = format_baggage(members)
    assert len(out) <= 8192
    assert out.count(",") + 1 <= 64


# --- business code ---------------------------------------------------------------------


def test_biz_code_from_header_validated() -> None:
    ctx = extract({"x-biz-code": "tenant-42"}, dict_getter)
    assert ctx.biz_code == "tenant-42"


@pytest.mark.parametrize("bad", ["-leading", "has space", "x" * 65, "<script>", "é", ""])
def test_invalid_biz_code_dropped_and_counted(bad: str) -> None:
    ctx = extract({"x-biz-code": bad}, dict_getter)
    assert ctx.biz_code is None
    assert stats.get("biz_code_rejected") == 1


def test_biz_code_verdicts_are_remembered_and_rejections_still_counted() -> None:
    for _ in range(3):
        assert extract({"x-biz-code": "tenant-42"}, dict_getter).biz_code == "tenant-42"
        assert extract({"x-biz-code": "<script>"}, dict_getter).biz_code is None
    assert stats.get("biz_code_rejected") == 3


def test_biz_code_memo_is_bounded_and_per_pattern() -> None:
    import re
    from dataclasses import replace

    settings = replace(DEFAULT_SETTINGS)
    for i in range(3000):  # a client sending a new value with every request
        assert extract({"x-biz-code": f"v{i}"}, dict_getter, settings).biz_code == f"v{i}"
    assert len(settings._biz_seen) <= 1024
    # A value the default pattern accepted is judged again under another pattern.
    assert extract({"x-biz-code": "tenant-42"}, dict_getter).biz_code == "tenant-42"
    strict = replace(DEFAULT_SETTINGS, biz_pattern=re.compile(r"t\d+"))
    assert extract({"x-biz-code": "tenant-42"}, dict_getter, strict).biz_code is None
    assert extract({"x-biz-code": "t7"}, dict_getter, strict).biz_code == "t7"


def test_biz_code_from_baggage_when_no_header() -> None:
    ctx = extract({"baggage": "other=1,biz.code=payment"}, dict_getter)
    assert ctx.biz_code == "payment"


def test_biz_code_header_wins_over_baggage_and_outgoing_agrees() -> None:
    ctx = extract({"x-biz-code": "tenant-1", "baggage": "biz.code=tenant-2,a=b"}, dict_getter)
    assert ctx.biz_code == "tenant-1"
    headers: dict[str, str] = {}
    inject(ctx, headers, dict_setter)
    assert headers["x-biz-code"] == "tenant-1"
    assert parse_baggage([headers["baggage"]]) == [("a", "b", ""), ("biz.code", "tenant-1", "")]



def test_forwarded_baggage_makes_room_in_bytes_for_the_biz_code() -> None:
    # Inbound members that fill the 8192 bytes used to push biz.code (last) out.
    a, b = "x" * 4000, "y" * 4180
    inbound = f"a={a},b={b},c=1"  # 8189 bytes: all three are kept on the way in
    ctx = extract({"x-biz-code": "tenant-1", "baggage": inbound}, dict_getter)
    assert [key for key, _, _ in ctx.baggage] == ["a", "b", "c"]
    headers: dict[str, str] = {}
    inject(ctx, headers, dict_setter)
    out = headers["baggage"]
    assert len(out) <= 8192
    # b no longer fits beside biz.code and is dropped (counted); c still fits.
    assert parse_baggage([out]) == [("a", a, ""), ("c", "1", ""), ("biz.code", "tenant-1", "")]
    assert stats.get("baggage_members_dropped") == 1
    full = extract({"x-biz-code": "tenant-1", "baggage": "k=" + "x" * 8188}, dict_getter)
    inject(full, headers, dict_setter)
    assert headers["baggage"] == "biz.code=tenant-1"
    assert stats.get("baggage_members_dropped") == 2

def test_inbound_error_code_header_is_ignored() -> None:
    ctx = extract({"x-error-code": "INTERNAL"}, dict_getter)
    assert ctx.err_code is None


def test_settings_are_used_for_biz_header() -> None:
    import re
    from dataclasses import replace

    settings = replace(DEFAULT_SETTINGS, biz_header="x-tenant", biz_pattern=re.compile(r"t\d+"))
    assert extract({"x-tenant": "t7"}, dict_getter, settings).biz_code == "t7"
    assert extract({"x-tenant": "tenant-7"}, dict_getter, settings).biz_code is None


@pytest.mark.parametrize(
    "header",
    [
        "tenant=acme;\u00e9t\u00e9",  # non-ASCII property (latin-1 bytes on the wire)
        "k=v;prop\r\nx",  # controls in a property
        "k=v\r\n",  # ... and in a value
        "k=v;bad key=1",
        "k=v;p=has space",
        "k=caf\u00e9",
    ],
)
def test_baggage_members_with_invalid_values_or_properties_are_dropped(header: str) -> None:
    ctx = extract({"baggage": header + ",good=1;ttl=60"}, dict_getter)
    assert ctx.baggage == [("good", "1", "ttl=60")]
    out: dict[str, str] = {}
    inject(ctx, out, dict_setter)
    assert out["baggage"] == "good=1;ttl=60"
    assert out["baggage"].isascii() and "\r" not in out["baggage"]


def test_baggage_octets_that_are_not_utf8_become_replacement_characters() -> None:
    assert parse_baggage(["a=%FF,b=%E2%82,c=ok"]) == [
        ("a", "\ufffd", ""), ("b", "\ufffd", ""), ("c", "ok", ""),
    ]


def _forward(baggage: str) -> str:
    """The ``baggage`` a hop sends on its outgoing calls after receiving ``baggage``."""
    ctx = extract({"baggage": baggage}, dict_getter)
    out: dict[str, str] = {}
    inject(ctx, out, dict_setter)
    return out.get("baggage", "")


@pytest.mark.parametrize(
    ("inbound", "value", "sent"),
    [
        ("k=a%zzb", "a%zzb", "k=a%25zzb"),  # "%" not starting an escape is kept as is
        ("k=a%4", "a%4", "k=a%254"),  # an escape cut short by the end
        ("k=%", "%", "k=%25"),
        ("k=%%41", "%A", "k=%25A"),
        ("k=a%E2%82", "a\ufffd", "k=a%EF%BF%BD"),  # not UTF-8: U+FFFD, as W3C Baggage says
        ("k=%41%7e", "A~", "k=A~"),  # needless escapes are sent plain
    ],
)
def test_forwarded_baggage_with_a_malformed_escape_is_stable_after_the_first_hop(
    inbound: str, value: str, sent: str
) -> None:
    hops = [inbound]
    for _ in range(3):
        hops.append(_forward(hops[-1]))
    assert hops[1:] == [sent] * 3  # not one byte more per hop
    assert [parse_baggage([wire]) for wire in hops] == [[("k", value, "")]] * 4


@pytest.mark.parametrize(
    ("inbound", "members"),
    [
        ("k=DF%2028", [("k", "DF 28", "")]),
        ("k=a%2Cb%3Bc%22d", [("k", 'a,b;c"d', "")]),
        ("k=100%25,e=%2541", [("k", "100%", ""), ("e", "%41", "")]),  # decoded once only
        (
            "k=caf%C3%A9%20%E2%98%95%F0%9F%98%80;ttl=60",  # UTF-8 of 2, 3 and 4 bytes
            [("k", "caf\u00e9 \u2615\U0001f600", "ttl=60")],
        ),
        ("k=a=b/c:d", [("k", "a=b/c:d", "")]),
    ],
)
def test_forwarded_baggage_with_well_formed_values_round_trips_byte_for_byte(
    inbound: str, members: list[tuple[str, str, str]]
) -> None:
    assert parse_baggage([inbound]) == members
    wire = inbound
    for _ in range(3):
        wire = _forward(wire)
        assert wire == inbound


def test_biz_code_survives_a_full_inbound_baggage() -> None:
    inbound = ",".join(f"k{i}=v{i}" for i in range(64))
    carrier = {"traceparent": TRACEPARENT, "baggage": inbound, "x-biz-code": "tenant-42"}
    ctx = extract(carrier, dict_getter, DEFAULT_SETTINGS)
    out: dict[str, str] = {}
    inject(ctx, out, dict_setter, DEFAULT_SETTINGS)
    sent = parse_baggage([out["baggage"]])
    assert len(sent) == 64 and ("biz.code", "tenant-42", "") in sent
    assert ("k63", "v63", "") not in sent  # the one inbound member over the limit
    assert stats.snapshot().get("baggage_members_dropped") == 1


# --- extract_pairs: ASGI's (name, value) byte pairs -------------------------------------


def _pairs(*items: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]


def test_pairs_with_unique_names_give_all_four_layers() -> None:
    ctx = extract_pairs(
        _pairs(
            ("host", "api"),
            ("traceparent", VALID),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("baggage", "tenant=acme,note=a%20b"),
            ("x-biz-code", " checkout.v2 "),
        )
    )
    assert (ctx.trace_id, ctx.parent_span_id, ctx.remote) == (TRACE_ID, "1234567890123456", True)
    assert ctx.tracestate == "congo=t61rcWkgMzE"
    assert [(k, v) for k, v, _ in ctx.baggage] == [("tenant", "acme"), ("note", "a b")]
    assert ctx.biz_code == "checkout.v2"


def test_pairs_with_a_repeated_unrelated_name_still_continue_the_trace() -> None:
    ctx = extract_pairs(
        _pairs(("cookie", "a=1"), ("traceparent", VALID), ("cookie", "b=2"), ("x-biz-code", "b1"))
    )
    assert ctx.trace_id == TRACE_ID and ctx.remote
    assert ctx.biz_code == "b1"


def test_pairs_with_two_traceparents_start_a_new_trace_and_count_it() -> None:
    ctx = extract_pairs(
        _pairs(("traceparent", VALID), ("traceparent", VALID), ("tracestate", "a=1"))
    )
    assert ctx.trace_id != TRACE_ID and not ctx.remote
    assert ctx.tracestate is None
    assert stats.get("traceparent_invalid") == 1


def test_pairs_with_repeated_baggage_and_tracestate_keep_every_value_in_order() -> None:
    ctx = extract_pairs(
        _pairs(
            ("baggage", "a=1"),
            ("traceparent", VALID),
            ("tracestate", "x=1"),
            ("baggage", "biz.code=from-baggage,b=2"),
            ("tracestate", "y=2"),
        )
    )
    assert [k for k, _, _ in ctx.baggage] == ["a", "biz.code", "b"]
    assert ctx.tracestate == "x=1,y=2"
    assert ctx.biz_code == "from-baggage"


def test_pairs_from_any_iterable_and_empty_values() -> None:
    ctx = extract_pairs(iter(_pairs(("traceparent", ""), ("x-biz-code", ""))))
    assert not ctx.remote and ctx.biz_code is None
    assert stats.get("traceparent_invalid") == 1
    assert stats.get("biz_code_rejected") == 1


def test_pairs_read_the_configured_business_header() -> None:
    settings = PropagationSettings(biz_header="X-Tenant-Flow")
    ctx = extract_pairs(_pairs(("x-tenant-flow", "flow-7"), ("x-biz-code", "other")), settings)
    assert ctx.biz_code == "flow-7"


def test_outgoing_spans_become_a_list_at_the_first_call_and_stop_at_32() -> None:
    ctx = extract({"traceparent": VALID}, dict_getter)
    assert list(ctx.outgoing_spans) == []
    sent = [inject(ctx, {}, dict_setter) for _ in range(40)]
    assert ctx.outgoing_spans == sent[:32]
