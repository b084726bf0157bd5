"""The code catalog, the registry, and loading user codes from YAML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import errtrace
from errtrace.core.codes import BUILTIN_CODES, CodeDefinitionError, CodeRegistry, ErrorCode
from errtrace.core.levels import Level
from errtrace.core.status import GRPC_CODES

# The public contract of CODES.md: id -> (level, http, grpc, retryable).
CATALOG = {
    "INTERNAL": (1, 500, "INTERNAL", False),
    "VALIDATION_FAILED": (3, 422, "INVALID_ARGUMENT", False),
    "BAD_REQUEST": (3, 400, "INVALID_ARGUMENT", False),
    "UNAUTHENTICATED": (3, 401, "UNAUTHENTICATED", False),
    "PERMISSION_DENIED": (3, 403, "PERMISSION_DENIED", False),
    "NOT_FOUND": (3, 404, "NOT_FOUND", False),
    "CONFLICT": (3, 409, "ABORTED", False),
    "PAYLOAD_TOO_LARGE": (3, 413, "INVALID_ARGUMENT", False),
    "RATE_LIMITED": (2, 429, "RESOURCE_EXHAUSTED", True),
    "CIRCUIT_OPEN": (2, 503, "UNAVAILABLE", True),
    "TIMEOUT": (2, 504, "DEADLINE_EXCEEDED", True),
    "UPSTREAM_UNAVAILABLE": (2, 503, "UNAVAILABLE", True),
    "UPSTREAM_ERROR": (2, 502, "UNAVAILABLE", True),
    "CANCELLED": (5, 499, "CANCELLED", False),
    "NOT_IMPLEMENTED": (3, 501, "UNIMPLEMENTED", False),
    "AI_PROCESS_UNSAFE": (0, 500, "INTERNAL", False),
    "AI_MODEL_LOAD_FAILED": (1, 503, "UNAVAILABLE", False),
    "AI_GPU_OUT_OF_MEMORY": (1, 503, "RESOURCE_EXHAUSTED", True),
    "AI_RUNTIME_INIT_FAILED": (2, 503, "UNAVAILABLE", True),
    "AI_INFERENCE_TIMEOUT": (2, 504, "DEADLINE_EXCEEDED", True),
    "AI_COORDINATION_LOST": (2, 503, "UNAVAILABLE", True),
    "AI_EMBEDDING_FAILED": (2, 503, "UNAVAILABLE", True),
    "AI_VECTOR_INDEX_UNAVAILABLE": (2, 503, "UNAVAILABLE", True),
    "AI_TENSOR_SHAPE_MISMATCH": (3, 400, "INVALID_ARGUMENT", False),
    "AI_PROMPT_TEMPLATE_VAR_MISSING": (3, 400, "INVALID_ARGUMENT", False),
    "AI_POLICY_REJECTED": (3, 403, "PERMISSION_DENIED", False),
    "AI_COMPLIANCE_CHECK_FAILED": (3, 451, "FAILED_PRECONDITION", False),
    "AI_LATENCY_DEGRADED": (4, None, None, False),
    "AI_CACHE_MISS": (5, None, None, False),
    "AI_COLD_START": (5, None, None, False),
    "LLM_CONTEXT_LENGTH_EXCEEDED": (3, 400, "INVALID_ARGUMENT", False),
    "LLM_RATE_LIMITED": (2, 429, "RESOURCE_EXHAUSTED", True),
    "LLM_QUOTA_EXCEEDED": (1, 429, "RESOURCE_EXHAUSTED", False),
    "LLM_AUTH_FAILED": (1, 502, "UNAVAILABLE", False),
    "LLM_PERMISSION_DENIED": (1, 502, "UNAVAILABLE", False),
    "LLM_MODEL_NOT_FOUND": (1, 502, "UNAVAILABLE", False),
    "LLM_CONTENT_FILTERED": (3, 422, "FAILED_PRECONDITION", False),
    "LLM_INVALID_REQUEST": (3, 400, "INVALID_ARGUMENT", False),
    "LLM_TIMEOUT": (2, 504, "DEADLINE_EXCEEDED", True),
    "LLM_OVERLOADED": (2, 503, "UNAVAILABLE", True),
    "LLM_SERVER_ERROR": (2, 502, "UNAVAILABLE", True),
    "LLM_CONNECTION_ERROR": (2, 502, "UNAVAILABLE", True),
    "LLM_OUTPUT_PARSE_ERROR": (3, 502, "INTERNAL", True),
    "LLM_TOOL_ERROR": (3, 502, "INTERNAL", False),
    "LLM_UNKNOWN": (2, 502, "UNKNOWN", False),
}


def test_builtin_catalog_matches_the_contract_exactly() -> None:
    got = {c.id: (int(c.level), c.http_status, c.grpc_status, c.retryable) for c in BUILTIN_CODES}
    assert got == CATALOG


def test_every_builtin_code_has_a_one_sentence_hint_and_valid_id() -> None:
    for code in BUILTIN_CODES:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]{0,62}", code.id)
        assert code.hint.endswith(".") and len(code.hint) > 20, code.id
        assert code.grpc_status is None or code.grpc_status in GRPC_CODES


def test_kinds_follow_retryable_and_level() -> None:
    assert errtrace.registry.get("LLM_RATE_LIMITED").kind == "transient"
    assert errtrace.registry.get("AI_MODEL_LOAD_FAILED").kind == "system"
    assert errtrace.registry.get("VALIDATION_FAILED").kind == "business"


def test_register_in_code_and_duplicates_fail_loudly() -> None:
    reg = CodeRegistry()
    code = reg.define("PAYMENT_DECLINED", 3, http_status=402, hint="Use another card.")
    assert reg.get("PAYMENT_DECLINED") is code
    assert code.grpc_status == "FAILED_PRECONDITION"  # derived from the HTTP status
    with pytest.raises(CodeDefinitionError, match="already registered"):
        reg.define("PAYMENT_DECLINED", 3)
    reg.define("PAYMENT_DECLINED", 2, replace=True)
    assert reg.get("PAYMENT_DECLINED").level is Level.SEVERE


def test_status_defaults_come_from_level() -> None:
    code = ErrorCode("SOMETHING_DOWN", Level.CRITICAL)
    assert (code.http_status, code.grpc_status) == (503, "UNAVAILABLE")
    assert ErrorCode("SLOW_PATH", 4).http_status is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": "lower_case", "level": 3}, "id"),
        ({"id": "X" * 64, "level": 3}, "id"),
        ({"id": "OK_ID", "level": 9}, "level"),
        ({"id": "OK_ID", "level": 3, "http_status": 200}, "http_status"),
        ({"id": "OK_ID", "level": 3, "grpc_status": "NOPE"}, "grpc_status"),
        ({"id": "OK_ID", "level": 3, "retryable": "yes"}, "retryable"),
        ({"id": "OK_ID", "level": 3, "fallback": 3}, r"^OK_ID\.fallback: 3 is not an action"),
    ],
)
def test_invalid_definitions_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(CodeDefinitionError, match=message):
        CodeRegistry().define(**fields)  # type: ignore[arg-type]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "codes.yaml"
    path.write_text(text)
    return path


def test_load_codes_from_yaml(tmp_path: Path) -> None:
    reg = CodeRegistry(list(BUILTIN_CODES))
    path = write(tmp_path, """
