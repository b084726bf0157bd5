"""User rule files: overrides, priorities, validation, hot reload, and regex safety."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from errtrace.core.codes import registry
from errtrace.core.rewrite import (
    RuleFileError,
    RuleSet,
    classify,
    default_ruleset,
    find_unsafe_construct,
    load_rules,
)

GATEWAY_TEXT = "gateway: budget exhausted for team ml-platform"


@pytest.fixture(scope="module", autouse=True)
def _user_code() -> None:
    registry.define(
        "ACME_TEAM_BUDGET_EXHAUSTED",
        1,
        http_status=429,
        hint="Ask for more team budget.",
        replace=True,
    )


def _write(path: Path, text: str) -> Path:
    """Write ``text`` and make sure the mtime moves even on coarse-clock filesystems."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    bumped = max(before + 1_000_000_000, path.stat().st_mtime_ns)
    os.utime(path, ns=(bumped, bumped))
    return path


RULES = """
rules:
  - id: acme-budget
    code: ACME_TEAM_BUDGET_EXHAUSTED
    patterns: ['budget exhausted for team [\\w-]+']
    hint: The team's LLM budget is used up; ask platform for more.
"""


# ---------------------------------------------------------------- loading


def test_user_rule_classifies_with_its_own_code_and_hint(tmp_path: Path) -> None:
    ruleset = RuleSet()
    assert ruleset.load(_write(tmp_path / "rules.yaml", RULES), watch=False) == 1
    result = ruleset.classify(GATEWAY_TEXT)
    assert (result.code, result.rule) == ("ACME_TEAM_BUDGET_EXHAUSTED", "acme-budget")
    assert result.hint == "The team's LLM budget is used up; ask platform for more."
    # the process-wide table is untouched
    assert classify(GATEWAY_TEXT).code == "LLM_UNKNOWN"


def test_user_rule_is_case_insensitive_and_without_hint_uses_the_code_hint(tmp_path: Path) -> None:
    ruleset = RuleSet()
    ruleset.load(
        _write(tmp_path / "r.yaml", RULES.replace("    hint:", "    # hint:")), watch=False
    )
    result = ruleset.classify(GATEWAY_TEXT.upper())
    assert result.code == "ACME_TEAM_BUDGET_EXHAUSTED"
    assert result.hint == "Ask for more team budget."


def test_same_id_overrides_a_builtin(tmp_path: Path) -> None:
    text = "Rate limit reached for gpt-4 in organization org-x on tokens per min"
    assert classify(text).rule == "openai:rate-limit"
    ruleset = RuleSet()
    ruleset.load(
        _write(
            tmp_path / "r.yaml",
            """
rules:
  - id: openai:rate-limit
    code: LLM_QUOTA_EXCEEDED
    patterns: ['this wording never appears']
""",
        ),
        watch=False,
    )
    # the built-in is gone; the generic rate-limit wording still catches the text
    assert ruleset.classify(text).rule == "generic:rate-limit"
    assert ruleset.classify("this wording never appears").code == "LLM_QUOTA_EXCEEDED"
    assert [r.id for r in ruleset.rules].count("openai:rate-limit") == 1


@pytest.mark.parametrize(
    ("priority", "winner"), [(800, "mine"), (100, "openai:insufficient-quota")]
)
def test_priority_places_user_rules_above_or_below_builtins(
    tmp_path: Path, priority: int, winner: str
) -> None:
    ruleset = RuleSet()
    ruleset.load(
        _write(
            tmp_path / "r.yaml",
            f"""
rules:
  - id: mine
    code: LLM_RATE_LIMITED
    patterns: ['exceeded your current quota']
    priority: {priority}
""",
        ),
        watch=False,
    )
    assert ruleset.classify("You exceeded your current quota").rule == winner


def test_status_and_provider_conditions(tmp_path: Path) -> None:
    ruleset = RuleSet()
    ruleset.load(
        _write(
            tmp_path / "r.yaml",
            """
rules:
  - id: gateway-402
    code: LLM_QUOTA_EXCEEDED
    patterns: ['upstream refused']
    status: [402, 429]
    provider: Azure OpenAI
""",
        ),
        watch=False,
    )
    assert ruleset.classify("upstream refused", status=402, provider="azure").rule == "gateway-402"
    assert ruleset.classify("upstream refused", status=500, provider="azure").rule != "gateway-402"
    assert ruleset.classify("upstream refused", status=402, provider="openai").rule != "gateway-402"


