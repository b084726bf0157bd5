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
    "use_otel": "auto",
    "exit_on_fatal": "no",
    "event_buffer_size": -1,
    "log_errors": None,
    "grpc_trace_id_on_success": [],
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