codes:
  - id: PAYMENT_DECLINED
    level: moderate
    http_status: 402
    hint: Ask the customer for another payment method.
  - id: LLM_AUTH_FAILED
    level: 1
    http_status: 401
    grpc_status: UNAUTHENTICATED
    override: true
""")
    loaded = reg.load_yaml(path)
    assert [c.id for c in loaded] == ["PAYMENT_DECLINED", "LLM_AUTH_FAILED"]
    assert reg.get("PAYMENT_DECLINED").http_status == 402
    assert reg.get("LLM_AUTH_FAILED").http_status == 401  # pass-through override


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("codes:\n  - id: A_CODE\n    level: 12\n", r"codes\[0\] \(A_CODE\)\.level: 12 is not"),
        ("codes:\n  - id: A_CODE\n    level: 3\n    colour: red\n",
         r"codes\[0\] \(A_CODE\): unknown field\(s\) 'colour';"),
        ("codes:\n  - id: A_CODE\n    level: 3\n  - id: A_CODE\n    level: 3\n",
         r"codes\[1\] \(A_CODE\)\.id: A_CODE is defined twice in the file, first at codes\[0\]$"),
        ("codes:\n  - id: INTERNAL\n    level: 3\n",
         r"codes\[0\] \(INTERNAL\)\.id: INTERNAL is already registered"),
        ("codes:\n  - level: 3\n", r"codes\[0\]\.id: missing"),
        ("codes: {}\n", "'codes' must be a list"),
        ("codes:\n  - id: [unclosed\n", r"codes\.yaml:\d+: invalid YAML"),
    ],
)
def test_bad_yaml_fails_naming_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    reg = CodeRegistry(list(BUILTIN_CODES))
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=expected) as info:
        reg.load_yaml(path)
    assert str(path) in str(info.value)
    assert len(reg) == len(BUILTIN_CODES)  # all or nothing


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("3", "3"),
        ("[fallback_model, retry]", "['fallback_model', 'retry']"),
        ('""', "''"),
        ("true", "True"),
        ("Fallback-Model", "'Fallback-Model'"),
        ('"retry\\n"', "'retry\\n'"),
    ],
)
def test_a_bad_fallback_names_the_file_the_code_and_the_field(
    tmp_path: Path, value: str, shown: str
) -> None:
    reg = CodeRegistry(list(BUILTIN_CODES))
    path = write(tmp_path, f"""