def test_empty_file_means_no_user_rules(tmp_path: Path) -> None:
    ruleset = RuleSet()
    assert ruleset.load(_write(tmp_path / "r.yaml", ""), watch=False) == 0
    assert ruleset.stats.user_rules == 0


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        ("    colour: red", ["rules[1]", "'second'", "unknown field(s) colour"]),
        (
            "    patterns: ['(unclosed']",
            ["rules[1]", "'second'", "patterns[0]", "invalid regular expression"],
        ),
        ("    code: NOT_A_CODE", ["rules[1]", "'second'", ".code", "not a registered error code"]),
        ("    priority: high", ["rules[1]", "'second'", ".priority", "not an integer"]),
        ("    status: teapot", ["rules[1]", "'second'", ".status", "not an HTTP status"]),
        ("    status: [700]", ["rules[1]", "'second'", ".status", "700"]),
        ("    provider: [3]", ["rules[1]", "'second'", ".provider"]),
        ("    patterns: []", ["rules[1]", "'second'", ".patterns", "non-empty list"]),
        ("    hint: [a, b]", ["rules[1]", "'second'", ".hint", "not a string"]),
        ("    patterns: ['(a+)+$']", ["rules[1]", "'second'", "patterns[0]", "nested quantifier"]),
        (
            "    patterns: ['error: .*.*done']",
            ["patterns[0]", "two unbounded repetitions (.* and .*)"],
        ),
        ("    patterns: ['" + "x" * 600 + "']", ["patterns[0]", "over the 512 limit"]),
        ("    id: first", ["rules[1]", "defined twice"]),
    ],
)
def test_invalid_rules_name_file_rule_and_field(
    tmp_path: Path, entry: str, fragments: list[str]
) -> None:
    # a valid first rule, then a second rule with exactly one field broken
    base = {
        "id": "    id: second",
        "code": "    code: LLM_TIMEOUT",
        "patterns": "    patterns: ['took too long']",
    }
    key = entry.strip().split(":", 1)[0]
    fields = dict(base)
    fields[key] = entry
    text = (
        "rules:\n  - id: first\n    code: LLM_TIMEOUT\n    patterns: ['slow']\n  -\n"
        + "\n".join(fields.values() if key in base else [*base.values(), entry])
        + "\n"
    )
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(RuleFileError) as info:
        RuleSet().load(path, watch=False)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- just a list", "expected a mapping with a 'rules' list"),
        ("rules: {}", "'rules' must be a list"),
        ("rules: []\nextra: 1", "unknown top-level key(s) extra"),
        ("rules:\n  - id: x\n    code: [", "invalid YAML"),
        ("rules:\n  - id: x\n    patterns: ['a']", "rules[0] (id 'x').code: missing"),
    ],
)
def test_invalid_documents(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path / "doc.yaml", text)
    with pytest.raises(RuleFileError, match=r"doc\.yaml") as info:
        RuleSet().load(path, watch=False)
    assert fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="cannot read"):
        RuleSet().load(tmp_path / "absent.yaml")


# ---------------------------------------------------------------- hot reload


def test_reload_picks_up_an_edit_and_a_bad_edit_keeps_the_last_good_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "rules.yaml", RULES)
    ruleset = RuleSet()
    ruleset.load(path)
    assert ruleset.reload_if_changed() is False  # nothing changed yet

    _write(
        path,
        RULES
        + """
  - id: acme-gpu
    code: LLM_OVERLOADED
    patterns: ['gpu pool drained']
""",
    )
    assert ruleset.reload_if_changed() is True
    assert ruleset.classify("GPU pool drained, come back later").code == "LLM_OVERLOADED"
    assert ruleset.stats.loads == 2

    caplog.set_level(logging.WARNING, logger="errtrace")
    _write(path, RULES + "  - id: broken\n    code: LLM_OVERLOADED\n    patterns: ['(x+)*']\n")
    assert ruleset.reload_if_changed() is False
    stats = ruleset.stats
    assert stats.reload_failures == 1
    assert stats.last_error is not None and "nested quantifier" in stats.last_error
    assert any("reload failed" in r.getMessage() for r in caplog.records)
    # the last good table is still in force
    assert ruleset.classify("GPU pool drained").code == "LLM_OVERLOADED"
    assert ruleset.classify(GATEWAY_TEXT).code == "ACME_TEAM_BUDGET_EXHAUSTED"
    # the same broken version is not retried (no log flood)
    assert ruleset.reload_if_changed() is False
    assert ruleset.stats.reload_failures == 1

    _write(path, RULES)
    assert ruleset.reload_if_changed() is True
    assert ruleset.stats.last_error is None
    assert ruleset.classify("GPU pool drained").code != "LLM_OVERLOADED"


