"""Config errors name where the bad value came from: the YAML file, a variable, a keyword."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from errtrace.core.config import Config, ConfigError

# One bad value per option, as a YAML file would give it.
BAD_VALUES: dict[str, object] = {
    "service_name": "",
    "debug": "maybe",
    "biz_header": "X Biz",
    "biz_pattern": "(",
    "baggage_biz_key": "",
    "trace_id_header": "X-Trace:ID",
    "error_code_header": "",
    "error_level_header": 3,
    "event_id_header": "X-Event\n",
    "max_header_bytes": "abc",
    "sample_new_traces": "yes please",
    "problem_type_base": "",
    "sse_error_event": 1,
    "rewrite_responses": "api/",
    "rewrite_max_body_bytes": 0,
    "rules_file": ["rules.yaml"],
    "use_otel": "auto",
    "exit_on_fatal": "no",
    "event_buffer_size": -1,
    "log_errors": None,
    "grpc_trace_id_on_success": [],
    "third_party_propagation": "baggage",
    "third_party_hosts": ["https://api.example.com/v1"],
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "errtrace.yaml"
    path.write_text(text)
    return path


def test_every_option_has_a_bad_value_here() -> None:
    assert sorted(BAD_VALUES) == sorted(Config.field_names())


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_in_the_file_names_the_option_and_the_file(
    tmp_path: Path, name: str
) -> None:
    path = write(tmp_path, f"{name}: {json.dumps(BAD_VALUES[name])}\n")
    with pytest.raises(ConfigError) as info:
        Config.load(path, env={})
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert message.endswith(f" (from {path})")


def test_the_file_is_named_for_an_errtrace_section_and_for_errtrace_config_file(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "errtrace:\n  service_name: api\n  max_header_bytes: abc\n")
    wanted = f"max_header_bytes: 'abc' must be a positive integer (from {path})"
    for load in (
        lambda: Config.load(path, env={}),
        lambda: Config.load(env={"ERRTRACE_CONFIG_FILE": str(path)}),
    ):
        with pytest.raises(ConfigError) as info:
            load()
        assert str(info.value) == wanted
        assert info.value.__cause__ is None and info.value.__suppress_context__  # from None


@pytest.mark.parametrize(
    ("variable", "raw", "wanted"),
    [
        ("ERRTRACE_MAX_HEADER_BYTES", "0", "max_header_bytes: 0 must be a positive integer"),
        ("ERRTRACE_BIZ_HEADER", "X Biz", "biz_header: 'X Biz' is not a valid header name"),
        ("ERRTRACE_BIZ_PATTERN", "(", "biz_pattern: '(' is not a regex: "),
        ("ERRTRACE_SERVICE_NAME", " ", "service_name: must be a non-empty string"),
        ("ERRTRACE_REWRITE_RESPONSES", "api/", "rewrite_responses: ('api/',) must be"),
        ("ERRTRACE_max_header_bytes", "-5", "max_header_bytes: -5 must be a positive integer"),
        ("ERRTRACE_THIRD_PARTY_HOSTS", "a.example, b.example:8443",
         "third_party_hosts: 'b.example:8443' is not a host name"),
    ],
)
def test_a_bad_value_in_the_environment_names_the_variable(
    variable: str, raw: str, wanted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={variable: raw})
    message = str(info.value)
    assert message.startswith(wanted)
    assert message.endswith(f" (from environment variable {variable})")


def test_parse_errors_and_unknown_keys_still_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={"ERRTRACE_MAX_HEADER_BYTES": "lots"})
    assert str(info.value) == "ERRTRACE_MAX_HEADER_BYTES: 'lots' is not an integer"
    path = write(tmp_path, "max_header_byte: 10\n")
    with pytest.raises(ConfigError) as info:
        Config.load(path, env={})
    assert str(path) in str(info.value) and "did you mean 'max_header_bytes'" in str(info.value)


def test_the_source_that_wins_is_the_one_named(tmp_path: Path) -> None:
    path = write(tmp_path, "max_header_bytes: abc\nevent_buffer_size: 10\n")
    env = {"ERRTRACE_MAX_HEADER_BYTES": "0"}
    # The environment overrides the file's bad value, and is then the one to blame.
    with pytest.raises(ConfigError) as info:
        Config.load(path, env=env)
    assert str(info.value) == (
        "max_header_bytes: 0 must be a positive integer "
        "(from environment variable ERRTRACE_MAX_HEADER_BYTES)"
    )
    # A keyword argument overrides both.
    with pytest.raises(ConfigError) as info:
        Config.load(path, env=env, max_header_bytes=-1)
    assert str(info.value) == (
        "max_header_bytes: -1 must be a positive integer (from keyword argument)"
    )
    # A good value later in the order repairs a bad one earlier.
    assert Config.load(path, env=env, max_header_bytes=64).max_header_bytes == 64
    assert Config.load(path, env={"ERRTRACE_MAX_HEADER_BYTES": "128"}).max_header_bytes == 128


def test_config_built_directly_says_nothing_of_a_source() -> None:
    with pytest.raises(ConfigError) as info:
        Config(max_header_bytes=0)
    assert str(info.value) == "max_header_bytes: 0 must be a positive integer"


@pytest.mark.parametrize(
    "env",
    [
        {"ERRTRACE_DEBUG": "1", "ERRTRACE_debug": "0"},
        {"ERRTRACE_debug": "0", "ERRTRACE_DEBUG": "1"},  # the order makes no difference
        {"ERRTRACE_DEBUG": "1", "ERRTRACE_debug": "1"},  # nor do equal values
        {"ERRTRACE_debug": "maybe", "ERRTRACE_DEBUG": "1"},  # nor a bad value in one
    ],
)
def test_one_option_set_by_two_spellings_of_its_variable_is_an_error(
    env: dict[str, str],
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env=env)
    assert str(info.value) == (
        "environment variables ERRTRACE_DEBUG and ERRTRACE_debug both set option debug; "
        "set only one"
    )


def test_each_option_set_by_one_variable_of_any_case_still_loads() -> None:
    config = Config.load(env={"ERRTRACE_debug": "1", "ERRTRACE_MAX_HEADER_BYTES": "64"})
    assert (config.debug, config.max_header_bytes) == (True, 64)


def test_a_huge_bad_value_in_the_environment_is_shown_cut_short() -> None:
    huge = "9x" * 500_000
    with pytest.raises(ConfigError) as info:
        Config.load(env={"ERRTRACE_MAX_HEADER_BYTES": huge})
    message = str(info.value)
    assert message.startswith("ERRTRACE_MAX_HEADER_BYTES: '9x9x9x")
    assert message.endswith("x9x... (1000000 characters) is not an integer")
    assert len(message) < 200
    with pytest.raises(ConfigError) as info:
        Config.load(env={"ERRTRACE_BIZ_HEADER": huge})
    message = str(info.value)
    assert message.startswith("biz_header: '9x9x9x")
    assert message.endswith(
        "... (1000000 characters) is not a valid header name "
        "(from environment variable ERRTRACE_BIZ_HEADER)"
    )
    assert len(message) < 200
    with pytest.raises(ConfigError) as info:
        Config.load(env={"ERRTRACE_REWRITE_RESPONSES": ",".join(["api"] * 100_000)})
    assert str(info.value).startswith("rewrite_responses: ('api', 'api', ")
    assert len(str(info.value)) < 250


@pytest.mark.parametrize("name", ["biz_header", "debug", "max_header_bytes", "use_otel"])
def test_a_huge_bad_value_in_the_file_or_a_keyword_is_shown_cut_short(
    tmp_path: Path, name: str
) -> None:
    huge = "x " * 20_000
    path = write(tmp_path, f"{name}: {json.dumps(huge)}\n")
    with pytest.raises(ConfigError) as info:
        Config.load(path, env={})
    message = str(info.value)
    assert message.startswith(f"{name}: 'x x x x")
    assert message.endswith(f" (from {path})")
    assert "x ... (40000 characters) " in message and len(message) < 200 + len(str(path))
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, **{name: [huge] * 1000})
    message = str(info.value)
    assert message.startswith(f"{name}: ['x x x")
    assert message.endswith(" (from keyword argument)") and len(message) < 250


def test_a_huge_unknown_key_in_the_file_is_shown_cut_short(tmp_path: Path) -> None:
    path = write(tmp_path, f"? {'x' * 100_000}\n: 1\n")  # "?": a key over 1024 characters
    with pytest.raises(ConfigError) as info:
        Config.load(path, env={})
    message = str(info.value)
    assert message.startswith(f"unknown option in {path}: 'xxxx")
    assert message.endswith("xxx... (100000 characters)")


def test_a_newline_in_a_bad_value_or_name_cannot_split_the_message(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, str], str]] = [
        ({"ERRTRACE_DEBUG": "yes\nERROR fake"}, "ERRTRACE_DEBUG: 'yes\\nERROR fake' is not"),
        ({"ERRTRACE_EVENT_ID_HEADER": "X-A\r\nX-B"}, "event_id_header: 'X-A\\r\\nX-B' is not"),
        ({"ERRTRACE_FOO\nERROR fake": "1"},
         "unknown environment variable 'ERRTRACE_FOO\\nERROR fake'"),
        ({"ERRTRACE_" + "A" * 100_000: "1"}, "unknown environment variable 'ERRTRACE_AAAA"),
    ]
    for env, wanted in cases:
        with pytest.raises(ConfigError) as info:
            Config.load(env=env)
        assert str(info.value).startswith(wanted)
        assert str(info.value).isprintable() and len(str(info.value)) < 300
    path = write(tmp_path, '"debg\\u2028ERROR fake": 1\n')
    with pytest.raises(ConfigError) as info:
        Config.load(path, env={})
    assert str(info.value) == f"unknown option in {path}: 'debg\\u2028ERROR fake'"


def test_a_value_too_large_to_repr_is_still_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        Config(max_header_bytes=-(10**5000))
    assert str(info.value).startswith("max_header_bytes: ")
    assert str(info.value).endswith(" must be a positive integer")


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("max_header_bytes: " + "9" * 5000 + "\n", "invalid YAML value: Exceeds the limit"),
        ("service_name: 2020-02-31\n", "invalid YAML value: day is out of range for month"),
        ("service_name: 2020-13-01 10:00:00\n", "invalid YAML value: month must be in 1..12"),
        ("service_name: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML: nested too deeply"),
    ],
)
@pytest.mark.parametrize("loader", ["config", "codes", "rules"])
def test_a_yaml_value_python_cannot_build_names_the_file(
    tmp_path: Path, text: str, wanted: str, loader: str
) -> None:
    # The safe loader builds dates and integers itself; one it cannot build was a bare
    # ValueError (or RecursionError) that named no file.
    from errtrace.core.codes import CodeRegistry
    from errtrace.core.rewrite._loader import load_rule_file

    path = write(tmp_path, text)
    load = {
        "config": lambda: Config.load(path, env={}),
        "codes": lambda: CodeRegistry().load_yaml(path),
        "rules": lambda: load_rule_file(path),
    }[loader]
    with pytest.raises(ValueError) as info:
        load()
    assert str(info.value).startswith(f"{path}: {wanted}")
    assert len(str(info.value)) < 300 + len(str(path))


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("a{4294967296}", "the repetition number is too large"),
        ("(" * 2000 + ")" * 2000, "nested too deeply"),
    ],
)
def test_a_biz_pattern_re_cannot_compile_is_a_config_error(pattern: str, reason: str) -> None:
    # re raises OverflowError or RecursionError for these, not re.error.
    with pytest.raises(ConfigError) as info:
        Config.load(env={"ERRTRACE_BIZ_PATTERN": pattern})
    message = str(info.value)
    assert message.startswith("biz_pattern: ") and len(message) < 250
    assert message.endswith(
        f"is not a regex: {reason} (from environment variable ERRTRACE_BIZ_PATTERN)"
    )


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"^(a+)+$", "nested quantifier"),
        (r"^(?:[a-z]+-?)+$", "nested quantifier"),
        (r"^(a|aa)+$", "a repeated group can match the same text in more than one way"),
        (r"^(?:x?)+$", "a repeated group that can match empty text"),
        (r"^([a-z])\1$", "a back-reference"),
    ],
)
def test_a_biz_pattern_that_can_backtrack_catastrophically_is_refused(
    pattern: str, reason: str
) -> None:
    # It runs on the X-Biz-Code header of every request, up to 256 characters of it.
    with pytest.raises(ConfigError) as info:
        Config.load(env={"ERRTRACE_BIZ_PATTERN": pattern})
    message = str(info.value)
    assert message.startswith(f"biz_pattern: {pattern!r} is unsafe: {reason}"), message
    assert message.endswith("(from environment variable ERRTRACE_BIZ_PATTERN)")
    with pytest.raises(ConfigError, match="is unsafe"):
        Config(biz_pattern=pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[A-Z]{2,8}(?:\.[a-z0-9]+)*$",
        r"t\d+",
        r"^(?:tenant-[0-9]{1,6}|internal)$",
        r"[a-z]+(?::[a-z]+){0,3}",
        # an enumeration longer than the 512 characters a rule-file pattern may have
        "^(?:" + "|".join(f"team{i}" for i in range(200)) + ")$",
    ],
)
def test_ordinary_biz_patterns_are_accepted(pattern: str) -> None:
    config = Config.load(env={"ERRTRACE_BIZ_PATTERN": pattern})
    assert config.biz_pattern == pattern


@pytest.mark.parametrize("digits", ["\u0661\u0662", "1\u00b2", "\uff11\uff12"])
def test_an_integer_setting_takes_ascii_digits_only(digits: str) -> None:
    # int() reads Arabic-Indic and full-width digits; a setting should not.
    with pytest.raises(ConfigError) as info:
        Config.load(env={"ERRTRACE_MAX_HEADER_BYTES": digits})
    assert str(info.value) == f"ERRTRACE_MAX_HEADER_BYTES: {digits!r} is not an integer"
    assert Config.load(env={"ERRTRACE_MAX_HEADER_BYTES": " 12 "}).max_header_bytes == 12