codes:
  - id: PAYMENT_DECLINED
    level: 3
    fallback: retry
  - id: MODEL_GONE
    level: 1
    fallback: {value}
""")
    with pytest.raises(CodeDefinitionError) as info:
        reg.load_yaml(path)
    assert str(info.value).startswith(
        f"{path}: codes[1] (MODEL_GONE).fallback: {shown} is not an action name"
    )
    assert len(reg) == len(BUILTIN_CODES)  # all or nothing


def test_fallback_action_names_load(tmp_path: Path) -> None:
    path = write(tmp_path, """
codes:
  - {id: MODEL_GONE, level: 1, fallback: fallback_model}
  - {id: NO_FALLBACK, level: 3, fallback: null}
""")
    loaded = CodeRegistry().load_yaml(path)
    assert [(c.id, c.fallback) for c in loaded] == [
        ("MODEL_GONE", "fallback_model"), ("NO_FALLBACK", None),
    ]


def test_extra_must_be_a_mapping() -> None:
    with pytest.raises(CodeDefinitionError, match=r"^extra: \['team'\] is not a mapping$"):
        ErrorCode("MY_CODE", 3, extra=["team"])  # type: ignore[arg-type]
    code = ErrorCode("MY_CODE", 3, extra={"team": "payments"})
    with pytest.raises(CodeDefinitionError, match=r"^extra: 'payments' is not a mapping$"):
        code.with_overrides(extra="payments")
    assert code.extra == {"team": "payments"}


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        CodeRegistry().load_yaml(tmp_path / "absent.yaml")


def test_level_parse() -> None:
    assert Level.parse("fatal") is Level.FATAL
    assert Level.parse("6") is Level.DEBUG
    with pytest.raises(ValueError, match=r"expected 0\.\.6"):
        Level.parse(7)
    assert [lvl.fails_request for lvl in Level] == [True] * 4 + [False] * 3


def test_a_status_given_as_text_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "codes.yaml"
    path.write_text("codes:\n  - {id: PAYMENT_REQUIRED_X, level: 3, http_status: '402'}\n")
    wanted = r"codes\[0\].*http_status: '402' is not an integer"
    with pytest.raises(CodeDefinitionError, match=wanted):
        CodeRegistry().load_yaml(path)


def test_a_key_given_twice_in_a_codes_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "codes.yaml"
    path.write_text("codes:\n  - id: A_X\n    level: 3\n    id: B_X\n")
    codes = CodeRegistry()
    with pytest.raises(ValueError, match=r"codes.yaml:4: .*key 'id' is given twice"):
        codes.load_yaml(path)
    assert codes.find("B_X") is None and codes.find("A_X") is None


def test_fallbacks_run_for_codes_the_catalog_gives_a_fallback_action() -> None:
    from errtrace.core.config import Config
    from errtrace.core.runtime import Runtime

    errtrace.set_fallback("AI_EMBEDDING_FAILED", lambda err, ctx: {"hits": [], "mode": "keyword"})
    failure = Runtime(Config()).fail(
        errtrace.AppError("AI_EMBEDDING_FAILED"), None, transport="http"
    )
    assert failure.event.level == 2 and failure.fallback_result == {"hits": [], "mode": "keyword"}


def test_a_fallback_that_can_never_run_is_reported_when_registered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errtrace.set_fallback("LLM_UNKNOWN", lambda err, ctx: {})  # level 2, no catalog fallback
    assert any("will not run" in r.getMessage() for r in caplog.records)


def test_unregistered_local_codes_are_flagged_and_malformed_ones_stay_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    typo = errtrace.AppError("LLM_RATE_LIMTED_TYPO_X")
    assert typo.code == "LLM_RATE_LIMTED_TYPO_X"
    assert any("not registered (a typo?)" in r.getMessage() for r in caplog.records)
    malformed = errtrace.AppError("payment-declined")
    assert malformed.code == "INTERNAL" and malformed.http_status == 500
    reported = errtrace.report("cache-miss")
    assert (reported.code, reported.level) == ("UNREGISTERED_CODE", 5)
    assert reported.details == {"given_code": "cache-miss"}
    assert errtrace.report("NOT_A_KNOWN_CODE_X").level == 5


def test_app_errors_survive_pickling_and_copying() -> None:
    import copy
    import inspect
    import pickle

    from errtrace.core.encoding import from_http_response
    from errtrace.core.errors import error_for_http_status

    local = error_for_http_status(405, "nope", {"Allow": "GET"})
    local.event_id = "E1"
    remote = from_http_response(429, {"x-error-code": "THEIRS_X", "x-error-level": "3"}, b"")
    assert remote is not None
    for err in (local, remote):
        for clone in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
            assert type(clone) is type(err)
            assert (clone.code, clone.level, clone.http_status, clone.headers, clone.event_id) == (
                err.code, err.level, err.http_status, err.headers, err.event_id
            )
            assert clone.remote == err.remote
    assert list(inspect.signature(errtrace.AppError).parameters)[:3] == [
        "code", "message", "details",
    ]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("level: 12", "level"),
        ("http_status: 200", "http_status"),
        ("grpc_status: NOPE", "grpc_status"),
        ("retryable: maybe", "retryable"),
        ("hint: [a, b]", "hint"),
        ("domain: ''", "domain"),
        ("fallback: Fallback-Model", "fallback"),
        ("override: maybe", "override"),
    ],
)
def test_a_bad_field_names_the_file_the_entry_position_its_id_and_the_field(
    tmp_path: Path, line: str, field: str
) -> None:
    level = "" if field == "level" else "level: 1"
    path = write(tmp_path, f"""