def test_deleted_file_keeps_rules_and_counts_a_failure(tmp_path: Path) -> None:
    path = _write(tmp_path / "rules.yaml", RULES)
    ruleset = RuleSet()
    ruleset.load(path)
    path.unlink()
    assert ruleset.reload_if_changed() is False
    assert ruleset.stats.reload_failures == 1
    assert ruleset.classify(GATEWAY_TEXT).code == "ACME_TEAM_BUDGET_EXHAUSTED"


def test_classify_checks_the_watched_file_at_most_every_interval(tmp_path: Path) -> None:
    path = _write(tmp_path / "rules.yaml", RULES)
    ruleset = RuleSet(check_interval=3600)
    ruleset.load(path)
    _write(path, RULES.replace("budget exhausted", "wallet empty"))
    assert ruleset.classify("wallet empty for team a").code == "LLM_UNKNOWN"  # not checked yet
    ruleset.check_interval = 0.0
    assert ruleset.classify("wallet empty for team a").code == "ACME_TEAM_BUDGET_EXHAUSTED"


def test_unwatched_load_is_never_reloaded(tmp_path: Path) -> None:
    path = _write(tmp_path / "rules.yaml", RULES)
    ruleset = RuleSet(check_interval=0.0)
    ruleset.load(path, watch=False)
    _write(path, "rules: []")
    assert ruleset.reload_if_changed() is False
    assert ruleset.classify(GATEWAY_TEXT).code == "ACME_TEAM_BUDGET_EXHAUSTED"


@pytest.fixture
def _restore_default_rules() -> Iterator[None]:
    yield
    default_ruleset.unwatch()
    default_ruleset.set_user_rules(None)


@pytest.mark.usefixtures("_restore_default_rules")
def test_module_level_load_rules_acts_on_the_default_table(tmp_path: Path) -> None:
    assert load_rules(_write(tmp_path / "rules.yaml", RULES), watch=False) == 1
    assert classify(GATEWAY_TEXT).code == "ACME_TEAM_BUDGET_EXHAUSTED"
    assert default_ruleset.stats.user_rules == 1


# ---------------------------------------------------------------- regex safety


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a+)+$",
        r"(.*)*x",
        r"(?:\s*\w+){2,}",
        r"(?:\w+\s?)+!",
        r"((ab)*)+",
        r".*.*=",
        r"x.+\s*.*y",
        r"(?P<n>a*)+",
        r"^(a+)+$",
    ],
)
def test_catastrophic_patterns_are_refused(pattern: str) -> None:
    assert find_unsafe_construct(pattern) is not None
    assert find_unsafe_construct(pattern, fullmatch=True) is not None


# A repeated group with an unbounded repetition inside is safe when each iteration
# starts with a character that repetition cannot match: the iterations then split one
# way only. Each of these searches (failing) in quadratic time at worst, not exponential.
SEPARATED_GROUPS = [
    (r"(?:\s+\w+){2,}!", True),
    (r"(?:,\s*\w+)+;", True),
    (r"(x+y+)+z", True),
    (r"(?:\.[a-z0-9]+)*!", True),
    (r"^[A-Z]{2,8}(?:\.[a-z0-9]+)*$", False),  # anchored: one start position
    (r"\Akey(?:-\d+)+=", False),
]


@pytest.mark.parametrize(("pattern", "quadratic"), SEPARATED_GROUPS)
def test_repeated_groups_with_a_separator_are_accepted(pattern: str, quadratic: bool) -> None:
    from errtrace.core._regex_safety import scans_quadratically

    assert find_unsafe_construct(pattern) is None
    assert find_unsafe_construct(pattern, fullmatch=True) is None
    assert scans_quadratically(pattern) is quadratic