codes:
  - {{id: PAYMENT_DECLINED, level: 3}}
  - id: MODEL_GONE
    {level}
    {line}
""")
    with pytest.raises(CodeDefinitionError) as info:
        CodeRegistry().load_yaml(path)
    assert str(info.value).startswith(f"{path}: codes[1] (MODEL_GONE).{field}: ")


@pytest.mark.parametrize(
    ("id_line", "wanted"),
    [
        ("", "codes[1].id: missing"),
        ("id: 5", "codes[1].id: 5 is not UPPER_SNAKE_CASE"),
        ("id: [A_CODE]", "codes[1].id: ['A_CODE'] is not UPPER_SNAKE_CASE"),
        ("id: model gone", "codes[1].id: 'model gone' is not UPPER_SNAKE_CASE"),
        ('id: "MODEL_GONE\\nFAKE"', "codes[1].id: 'MODEL_GONE\\nFAKE' is not UPPER_SNAKE_CASE"),
    ],
)
def test_an_entry_without_a_valid_id_is_named_by_position_only(
    tmp_path: Path, id_line: str, wanted: str
) -> None:
    path = write(tmp_path, f"codes:\n  - {{id: PAYMENT_DECLINED, level: 3}}\n  - level: 1\n"
                           f"    {id_line}\n")
    with pytest.raises(CodeDefinitionError) as info:
        CodeRegistry().load_yaml(path)
    assert str(info.value).startswith(f"{path}: {wanted}")
    assert "\n" not in str(info.value)


def test_an_id_defined_twice_names_both_positions(tmp_path: Path) -> None:
    path = write(tmp_path, """
codes:
  - {id: MODEL_GONE, level: 1}
  - {id: PAYMENT_DECLINED, level: 3}
  - {id: MODEL_GONE, level: 2}
""")
    with pytest.raises(CodeDefinitionError) as info:
        CodeRegistry().load_yaml(path)
    assert str(info.value) == (
        f"{path}: codes[2] (MODEL_GONE).id: MODEL_GONE is defined twice in the file, "
        "first at codes[0]"
    )


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        *((d, "must be a non-empty string") for d in ("", "   ", "\t\n")),
        # clients compare ErrorInfo domains exactly: " llm " is not "llm"
        *(
            (d, f"{d!r} has leading or trailing whitespace")
            for d in (" llm ", "llm ", "\tllm", "llm\n", "llm\u00a0")
        ),
    ],
)
def test_an_empty_or_padded_domain_is_refused_in_python_and_in_yaml(
    tmp_path: Path, domain: str, reason: str
) -> None:
    wanted = "domain: " + re.escape(reason)
    with pytest.raises(CodeDefinitionError, match=f"^{wanted}"):
        ErrorCode("MY_CODE", 3, domain=domain)
    with pytest.raises(CodeDefinitionError, match=f"^{wanted}"):
        ErrorCode("MY_CODE", 3).with_overrides(domain=domain)
    reg = CodeRegistry()
    with pytest.raises(CodeDefinitionError, match=rf"^MY_CODE\.{wanted}"):
        reg.define("MY_CODE", 3, domain=domain)
    path = write(tmp_path, f"codes:\n  - {{id: MY_CODE, level: 3, domain: {json.dumps(domain)}}}\n")
    with pytest.raises(CodeDefinitionError) as info:
        reg.load_yaml(path)
    assert str(info.value).startswith(f"{path}: codes[0] (MY_CODE).domain: {reason}")
    assert len(reg) == 0
    assert reg.define("MY_CODE", 3, domain="llm").domain == "llm"


@pytest.mark.parametrize(
    ("value", "shown"),
    [("maybe", "'maybe'"), ("1", "1"), ("'true'", "'true'"), ("[true]", "[True]")],
)
def test_a_bad_override_echoes_the_value_given(tmp_path: Path, value: str, shown: str) -> None:
    path = write(tmp_path, f"codes:\n  - {{id: MODEL_GONE, level: 1, override: {value}}}\n")
    reg = CodeRegistry()
    with pytest.raises(CodeDefinitionError) as info:
        reg.load_yaml(path)
    assert str(info.value) == (
        f"{path}: codes[0] (MODEL_GONE).override: {shown} is not true or false"
    )
    assert len(reg) == 0


@pytest.mark.parametrize(
    "field", ["fallback", "grpc_status", "level", "id", "retryable", "override"]
)
def test_a_huge_bad_value_is_shown_cut_short(tmp_path: Path, field: str) -> None:
    huge = "x" * 200_000
    fields = {"id": "MODEL_GONE", "level": 1, field: huge}
    path = write(tmp_path, "codes:\n  - " + json.dumps(fields) + "\n")
    with pytest.raises(CodeDefinitionError) as info:
        CodeRegistry().load_yaml(path)
    message = str(info.value)
    assert len(message) < 1000
    where = "codes[0]" if field == "id" else "codes[0] (MODEL_GONE)"
    assert message.startswith(f"{path}: {where}.{field}: 'xxxxxxxxxx")
    assert "xxx... (200000 characters)" in message  # cut, and the whole length given


def test_a_bad_value_built_from_yaml_aliases_is_shown_cut_short(tmp_path: Path) -> None:
    # Each list repeats the one before ten times: the last holds two million strings.
    lists = ["&a0 [lol, lol]"]
    lists += [f"&a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 7)]
    fallback = f"[{', '.join(lists)}]"
    path = write(tmp_path, f"codes:\n  - {{id: MODEL_GONE, level: 1, fallback: {fallback}}}\n")
    with pytest.raises(CodeDefinitionError) as info:
        CodeRegistry().load_yaml(path)
    assert str(info.value).startswith(f"{path}: codes[0] (MODEL_GONE).fallback: [[")
    assert len(str(info.value)) < 400


def test_a_newline_in_a_bad_key_or_value_cannot_split_the_message(tmp_path: Path) -> None:
    path = write(tmp_path, 'codes:\n  - {id: MODEL_GONE, level: 1, "colour\\nERROR fake": red}\n')
    with pytest.raises(CodeDefinitionError) as info:
        CodeRegistry().load_yaml(path)
    assert str(info.value).startswith(
        f"{path}: codes[0] (MODEL_GONE): unknown field(s) 'colour\\nERROR fake'; allowed: "
    )
    path = write(tmp_path, 'codes:\n  - {id: MODEL_GONE, level: 1, fallback: "a\\r\\nb\\u2028c"}\n')
    with pytest.raises(CodeDefinitionError) as info:
        CodeRegistry().load_yaml(path)
    assert str(info.value).startswith(
        f"{path}: codes[0] (MODEL_GONE).fallback: 'a\\r\\nb\\u2028c' is not an action name"
    )
    for bad_id in ("BAD\nID", "B" * 100_000):
        with pytest.raises(CodeDefinitionError) as info:
            CodeRegistry().define(bad_id, 3)
        message = str(info.value)
        assert message.startswith("code.id: 'B") and len(message) < 200
        assert message.isprintable()


def test_unknown_keys_of_mixed_types_are_reported_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, "codes:\n  - {id: MODEL_GONE, level: 1, 7: a, colour: red}\n")
    with pytest.raises(CodeDefinitionError) as info:
        CodeRegistry().load_yaml(path)
    assert str(info.value).startswith(
        f"{path}: codes[0] (MODEL_GONE): unknown field(s) 7, 'colour'; allowed: "
    )
    path = write(tmp_path, "codes: []\n7: a\ncolour: red\n")
    with pytest.raises(CodeDefinitionError) as info:
        CodeRegistry().load_yaml(path)
    assert str(info.value) == f"{path}: unknown top-level key(s) [7, 'colour']"