@pytest.mark.parametrize("pattern", [r"(?m)^\w+\s*\w+x", r"(?:^|,)\w+\s*\w+x"])
def test_an_anchor_that_is_not_the_text_start_hides_nothing(pattern: str) -> None:
    # ^ with MULTILINE, or as one alternative only, still lets a search start anywhere
    assert find_unsafe_construct(pattern) is not None


def test_only_an_anchor_at_the_text_start_ends_the_rescans() -> None:
    from errtrace.core._regex_safety import scans_quadratically

    assert scans_quadratically(r"\w+\d") is True
    assert scans_quadratically(r"^\w+\d") is False
    assert scans_quadratically(r"\A\w+\d") is False
    assert scans_quadratically(r"(?m)^\w+\d") is True  # every line start is a start


@pytest.mark.parametrize(
    "pattern",
    [
        r"rate limit reached for \S+",
        r"(?:a|b)+",
        r"\d{1,3}(?:\.\d{1,3}){3}",
        r"[(*+]+",
        r"error (?:code|status): \d+",
        r"\(\d+\)+",
        r"a.*b",
        r"(?i)overloaded",
        r"x{2}y*",
    ],
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert find_unsafe_construct(pattern) is None


# patterns that backtrack polynomially or exponentially although they nest nothing:
# each took seconds on a few hundred characters before they were refused
SLOW_PATTERNS = [
    (r"budget\s*\w+\s*\w+\s*\w+\s*exhausted", r"two unbounded repetitions (\w+ and \w+)"),
    (r"\w+\w+\w+z", r"two unbounded repetitions (\w+ and \w+)"),
    (r"(a|aa)+$", "a repeated group can match the same text in more than one way"),
    (r"(?:a\w?)+$", "a repeated group can match the same text in more than one way"),
    (r"(?:foo|fo)+x", "a repeated group can match the same text in more than one way"),
    (r"error.*:.*x", "two unbounded repetitions (.* and .*)"),
    (r"\w+-?\d+x", r"two unbounded repetitions (\w+ and \d+)"),
    (r"[a-z]+[a-z0-9]*!", "two unbounded repetitions ([...]+ and [...]*)"),
    (r"\d+(?:\s*,)?\d+x", r"two unbounded repetitions (\d+ and \d+)"),
    (r"\w+\w?\w?\d", "split the text in more than 2 ways"),
    (r"\w?\w?\w?\w?\w?\w?\w?\w?\w?x", "split the text in more than 256 ways"),
    (r"(?:a?)+b", "a repeated group that can match empty text"),
    (r"x(?=\w+y)", "an unbounded repetition inside a look-around"),
    (r"(\w)\1", "a back-reference"),
]


@pytest.mark.parametrize(("pattern", "reason"), SLOW_PATTERNS)
def test_polynomial_and_exponential_patterns_are_refused(pattern: str, reason: str) -> None:
    problem = find_unsafe_construct(pattern)
    assert problem is not None and reason in problem, problem


@pytest.mark.parametrize(("pattern", "reason"), SLOW_PATTERNS[:3])
def test_slow_user_rule_is_refused_naming_file_rule_and_pattern(
    tmp_path: Path, pattern: str, reason: str
) -> None:
    path = _write(
        tmp_path / "slow.yaml",
        "rules:\n  - id: ok\n    code: LLM_TIMEOUT\n    patterns: ['slow']\n"
        f"  - id: budget\n    code: LLM_QUOTA_EXCEEDED\n    patterns: ['ok', '{pattern}']\n",
    )
    ruleset = RuleSet(builtins=False)
    with pytest.raises(RuleFileError) as info:
        ruleset.load(path, watch=False)
    message = str(info.value)
    assert message.startswith(f"{path}: rules[1] (id 'budget').patterns[1]: unsafe pattern ")
    assert repr(pattern) in message and reason in message
    assert ruleset.stats.user_rules == 0
    with pytest.raises(RuleFileError, match="unsafe pattern"):
        ruleset.set_user_rules(
            {"rules": [{"id": "r", "code": "LLM_QUOTA_EXCEEDED", "patterns": [pattern]}]}, "t"
        )


ORDINARY_USER_PATTERNS = [
    r"quota\s+exceeded",
    r"rate limit(ed)? reached",
    r"insufficient_quota",
    r"(?i)model \S+ not found",
    r"budget \w+ left for team [\w-]+",
    r"team budget (?:is )?exhausted",
    r'"code"\s*:\s*"[^"]*_quota"',
    r"error: .*",
    r"retry in \d+(?:\.\d+)?\s*(?:ms|s)\b",
    r"^upstream \d{3}: .{0,200}overloaded",
    r"(?:gpu|tpu) pool (?:drained|empty)",
    r"\w+\d",
    r"a.*b",
]


@pytest.mark.parametrize("pattern", ORDINARY_USER_PATTERNS)
def test_ordinary_user_patterns_load(pattern: str) -> None:
    ruleset = RuleSet(builtins=False)
    rule = {"id": "r", "code": "LLM_QUOTA_EXCEEDED", "patterns": [pattern]}
    assert ruleset.set_user_rules({"rules": [rule]}, "t") == 1


def test_builtin_patterns_pass_and_search_in_linear_time() -> None:
    from errtrace.core._regex_safety import scans_quadratically
    from errtrace.core.rewrite._rules import BUILTIN_RULES

    patterns = [p for rule in BUILTIN_RULES for p in rule.patterns]
    assert len(BUILTIN_RULES) == 87
    assert [p for p in patterns if find_unsafe_construct(p) or scans_quadratically(p)] == []


@pytest.mark.parametrize(
    ("pattern", "quadratic"),
    [
        (r"\w+\d", True),  # \w+ is rescanned from every start position
        (r"x.*y", True),
        (r"(?:ab)+c", True),
        (r"quota\s+exceeded", False),  # "quota" cannot be matched by \s+
        (r"model \S+ not found", False),
        (r"rate limit reached for \S+", False),  # the last item: found once reached
        (r"\S{1,120} does not exist", False),
    ],
)
def test_quadratic_scans_are_detected(pattern: str, quadratic: bool) -> None:
    from errtrace.core._regex_safety import scans_quadratically

    assert scans_quadratically(pattern) is quadratic


def test_quadratic_user_pattern_examines_only_the_start_of_the_message() -> None:
    from errtrace.core.rewrite._engine import QUADRATIC_REGEX_MAX_INPUT

    ruleset = RuleSet(builtins=False)
    rules = [
        {"id": "scan", "code": "LLM_QUOTA_EXCEEDED", "patterns": [r"budget\w*\d"]},
        {"id": "linear", "code": "LLM_TIMEOUT", "patterns": [r"took \d+ ?ms"]},
    ]
    ruleset.set_user_rules({"rules": rules}, "t")
    pad = "." * QUADRATIC_REGEX_MAX_INPUT
    assert ruleset.classify("budgetxx9 " + pad).rule == "scan"
    assert ruleset.classify(pad + " budgetxx9").rule == "fallback:unknown"
    assert ruleset.classify(pad + " took 31000 ms").rule == "linear"


def test_accepted_patterns_stay_fast_on_hostile_input() -> None:
    """The worst accepted shapes on the longest message: milliseconds, not seconds."""
    import time

    cases = [
        (r"\w+\w?\d", "a" * 5000),  # one unbounded run, rescanned: input capped
        (r"x\w+\d", "x" * 5000),
        (r"\w?\w?\w?\w?\w?\w?\w?\w?x", "a" * 5000),  # 256 ways per position
        (r"budget \w+ left", "left budget " + "a" * 5000),
        (r"quota\s+exceeded", "exceeded quota" + " " * 5000),
    ]
    for pattern, text in cases:
        ruleset = RuleSet(builtins=False)
        rule = {"id": "r", "code": "LLM_QUOTA_EXCEEDED", "patterns": [pattern]}
        ruleset.set_user_rules({"rules": [rule]}, "t")
        start = time.perf_counter()
        assert ruleset.classify(text).rule == "fallback:unknown"
        assert time.perf_counter() - start < 0.5, pattern


@pytest.mark.parametrize(
    "text",
    [
        "a" * 100_000,
        "(" * 50_000,
        "{" * 20_000 + "}" * 20_000,
        "{'a': " * 3_000 + "1" + "}" * 3_000,
        "9" * 100_000,
        " " * 100_000,
        "rate " * 30_000,
        "i " * 50_000 + "cannot",
        "\x00\udcff" * 10_000,
        "Error code: 4" + "0" * 10_000,
    ],
)
def test_pathological_inputs_complete(text: str) -> None:
    result = classify(text)
    assert result.code in registry
    assert len(result.text) <= 4096


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        (r"rate limit reached for \S+", "rate limit reached for "),
        (r"\bthrottl", "throttl"),
        (r"foo|bar", None),
        (r"requests? per (?:second|minute)", "request"),
        (r"x\.y\.z", "x.y.z"),
    ],
)
def test_required_literal_gate(pattern: str, literal: str | None) -> None:
    """The substring tested before a regex runs is one every match contains."""
    from errtrace.core._regex_safety import required_literal

    assert required_literal(pattern) == literal


def test_user_rule_gate_is_case_insensitive(tmp_path: Path) -> None:
    ruleset = RuleSet()
    ruleset.load(
        _write(
            tmp_path / "r.yaml",
            "rules:\n  - id: g\n    code: LLM_TIMEOUT\n    patterns: ['Upstream SLOW: \\d+ms']\n",
        ),
        watch=False,
    )
    assert ruleset.classify("upstream slow: 9000ms").rule == "g"


def test_user_rule_without_a_plain_word_is_always_tried(tmp_path: Path) -> None:
    """A pattern the token index cannot anchor still runs on every message."""
    ruleset = RuleSet()
    ruleset.load(
        _write(
            tmp_path / "r.yaml",
            "rules:\n"
            "  - id: digits\n    code: LLM_TIMEOUT\n    patterns: ['^\\d{3}-\\d{3}$']\n"
            "  - id: inside\n    code: LLM_OVERLOADED\n    patterns: ['zzq']\n",
        ),
        watch=False,
    )
    assert ruleset.classify("123-456").rule == "digits"
    assert ruleset.classify("aZZQa").rule == "inside"  # inside a word, any case


@pytest.mark.usefixtures("_restore_default_rules")
def test_the_rules_file_option_loads_and_watches_the_file_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask import Flask

    import errtrace

    path = _write(tmp_path / "rules.yaml", RULES)
    monkeypatch.setenv("ERRTRACE_RULES_FILE", str(path))
    errtrace.instrument(Flask(__name__), service_name="rules")  # the option, from the env
    assert classify(GATEWAY_TEXT).code == "ACME_TEAM_BUDGET_EXHAUSTED"
    # Watched: a bad edit keeps the rules, and errtrace.stats() counts it.
    before = errtrace.stats().get("rules_reload_failures", 0)
    monkeypatch.setattr(default_ruleset, "check_interval", 0.0)
    _write(path, "rules: [{id: broken}]\n")
    assert classify(GATEWAY_TEXT).code == "ACME_TEAM_BUDGET_EXHAUSTED"
    assert errtrace.stats()["rules_reload_failures"] == before + 1


@pytest.mark.usefixtures("_restore_default_rules")
def test_a_bad_rules_file_fails_the_start_naming_the_file(tmp_path: Path) -> None:
    from flask import Flask

    import errtrace

    path = _write(tmp_path / "rules.yaml", "rules: [{id: broken, code: NOPE_NOT_A_CODE}]\n")
    with pytest.raises(RuleFileError, match=r"rules\.yaml"):
        errtrace.grpc_server_interceptors(rules_file=str(path))
    with pytest.raises(RuleFileError, match=r"absent\.yaml: cannot read"):
        errtrace.instrument(Flask(__name__), rules_file=str(tmp_path / "absent.yaml"))
    with pytest.raises(errtrace.ConfigError, match="rules_file"):
        errtrace.Config(rules_file="  ")


@pytest.mark.usefixtures("_restore_default_rules")
def test_top_level_load_rules_is_the_default_tables(tmp_path: Path) -> None:
    import errtrace

    assert errtrace.load_rules(_write(tmp_path / "rules.yaml", RULES), watch=False) == 1
    assert errtrace.classify(GATEWAY_TEXT).code == "ACME_TEAM_BUDGET_EXHAUSTED"
